"""The contract suite's fixtures: every store interface, once per backend.

Each fixture is parametrised over ``sqlite`` and ``postgres``, so one test function runs
against both (the test id says which: ``test_x[sqlite]``, ``test_x[postgres]``). On a
machine without PostgreSQL the ``postgres`` half skips with "NOT RUN" (``.ci/run``
installs it and makes a missing cluster a failure). To add a store's contract (audit,
policy, controls), copy the pattern:

    @pytest.fixture(params=BACKENDS)
    def my_store(request, tmp_path):
        if request.param == "sqlite":
            store = MySQLiteStore(tmp_path / "my.db")
        else:
            store = MyPostgresStore(pg_pool(request))   # fresh migrated database
        yield store
        store.close()

:func:`pg_pool` gives a pool on a fresh, migrated database (closed after the test);
:func:`second_pool` another one on the same database (a second "process").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.billing.ledger import LedgerStore
from gateway.pipeline.limits import SharedBudget
from gateway.stores.replay import JtiStore

BACKENDS = ["sqlite", "postgres"]

#: Runs one raw SQL statement against the store's database, bypassing the store (for
#: tests that tamper with rows the way a careless operator would).
RawSql = Callable[[str], None]


def pg_pool(request: pytest.FixtureRequest, *, max_size: int = 4) -> Any:
    """A pool on a fresh migrated database for this test (closed at its end)."""
    from gateway.stores.postgres.connect import PgTarget, open_pool

    url: str = request.getfixturevalue("pg_url")
    pool = open_pool(PgTarget(url), min_size=1, max_size=max_size)
    request.addfinalizer(pool.close)
    return pool


def second_pool(request: pytest.FixtureRequest, *, max_size: int = 4) -> Any:
    """Another pool on the test's database: what a second gateway process would hold."""
    from gateway.stores.postgres.connect import PgTarget, open_pool

    url: str = request.getfixturevalue("pg_url")
    pool = open_pool(PgTarget(url), min_size=1, max_size=max_size)
    request.addfinalizer(pool.close)
    return pool


# --- ledger ----------------------------------------------------------------------------


def _open_ledger(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> LedgerStore:
    if backend == "sqlite":
        from gateway.stores.sqlite.ledger import SQLiteLedger

        return SQLiteLedger(tmp_path / "ledger.db")
    from gateway.stores.postgres.ledger import PostgresLedger

    return PostgresLedger(pg_pool(request), owns_pool=False)


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    """An empty ledger store on each backend."""
    store = _open_ledger(request, tmp_path, request.param)
    yield store
    store.close()


@pytest.fixture
def pg_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStore]:
    """An empty ledger store on PostgreSQL alone: for what only that backend has (its
    one-statement fast path)."""
    store = _open_ledger(request, tmp_path, "postgres")
    yield store
    store.close()


@pytest.fixture
def other_ledger(
    request: pytest.FixtureRequest, ledger: LedgerStore, tmp_path: Path
) -> Iterator[LedgerStore]:
    """A second, independent store on the same database as ``ledger`` (its own
    connection or pool): a second process."""
    from gateway.stores.sqlite.ledger import SQLiteLedger

    if isinstance(ledger, SQLiteLedger):
        store: LedgerStore = SQLiteLedger(ledger.path)
    else:
        from gateway.stores.postgres.ledger import PostgresLedger

        store = PostgresLedger(second_pool(request), owns_pool=False)
    yield store
    store.close()


@pytest.fixture
def ledger_sql(request: pytest.FixtureRequest, ledger: LedgerStore) -> RawSql:
    """Raw SQL on ``ledger``'s database (PostgreSQL: in the ``ledger`` schema)."""
    from gateway.stores.sqlite.ledger import SQLiteLedger

    if isinstance(ledger, SQLiteLedger):
        path = ledger.path

        def run_sqlite(sql: str) -> None:
            conn = sqlite3.connect(path)
            try:
                conn.execute(sql)
                conn.commit()
            finally:
                conn.close()

        return run_sqlite
    import psycopg

    url: str = request.getfixturevalue("pg_url")

    def run_pg(sql: str) -> None:
        with psycopg.connect(url, autocommit=True, options="-c search_path=ledger") as conn:
            conn.execute(sql.encode())

    return run_pg


# --- replay ----------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def jti_store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., JtiStore]]:
    """Opens stores on one shared database (call it twice: two processes);
    keyword ``max_entries``."""
    opened: list[JtiStore] = []

    def open_store(*, max_entries: int = 1_000_000) -> JtiStore:
        store: JtiStore
        if request.param == "sqlite":
            from gateway.stores.sqlite.replay import SQLiteJtiStore

            store = SQLiteJtiStore(tmp_path / "replay.db", max_entries=max_entries)
        else:
            from gateway.stores.postgres.replay import PostgresJtiStore

            pool = pg_pool(request) if not opened else second_pool(request)
            store = PostgresJtiStore(pool, max_entries=max_entries, owns_pool=False)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


# --- rate limits -----------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def budget_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], SharedBudget]]:
    """Opens shared rate-limit budgets on one database (call it twice: two processes)."""
    opened: list[SharedBudget] = []

    def open_budget() -> SharedBudget:
        budget: SharedBudget
        if request.param == "sqlite":
            from gateway.stores.sqlite.limits import SQLiteRateBudget

            budget = SQLiteRateBudget(tmp_path / "limits.db")
        else:
            from gateway.stores.postgres.limits import PostgresRateBudget

            pool = pg_pool(request) if not opened else second_pool(request)
            # Owns it: close() cuts the budget off, as a lost database would.
            budget = PostgresRateBudget(pool)
        opened.append(budget)
        return budget

    yield open_budget
    for budget in opened:
        budget.close()
