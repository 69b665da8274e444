"""Concurrent fan-out: every department answers on its own deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import DepartmentTimeoutError, UpstreamError
from gateway.federation.client import DepartmentClient
from protos.credit.v1 import adapter_pb2, query_pb2


@dataclass(slots=True)
class Outcome:
    """What one department did for one query."""

    status: query_pb2.SectionStatus.ValueType
    response: adapter_pb2.LookupResponse | None
    detail: str
    latency_s: float


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
    failure; each comes back as its section's status.
    """
    if len(requests) == 1:
        # The common one-department query needs no task machinery.
        ((dept, request),) = requests.items()
        client = clients[dept]
        return {dept: await _ask(client, request, min(client.timeout_s, timeout_s))}
    names = list(requests)
    results = await asyncio.gather(
        *(_ask(clients[d], requests[d], min(clients[d].timeout_s, timeout_s)) for d in names)
    )
    return dict(zip(names, results, strict=True))
