"""Concurrent fan-out: every department answers on its own deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import DepartmentTimeoutError, UpstreamError
from gateway.federation.client import DepartmentClient, DepartmentState
from protos.credit.v1 import adapter_pb2, query_pb2


@dataclass(slots=True)
class Outcome:
    """What one department did for one query."""

    status: query_pb2.SectionStatus.ValueType
    response: adapter_pb2.LookupResponse | None
    detail: str
    latency_s: float


def _kept_out(department: str, client: DepartmentClient | None) -> Outcome | None:
    """The outcome of a department that is not asked at all: kept out or retired."""
    if client is None:  # retired by a policy version while this query was under way
        return Outcome(
            query_pb2.SECTION_STATUS_UNAVAILABLE,
            None,
            f"department {department} is no longer in the catalog",
            0.0,
        )
    if client.state is not DepartmentState.SERVING:
        return Outcome(query_pb2.SECTION_STATUS_UNAVAILABLE, None, client.detail, 0.0)
    return None


async def _ask(
    client: DepartmentClient, request: adapter_pb2.LookupRequest, timeout_s: float
) -> Outcome:
    started = time.perf_counter()
    try:
        response = await client.lookup(request, timeout_s)
    except DepartmentTimeoutError as exc:
        return Outcome(
            query_pb2.SECTION_STATUS_TIMED_OUT, None, exc.message, time.perf_counter() - started
        )
    except UpstreamError as exc:  # unreachable, circuit open, or failed with an error
        return Outcome(
            query_pb2.SECTION_STATUS_UNAVAILABLE, None, exc.message, time.perf_counter() - started
        )
    status = (
        query_pb2.SECTION_STATUS_OK
        if response.subject_known
        else query_pb2.SECTION_STATUS_NOT_FOUND
    )
    return Outcome(status, response, "", time.perf_counter() - started)


async def fan_out(
    clients: Mapping[str, DepartmentClient],
    requests: Mapping[str, adapter_pb2.LookupRequest],
    *,
    timeout_s: float,
) -> dict[str, Outcome]:
    """Ask each department in ``requests`` concurrently.

    Each call gets ``min(client.timeout_s, timeout_s)``: its own budget, never
    more than what the caller has left. Never raises for a department's
    failure; each comes back as its section's status. A department that is not
    serving (:attr:`DepartmentClient.state`) or has no client (retired) is not
    called: its section is ``SECTION_STATUS_UNAVAILABLE`` with the reason.
    """
    out: dict[str, Outcome] = {}
    asked: list[tuple[str, DepartmentClient]] = []
    for dept in requests:
        client = clients.get(dept)
        kept_out = _kept_out(dept, client)
        if kept_out is not None:
            out[dept] = kept_out
        else:
            assert client is not None
            asked.append((dept, client))
    if len(asked) == 1:
        # The common one-department query needs no task machinery.
        ((dept, client),) = asked
        out[dept] = await _ask(client, requests[dept], min(client.timeout_s, timeout_s))
    elif asked:
        results = await asyncio.gather(
            *(_ask(c, requests[d], min(c.timeout_s, timeout_s)) for d, c in asked)
        )
        out.update(zip((d for d, _ in asked), results, strict=True))
    return out
