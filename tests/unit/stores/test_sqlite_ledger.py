"""What only the SQLite ledger promises: its file (WAL, full sync, never created by a
typo) and group commit. The interface itself is tested in tests/contract/test_ledger.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.billing.ledger import PricedLine, ReserveSpec
from gateway.errors import (
    LedgerError,
)
from gateway.stores.sqlite.ledger import SQLiteLedger

T0 = datetime(2026, 11, 5, 2, 0, tzinfo=UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    store = SQLiteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


def spec(rid: str, account: str, *amounts: int, at: datetime = T0) -> ReserveSpec:
    lines = tuple(PricedLine("dept", f"ds{i}", a) for i, a in enumerate(amounts))
    return ReserveSpec(
        request_id=rid, account_id=account, basis="paid", lines=lines, digest="d", at=at
    )


def test_file_is_wal_with_full_sync(ledger: SQLiteLedger) -> None:
    conn = sqlite3.connect(ledger.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_missing_file_is_not_created_when_asked_not_to(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no such ledger"):
        SQLiteLedger(tmp_path / "typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()


def test_not_a_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(b"this is not a database at all, just some bytes" * 100)
    with pytest.raises(LedgerError):
        SQLiteLedger(path)


def _spec(request_id: str, lines: int, now: datetime) -> ReserveSpec:
    priced = tuple(PricedLine("d", f"s{i}", 1) for i in range(lines))
    return ReserveSpec(request_id, "a", "paid", priced, "digest", now)


def test_a_batch_that_sqlite_aborts_fails_as_a_whole(tmp_path: Path) -> None:
    """Group commit: if SQLite rolls the whole transaction back under an operation (as
    it may on an I/O error or a full disk; forced here), nothing of the batch is
    stored and no later operation slips out on a transaction of its own."""
    now = datetime.now(UTC)
    ledger = SQLiteLedger(tmp_path / "l.sqlite")
    ledger.top_up("a", 10_000, "t1", now, create=True)
    outcomes = []
    with pytest.raises(LedgerError, match="aborted"), ledger.batch():
        for request_id in ("r1", "r2", "r3"):
            try:
                ledger.reserve(_spec(request_id, 1, now))
                outcomes.append("ok")
            except LedgerError:
                outcomes.append("failed")
            if request_id == "r2":
                ledger._conn.execute("ROLLBACK")  # what SQLite does on such an error
    assert outcomes == ["ok", "ok", "failed"]
    assert [ledger.request(r) for r in ("r1", "r2", "r3")] == [None, None, None]
    account = ledger.account("a")
    assert account is not None and (account.balance_fen, account.held_fen) == (10_000, 0)
    assert ledger.check() == []


def test_a_failing_operation_in_a_batch_undoes_only_itself(tmp_path: Path) -> None:
    """The file hits its page cap in the middle of one operation: that one fails and
    leaves nothing (its savepoint is rolled back), the others commit together."""
    now = datetime.now(UTC)
    ledger = SQLiteLedger(tmp_path / "l.sqlite")
    ledger.top_up("a", 10_000, "t1", now, create=True)
    pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
    ledger._conn.execute(f"PRAGMA max_page_count={pages + 3}")
    outcomes = []
    with ledger.batch():
        for request_id, lines in (("r1", 1), ("big", 400), ("r3", 1)):
            try:
                ledger.reserve(_spec(request_id, lines, now))
                outcomes.append("ok")
            except LedgerError:
                outcomes.append("failed")
    ledger._conn.execute("PRAGMA max_page_count=1000000")
    assert outcomes == ["ok", "failed", "ok"]
    assert ledger.request("big") is None and ledger.entries(request_id="big") == []
    account = ledger.account("a")
    assert account is not None and account.held_fen == 2
    assert ledger.check() == []
