"""The re-check schedule on a fake clock, and the monitor's states with a fake department."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.catalog import load_catalog
from gateway.errors import DepartmentUnavailableError
from gateway.federation import (
    Backoff,
    CircuitBreaker,
    DepartmentClient,
    DepartmentMonitor,
    DepartmentState,
    RecheckSchedule,
)
from protos.credit.v1 import adapter_pb2
from tests.helpers import Clock


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    b = Backoff()
    assert [b.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay(10_000) == 30  # a week-long outage does not overflow
    assert b.delay(0) == 0


@given(st.integers(min_value=1, max_value=10_000))
def test_backoff_is_monotonic_and_capped(n: int) -> None:
    b = Backoff()
    assert 1 <= b.delay(n) <= b.delay(n + 1) <= 30


def test_schedule_on_a_fake_clock() -> None:
    clock = Clock(1000.0)
    s = RecheckSchedule(clock=clock)
    assert s.wait_s() is None and s.due() == []
    s.add("tax")
    s.add("court")
    assert s.due() == ["court", "tax"] and s.wait_s() == 0
    assert s.due(busy={"tax"}) == ["court"]
    assert s.failed("tax") == 1 and s.failed("court") == 1
    assert s.due() == [] and s.wait_s() == 1
    clock.advance(seconds=1)
    assert s.due() == ["court", "tax"]
    assert s.failed("tax") == 2
    s.succeeded("court")  # it serves: no more checks
    assert "court" not in s and s.due() == [] and s.wait_s() == 2
    for want in (4, 8, 16, 30, 30):
        clock.advance(seconds=s.wait_s() or 0)
        assert s.due() == ["tax"]
        assert s.failed("tax") == want
    assert s.failures("tax") == 7
    s.add("tax")  # a catalog change: due now, the count kept
    assert s.due() == ["tax"] and s.failures("tax") == 7
    s.remove("tax")
    assert s.failed("tax") == 0 and "tax" not in s and s.wait_s() is None


def test_a_department_serving_again_restarts_its_backoff_at_one_second() -> None:
    clock = Clock(0.0)
    s = RecheckSchedule(clock=clock)
    s.add("tax")
    for _ in range(6):
        s.failed("tax")
    s.succeeded("tax")
    s.add("tax")
    assert s.failed("tax") == 1


class FakeDepartment(DepartmentClient):
    """A real client whose ``Describe`` answers from a script: an outage, another
    department's name, a disagreeing dataset list, or agreement."""

    def __init__(self, department: str) -> None:
        super().__init__(department, "127.0.0.1:9", credentials=None)
        self.answer: adapter_pb2.DescribeResponse | Exception = DepartmentUnavailableError("down")
        self.calls = 0

    async def describe(self, timeout_s: float | None = None) -> adapter_pb2.DescribeResponse:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def describe(dept: str, *, drop: str | None = None) -> adapter_pb2.DescribeResponse:
    out = adapter_pb2.DescribeResponse(department=dept)
    for ds in load_catalog().departments[dept].datasets.values():
        if ds.name == drop:
            continue
        d = out.datasets.add(name=ds.name)
        for f in ds.fields.values():
            d.fields.add(name=f.name, type=f.type)  # type: ignore[arg-type]
    return out


