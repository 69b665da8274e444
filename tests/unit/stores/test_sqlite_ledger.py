"""What only the SQLite ledger promises: its file (WAL, full sync, never created by a
typo) and group commit. The interface itself is tested in tests/contract/test_ledger.py."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gateway.billing.ledger import PricedLine, ReserveResult, ReserveSpec, SqlLedger
from gateway.errors import (
    LedgerError,
    QuotaExhaustedError,
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


def _free(rid: str, key: str, limit: int, basis: str = "free_quota") -> ReserveSpec:
    return ReserveSpec(
        request_id=rid,
        account_id=key.split("/")[0],
        basis=basis,  # type: ignore[arg-type]
        lines=(PricedLine("dept", "ds0", 100), PricedLine("dept", "ds1", 40)),
        digest="d",
        at=T0,
        quota_key=key,
        period="2026-11-05",
        quota_limit=limit,
        resets_at="2026-11-06T00:00:00+08:00",
    )


class _Counting(SQLiteLedger):
    """Counts the portable transaction's reservations (the fast path's are not)."""

    portable = 0

    def _reserve(self, db: Any, spec: ReserveSpec, at: Any) -> ReserveResult:
        self.portable += 1
        return super()._reserve(db, spec, at)


def test_the_free_fast_path_books_what_the_portable_transaction_books(tmp_path: Path) -> None:
    """A free unit for a new request id is two statements on SQLite; what it returns and
    stores must be what the portable transaction returns and stores (side by side, on
    two quota keys), and everything off the common path is the portable one's."""
    ledger = _Counting(tmp_path / "ledger.db")
    ledger.top_up("funded", 5_000, "fund", T0, create=True)
    ledger.set_credit_limit("funded", 700)
    for account in ("funded", "unfunded"):
        for basis in ("free_quota", "self_allowance"):
            got = []
            for way in ("fast", "slow"):
                key = f"{account}/{basis}/{way}"
                reserve = ledger.reserve if way == "fast" else partial(SqlLedger.reserve, ledger)
                first = reserve(_free(f"{key}/1", key, 2, basis))
                second = reserve(_free(f"{key}/2", key, 2, basis))
                stored = ledger.request(f"{key}/1")
                assert stored is not None
                outcome: list[object] = [
                    (r.account, r.free_remaining, r.replay, r.record.lines, r.record.basis,
                     r.record.state, r.record.balance_fen, r.record.free_remaining,
                     r.record.attempts, r.record.created_at, r.record.reserved_fen,
                     r.record.delivered)
                    for r in (first, second)
                ]  # fmt: skip
                got.append([*outcome, first.record == stored])
                assert ("request", f"{key}/1") in ledger.unaudited()
            assert got[0] == got[1]
            assert ledger.portable == 2  # the slow way's two: the fast way took none
            ledger.portable = 0
            (first_fast, second_fast, stored_same) = got[0]
            assert first_fast[1:3] == (1, False) and second_fast[1] == 0  # type: ignore[index]
            assert stored_same is True
    # Off the common path: a replay, the quota used up (refused; paid with a fallback).
    funded = ledger.request("funded/free_quota/fast/1")
    assert funded is not None and funded.balance_fen == 5_000
    assert ledger.reserve(_free("funded/free_quota/fast/1", "funded/free_quota/fast", 2)).replay
    with pytest.raises(QuotaExhaustedError):
        ledger.reserve(_free("funded/free_quota/fast/3", "funded/free_quota/fast", 2))
    paid = dataclasses.replace(
        _free("s/3", "funded/self_allowance/fast", 2, "self_allowance"),
        account_id="funded",
        paid_fallback=True,
    )
    fallback = ledger.reserve(paid)
    assert fallback.record.basis == "paid" and fallback.record.reserved_fen == 140
    assert ledger.portable == 3
    assert ledger.check() == []
    ledger.close()


def test_a_free_reservation_refused_in_a_batch_undoes_only_itself(ledger: SQLiteLedger) -> None:
    with ledger.batch():
        assert ledger.reserve(_free("a", "k", 1)).free_remaining == 0
        with pytest.raises(QuotaExhaustedError):
            ledger.reserve(_free("b", "k", 1))
        assert ledger.reserve(_free("c", "k2", 1)).free_remaining == 0
    assert ledger.request("b") is None
    assert {r for _, r in ledger.unaudited()} == {"a", "c"}
    assert ledger.check() == []
