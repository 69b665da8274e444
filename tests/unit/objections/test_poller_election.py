"""The objection poller elected: two desks over one store (one SQLite file, as two workers of
``serve --workers 2``; one PostgreSQL database, as two hosts) and one department served by
the real SDK on loopback, which counts the calls it gets. One desk polls: the department
gets each objection routed once and asked once a round, not once per desk; both desks show
the same metrics; when the polling desk stops, the other takes over at its next round."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.sdk import ObjectionAnswer as DepartmentAnswer
from adapters.sdk import ReceivedObjection, StoredRecord, bound_port, serve
from adapters.testing import InMemoryStore
from gateway.auth.identity import Caller
from gateway.domain.catalog import load_catalog
from gateway.federation.client import DepartmentClient, DepartmentState
from gateway.objections import (
    BEIJING,
    Filing,
    ManualClock,
    ObjectionDesk,
    ObjectionStore,
    SQLiteObjectionStore,
    load_repair_policy,
)
from gateway.runtime.metrics import Metrics

ENTERPRISE = "91350200MA2YJ1XR9G"
PENALTIES = "administrative_penalties"
KIOSK = Caller("kiosk", "subject_self_service", subject_id=ENTERPRISE, subject_type="enterprise")


class CountingDepartment(InMemoryStore):
    """The SDK's in-memory department store, counting the objection calls it serves."""

    received = 0
    asked = 0

    async def receive_objection(self, objection: ReceivedObjection) -> bool:
        """Count, then keep it as :class:`InMemoryStore` does."""
        self.received += 1
        return await super().receive_objection(objection)

    async def objection_answer(self, objection_id: str) -> DepartmentAnswer:
        """Count, then answer as :class:`InMemoryStore` does."""
        self.asked += 1
        return await super().objection_answer(objection_id)


@dataclass
class Pair:
    desks: list[ObjectionDesk]
    metrics: list[Metrics]
    department: CountingDepartment
    client: DepartmentClient
    clock: ManualClock


def _stores(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[ObjectionStore]:
    """Two handles on one store, each as a serving process opens it."""
    if backend == "sqlite":
        return [SQLiteObjectionStore(tmp_path / "objections.sqlite") for _ in range(2)]
    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.objections import PgObjectionStore
    from gateway.stores.postgres.url import PgTarget

    target = PgTarget(request.getfixturevalue("pg_url"))
    return [PgObjectionStore(open_pool(target, max_size=2), target=target) for _ in range(2)]


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    catalog = load_catalog()
    department = CountingDepartment.from_catalog(
        catalog,
        "market",
        {ENTERPRISE: {PENALTIES: [StoredRecord(str(n), {}) for n in (17, 18)]}},
    )
    assert isinstance(department, CountingDepartment)  # from_catalog builds the class called
    server = await serve(department, "127.0.0.1:0", server_credentials=None, allowed_clients=None)
    client = DepartmentClient("market", f"127.0.0.1:{bound_port(server)}", credentials=None)
    client.state = DepartmentState.SERVING
    clock = ManualClock(dt.datetime(2026, 5, 1, 10, 0, tzinfo=BEIJING))
    metrics = [Metrics(), Metrics()]
    desks = [
        ObjectionDesk(
            store,
            catalog=lambda: catalog,
            clients={"market": client},
            pseudonym=lambda t, i: f"pseudonym:{t}:{i}",
            repair=load_repair_policy(),
            clock=clock,
            metrics=m,
        )
        for store, m in zip(_stores(request.param, tmp_path, request), metrics, strict=True)
    ]
    try:
        yield Pair(desks, metrics, department, client, clock)
    finally:
        for desk in desks:
            await desk.stop()
        await client.close()
        await server.stop(0)


def _filing(record_id: str, request_id: str) -> Filing:
    return Filing(
        request_id=request_id,
        subject_type="enterprise",
        subject_id=ENTERPRISE,
        department="market",
        dataset=PENALTIES,
        record_id=record_id,
        grounds="处罚已撤销",
    )


def _gauge(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, {"department": "market"})
    return value or 0.0


async def _round(pair: Pair) -> None:
    for desk in pair.desks:
        await desk.poll_once()


async def test_one_desk_polls_a_round_and_the_other_takes_over_when_it_stops(pair: Pair) -> None:
    dept = pair.department
    # Filed while the department is down: nothing routed at filing, the poller routes.
    pair.client.state = DepartmentState.UNAVAILABLE
    first = await pair.desks[0].file(KIOSK, _filing("17", "6f1d2a52-3a8e-4c1e-9d61-0b8f3c2f4a10"))
    second = await pair.desks[1].file(KIOSK, _filing("18", "0b8f3c2f-3a8e-4c1e-9d61-6f1d2a524a10"))
    assert first.routed_at is None and second.routed_at is None and dept.received == 0
    pair.client.state = DepartmentState.SERVING

    await _round(pair)  # both desks run a round: each objection routed once, by one desk
    assert dept.received == 2 and set(dept.objections) == {
        first.objection_id,
        second.objection_id,
    }
    assert dept.asked == 0
    polling = [d for d in pair.desks if await _polls(d)]
    assert len(polling) == 1

    for n in range(1, 4):  # each round: each open objection asked once, not once per desk
        await _round(pair)
        assert dept.asked == 2 * n
    assert dept.received == 2

    # Overdue: noticed (and recorded) once, shown by both desks' metrics.
    pair.clock.advance(days=21)
    await _round(pair)
    assert dept.asked == 8
    for m in pair.metrics:
        assert _gauge(m, "credit_gateway_objections_overdue") == 2
        assert _gauge(m, "credit_gateway_objections_open") == 2

    # The polling desk stops (its process ends): the other polls at its next round.
    poller = polling[0]
    other = next(d for d in pair.desks if d is not poller)
    other_metrics = pair.metrics[pair.desks.index(other)]
    await poller.stop()
    pair.desks.remove(poller)
    dept.answer(first.objection_id, "confirmed")
    await other.poll_once()
    assert dept.asked == 10
    row = other.store.get(first.objection_id)
    assert row is not None and row.outcome == "confirmed"
    assert _gauge(other_metrics, "credit_gateway_objections_open") == 1


async def test_filing_routes_at_once_on_the_desk_that_takes_it(pair: Pair) -> None:
    dept = pair.department
    polling = [await _polls(d) for d in pair.desks]
    assert polling.count(True) == 1
    non_poller = pair.desks[polling.index(False)]
    row = await non_poller.file(KIOSK, _filing("17", "6f1d2a52-3a8e-4c1e-9d61-0b8f3c2f4a10"))
    assert row.routed_at is not None and dept.received == 1
    await _round(pair)
    assert dept.received == 1 and dept.asked == 1


async def _polls(desk: ObjectionDesk) -> bool:
    return await asyncio.to_thread(desk.store.polls)