async def test_monitor_states_changes_and_background_rechecks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    catalog = load_catalog()
    tax, court = FakeDepartment("tax"), FakeDepartment("court")
    tax.answer = describe("tax")
    clients = {"tax": tax, "court": court}
    changes: list[tuple[str, DepartmentState]] = []

    async def changed(dept: str, state: DepartmentState) -> None:
        changes.append((dept, state))

    fast = RecheckSchedule(backoff=Backoff(initial_s=0.01, max_s=0.02))
    monitor = DepartmentMonitor(
        clients,
        catalog=lambda: catalog,
        describe_timeout_s=1,
        on_change=changed,
        schedule=fast,
    )
    with caplog.at_level(logging.INFO, logger="gateway.federation.departments"):
        await monitor.check_all()
    assert changes == [("tax", DepartmentState.SERVING), ("court", DepartmentState.UNAVAILABLE)]
    assert court.detail == (
        "department court is unavailable: not reached; checked again in the background"
    )
    assert "court" in fast and "tax" not in fast
    monitor.start()
    try:
        async with asyncio.timeout(5):
            while court.calls < 4:  # checked again and again, one change reported only
                await asyncio.sleep(0.005)
        assert changes[2:] == []
        court.answer = describe("court", drop="dishonest_debtors")
        async with asyncio.timeout(5):
            while court.state is not DepartmentState.REFUSED:
                await asyncio.sleep(0.005)
        assert "departments.court.datasets.dishonest_debtors" in court.detail
        court.answer = describe("tax")  # answers as another department
        async with asyncio.timeout(5):
            while "another department" not in court.detail:
                await asyncio.sleep(0.005)
        court.answer = describe("court")
        async with asyncio.timeout(5):
            while court.state is not DepartmentState.SERVING:
                await asyncio.sleep(0.005)
        assert "court" not in fast
        calls = court.calls
        await asyncio.sleep(0.1)
        assert court.calls == calls  # a serving department is not checked again
        assert changes[2:] == [
            ("court", DepartmentState.REFUSED),
            ("court", DepartmentState.SERVING),
        ]
        # Retired while down: no more checks, no more changes.
        court.answer = DepartmentUnavailableError("down")
        monitor.add("court")
        await monitor.remove("court")
        calls = court.calls
        await asyncio.sleep(0.1)
        assert court.calls == calls
    finally:
        await monitor.close()
        await tax.close()
        await court.close()
    for record in caplog.records:  # a department id and a reason, never a subject
        assert record.name == "gateway.federation.departments"
        assert getattr(record, "department", None) in ("tax", "court")


class DownStub:
    """Lookup on a department that went away: UNAVAILABLE every time."""

    async def Lookup(self, request: object, timeout: float) -> object:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone"
        )


async def test_a_serving_department_whose_circuit_opens_is_checked_again_before_use() -> None:
    """It may come back as another version of the program: Describe is compared first."""
    catalog = load_catalog()
    tax = FakeDepartment("tax")
    tax.answer = describe("tax")
    tax.breaker = CircuitBreaker(failure_threshold=2, reset_after_s=60)
    changes: list[tuple[str, DepartmentState]] = []

    async def changed(dept: str, state: DepartmentState) -> None:
        changes.append((dept, state))

    monitor = DepartmentMonitor(
        {"tax": tax},
        catalog=lambda: catalog,
        describe_timeout_s=1,
        on_change=changed,
        schedule=RecheckSchedule(backoff=Backoff(initial_s=0.01, max_s=0.02)),
    )
    await monitor.check_all()
    monitor.start()
    try:
        assert tax.state is DepartmentState.SERVING
        tax.answer = DepartmentUnavailableError("down")
        tax._stub = DownStub()  # type: ignore[assignment]
        request = adapter_pb2.LookupRequest(request_id="r")
        for _ in range(2):
            with pytest.raises(DepartmentUnavailableError):
                await tax.lookup(request, 1.0)
        assert tax.state is DepartmentState.UNAVAILABLE  # at once: the next query skips it
        assert "circuit open" in tax.detail
        calls = tax.calls
        async with asyncio.timeout(5):
            while tax.calls < calls + 2:  # Describe checked again in the background
                await asyncio.sleep(0.005)
        tax.answer = describe("tax", drop="arrears")  # back, but another program
        async with asyncio.timeout(5):
            while tax.state is not DepartmentState.REFUSED:
                await asyncio.sleep(0.005)
        assert changes == [
            ("tax", DepartmentState.SERVING),
            ("tax", DepartmentState.UNAVAILABLE),
            ("tax", DepartmentState.REFUSED),
        ]
    finally:
        await monitor.close()
        await tax.close()
