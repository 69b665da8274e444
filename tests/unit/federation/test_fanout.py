"""Fan-out on its own: a fake department stub behind the real DepartmentClient, so deadlines,
a slow department and the circuit breaker are checked without a network."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from gateway.federation import (
    BreakerState,
    CircuitBreaker,
    DepartmentClient,
    DepartmentState,
    fan_out,
)
from protos.credit.v1 import adapter_pb2, query_pb2


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeStub:
    """Answers Lookup after ``delay_s`` (honouring the call's deadline) or fails with ``code``."""

    def __init__(
        self, *, delay_s: float = 0.0, known: bool = True, code: grpc.StatusCode | None = None
    ) -> None:
        self.delay_s = delay_s
        self.known = known
        self.code = code
        self.timeouts: list[float] = []

    async def Lookup(
        self, request: adapter_pb2.LookupRequest, timeout: float
    ) -> adapter_pb2.LookupResponse:
        self.timeouts.append(timeout)
        if self.delay_s > timeout:
            await asyncio.sleep(timeout)
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        await asyncio.sleep(self.delay_s)
        if self.code is not None:
            raise _rpc_error(self.code, "/srv/department/secret.db is locked")
        return adapter_pb2.LookupResponse(subject_known=self.known)


def client(
    name: str, stub: FakeStub, *, timeout_s: float = 2.0, breaker: CircuitBreaker | None = None
) -> DepartmentClient:
    c = DepartmentClient(
        name, "127.0.0.1:9", credentials=None, timeout_s=timeout_s, breaker=breaker
    )
    c._stub = stub  # type: ignore[assignment]
    c.state = DepartmentState.SERVING  # as the monitor sets it once Describe agrees
    return c


def requests(*names: str) -> dict[str, adapter_pb2.LookupRequest]:
    return {n: adapter_pb2.LookupRequest(request_id="r") for n in names}


async def test_each_department_answers_with_its_own_status() -> None:
    clients = {"tax": client("tax", FakeStub()), "court": client("court", FakeStub(known=False))}
    out = await fan_out(clients, requests("tax", "court"), timeout_s=1.0)
    assert out["tax"].status == query_pb2.SECTION_STATUS_OK
    assert out["tax"].response is not None and out["tax"].response.subject_known
    assert out["court"].status == query_pb2.SECTION_STATUS_NOT_FOUND


async def test_each_call_gets_the_smaller_of_its_budget_and_what_is_left() -> None:
    generous, tight = FakeStub(), FakeStub()
    clients = {
        "tax": client("tax", generous, timeout_s=5.0),
        "court": client("court", tight, timeout_s=0.3),
    }
    await fan_out(clients, requests("tax", "court"), timeout_s=1.0)
    assert generous.timeouts == [1.0]
    assert tight.timeouts == [0.3]


async def test_only_the_departments_asked_are_called() -> None:
    asked, idle = FakeStub(), FakeStub()
    clients = {"tax": client("tax", asked), "court": client("court", idle)}
    out = await fan_out(clients, requests("tax"), timeout_s=1.0)
    assert list(out) == ["tax"] and idle.timeouts == []


async def test_a_slow_department_times_out_without_holding_up_the_others() -> None:
    clients = {
        "slow": client("slow", FakeStub(delay_s=5.0), timeout_s=0.2),
        "fast": client("fast", FakeStub(delay_s=0.01)),
    }
    started = time.perf_counter()
    out = await fan_out(clients, requests("slow", "fast"), timeout_s=1.0)
    elapsed = time.perf_counter() - started
    assert out["slow"].status == query_pb2.SECTION_STATUS_TIMED_OUT
    assert out["fast"].status == query_pb2.SECTION_STATUS_OK
    assert out["fast"].latency_s < 0.15  # answered before the slow one gave up
    assert elapsed < 1.0  # the whole fan-out ends with the slowest deadline, not later


async def test_an_outage_is_unavailable_and_never_repeats_the_departments_words() -> None:
    clients = {"tax": client("tax", FakeStub(code=grpc.StatusCode.UNAVAILABLE))}
    out = await fan_out(clients, requests("tax"), timeout_s=1.0)
    assert out["tax"].status == query_pb2.SECTION_STATUS_UNAVAILABLE
    assert "secret.db" not in out["tax"].detail


async def test_a_refusal_is_unavailable_but_does_not_trip_the_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=60)
    stub = FakeStub(code=grpc.StatusCode.INVALID_ARGUMENT)
    clients = {"tax": client("tax", stub, breaker=breaker)}
    out = await fan_out(clients, requests("tax"), timeout_s=1.0)
    assert out["tax"].status == query_pb2.SECTION_STATUS_UNAVAILABLE
    assert "secret.db" not in out["tax"].detail
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_an_open_breaker_answers_at_once_without_calling(code: grpc.StatusCode) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=60)
    stub = FakeStub(code=code) if code is grpc.StatusCode.UNAVAILABLE else FakeStub(delay_s=5.0)
    clients = {
        "tax": client("tax", stub, timeout_s=0.05, breaker=breaker),
        "court": client("court", FakeStub()),
    }
    for _ in range(2):
        await fan_out(clients, requests("tax"), timeout_s=1.0)
    assert breaker.state is BreakerState.OPEN
    calls = len(stub.timeouts)
    out = await fan_out(clients, requests("tax", "court"), timeout_s=1.0)
    # At once: the department was not called, so nothing was waited for (no clock here:
    # a loaded machine makes any bound on time a flaky one).
    assert len(stub.timeouts) == calls
    assert out["tax"].status == query_pb2.SECTION_STATUS_UNAVAILABLE
    assert "circuit open" in out["tax"].detail
    assert out["court"].status == query_pb2.SECTION_STATUS_OK


async def test_a_department_not_serving_is_not_called_and_says_why() -> None:
    down = FakeStub()
    kept = client("court", down)
    kept.state = DepartmentState.UNAVAILABLE
    kept.detail = "department court is unavailable: not reached"
    clients = {"tax": client("tax", FakeStub()), "court": kept}
    out = await fan_out(clients, requests("tax", "court"), timeout_s=1.0)
    assert out["tax"].status == query_pb2.SECTION_STATUS_OK
    assert out["court"].status == query_pb2.SECTION_STATUS_UNAVAILABLE
    assert out["court"].detail == "department court is unavailable: not reached"
    assert down.timeouts == []  # never called


async def test_a_department_retired_mid_query_is_unavailable_not_a_crash() -> None:
    out = await fan_out({}, requests("court"), timeout_s=1.0)
    assert out["court"].status == query_pb2.SECTION_STATUS_UNAVAILABLE
    assert "no longer in the catalog" in out["court"].detail
