"""Fixtures for the billing tests: a small price list, a settable clock, meters on real files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.billing import Meter, PriceList, parse_prices
from gateway.billing.ledger import AsyncLedger
from tests.helpers import Clock

PRICES_DOC: dict[str, Any] = {
    "version": "test",
    "timezone": "Asia/Shanghai",
    "free": {"daily_quota": 3, "agencies": {"procurement": 2, "nogrants": 0}},
    "self_query": {"free_per_year": 2},
    "prices": {
        "market": {"registration": 100, "administrative_penalties": 200},
        "tax": {"arrears": 300, "credit_rating": 250},
        "court": {"dishonest_debtors": 200},
        "pbccrc": {"personal_loans": 1500},
    },
}

#: A stand-in for the HMAC pseudonym the query service computes (64 hex characters).
SUBJECT_KEY = "5f" * 32
OTHER_SUBJECT_KEY = "a7" * 32
TODAY = date(2026, 11, 5)


class Events:
    """Collects billing events; set ``fail`` to make the hook raise."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    async def __call__(self, event: dict[str, Any]) -> None:
        if self.fail is not None:
            raise self.fail
        self.items.append(event)

    def kinds(self, request_id: str | None = None) -> list[str]:
        return [e["event"] for e in self.items if request_id in (None, e["request_id"])]


@pytest.fixture
def prices() -> PriceList:
    return parse_prices(PRICES_DOC)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 5, 2, 0, tzinfo=UTC))


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


OpenMeter = Callable[..., Awaitable[Meter]]


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_backend(request: pytest.FixtureRequest) -> str:
    """The meter's ledger: the SQLite file, or a PostgreSQL database (the meter's rules,
    recovery included, must hold on both)."""
    return str(request.param)


@pytest_asyncio.fixture
async def open_meter(
    ledger_path: Path,
    prices: PriceList,
    clock: Clock,
    events: Events,
    ledger_backend: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[OpenMeter]:
    """Open meters on the test's ledger (each call: a process starting on it); all are
    closed at the end."""
    opened: list[Meter] = []
    pg_url = request.getfixturevalue("pg_url") if ledger_backend == "postgres" else ""

    async def make(*, recover: bool = True, **kw: Any) -> Meter:
        kw.setdefault("on_event", events)
        kw.setdefault("clock", clock)
        source: Any = str(ledger_path)
        if pg_url:
            from gateway.stores.postgres.connect import PgTarget, open_pool
            from gateway.stores.postgres.ledger import PostgresLedger

            source = PostgresLedger(open_pool(PgTarget(pg_url), max_size=2))
        meter = await Meter.open(source, prices, recover=recover, **kw)
        opened.append(meter)
        return meter

    yield make
    for meter in opened:
        await meter.close()  # idempotent: some tests close (or "crash") earlier


@pytest_asyncio.fixture
async def meter(open_meter: OpenMeter) -> Meter:
    return await open_meter()


async def fund(meter: Meter, account: str, fen: int, *, ref: str | None = None) -> None:
    """Open ``account`` and top it up with ``fen``."""
    ledger: AsyncLedger = meter.ledger
    await ledger.run(
        ledger.store.top_up,
        account,
        fen,
        ref or f"fund-{account}-{fen}",
        datetime(2026, 11, 1, tzinfo=UTC),
        create=True,
    )
