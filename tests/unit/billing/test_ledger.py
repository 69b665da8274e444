"""The SQLite ledger: top-ups, statements, append-only entries, recomputable balances."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.billing.ledger import PricedLine, ReserveSpec, SQLiteLedger
from gateway.errors import (
    GatewayError,
    InsufficientBalanceError,
    InvalidArgumentError,
    LedgerError,
    NotFoundError,
)

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


def test_top_up_is_idempotent_by_reference(ledger: SQLiteLedger) -> None:
    first = ledger.top_up("bank", 5_000, "TX-1", T0, actor="finance", create=True)
    again = ledger.top_up("bank", 5_000, "TX-1", T0 + timedelta(hours=1), actor="finance")
    assert not first.replayed and again.replayed
    assert again.entry == first.entry
    assert again.account.balance_fen == 5_000
    with pytest.raises(InvalidArgumentError) as exc:
        ledger.top_up("bank", 6_000, "TX-1", T0)
    assert exc.value.reason == "REFERENCE_REUSED"


@pytest.mark.parametrize("amount", [0, -5, 2.5, True, 10**13])
def test_top_up_amount_must_be_positive_integer_fen(ledger: SQLiteLedger, amount: object) -> None:
    with pytest.raises(InvalidArgumentError, match="amount_fen"):
        ledger.top_up("bank", amount, "TX-1", T0, create=True)  # type: ignore[arg-type]


def test_top_up_of_unknown_account_needs_create(ledger: SQLiteLedger) -> None:
    with pytest.raises(NotFoundError):
        ledger.top_up("bank", 5_000, "TX-1", T0)
    assert ledger.account("bank") is None


def test_entries_are_append_only(ledger: SQLiteLedger) -> None:
    ledger.top_up("bank", 5_000, "TX-1", T0, create=True)
    conn = sqlite3.connect(ledger.path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE entries SET amount_fen = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM entries")
    finally:
        conn.close()


def test_check_finds_a_tampered_balance(ledger: SQLiteLedger) -> None:
    ledger.top_up("bank", 5_000, "TX-1", T0, create=True)
    ledger.reserve(spec("r1", "bank", 300))
    assert ledger.check() == []
    conn = sqlite3.connect(ledger.path)
    try:
        conn.execute("UPDATE accounts SET balance_fen = 9999999 WHERE account_id = 'bank'")
        conn.commit()
    finally:
        conn.close()
    problems = ledger.check()
    assert problems and problems[0].account_id == "bank"
    assert ledger.recompute_balances()["bank"].balance_fen == 5_000


def test_statement_period_opening_closing_and_pages(ledger: SQLiteLedger) -> None:
    ledger.top_up("bank", 1_000, "TX-1", T0 - timedelta(days=2), create=True)
    for i in range(5):
        ledger.top_up("bank", 100, f"TX-2-{i}", T0 + timedelta(minutes=i))
    ledger.top_up("bank", 7, "TX-3", T0 + timedelta(days=3))
    start, end = T0 - timedelta(hours=1), T0 + timedelta(days=1)

    page = ledger.statement("bank", start, end, limit=3)
    assert page.opening_balance_fen == 1_000
    assert page.closing_balance_fen == 1_500
    assert [e.reference for e in page.entries] == ["TX-2-0", "TX-2-1", "TX-2-2"]
    assert page.next_after_seq == page.entries[-1].seq
    rest = ledger.statement("bank", start, end, after_seq=page.next_after_seq, limit=3)
    assert [e.reference for e in rest.entries] == ["TX-2-3", "TX-2-4"]
    assert rest.next_after_seq == 0
    with pytest.raises(NotFoundError):
        ledger.statement("nobody", start, end)


def test_adjustment_is_booked_once(ledger: SQLiteLedger) -> None:
    ledger.top_up("bank", 1_000, "TX-1", T0, create=True)
    entry = ledger.adjust("bank", -250, "ADJ-1", T0, actor="finance", note="duplicate transfer")
    assert entry.balance_fen == 750 and entry.balance_change_fen == -250
    with pytest.raises(InvalidArgumentError):
        ledger.adjust("bank", -250, "ADJ-1", T0)
    assert ledger.check() == []


def test_refused_reservation_leaves_no_trace(ledger: SQLiteLedger) -> None:
    ledger.top_up("bank", 100, "TX-1", T0, create=True)
    with pytest.raises(InsufficientBalanceError):
        ledger.reserve(spec("r1", "bank", 60, 60))
    assert ledger.request("r1") is None
    assert [e.kind for e in ledger.entries("bank")] == ["top_up"]


def test_naive_times_are_refused(ledger: SQLiteLedger) -> None:
    with pytest.raises(LedgerError, match="timezone"):
        ledger.top_up("bank", 1, "TX-1", datetime(2026, 1, 1), create=True)


# --- property: balances always equal the sum of their entries ------------------------------

ACCOUNTS = st.sampled_from(["a", "b", "c"])
REQUESTS = st.sampled_from([f"r{i}" for i in range(8)])
AMOUNTS = st.integers(min_value=1, max_value=500)

OPS = st.one_of(
    st.tuples(st.just("top_up"), ACCOUNTS, AMOUNTS, st.integers(0, 5)),
    st.tuples(st.just("reserve"), REQUESTS, ACCOUNTS, st.lists(AMOUNTS, min_size=1, max_size=3)),
    st.tuples(st.just("settle"), REQUESTS, st.sets(st.integers(0, 2))),
    st.tuples(st.just("release"), REQUESTS, st.booleans()),
    st.tuples(st.just("adjust"), ACCOUNTS, st.integers(-300, 300).filter(bool)),
    st.tuples(st.just("credit"), ACCOUNTS, st.integers(0, 400)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(OPS, max_size=25))
def test_balances_recomputed_from_entries_equal_stored(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SQLiteLedger(Path(tmp) / "ledger.db")
        try:
            for i, op in enumerate(ops):
                at = T0 + timedelta(seconds=i)
                # Refused operations must leave everything consistent too.
                with contextlib.suppress(GatewayError):
                    _apply(ledger, op, at, i)
            assert ledger.check() == []
            recomputed = ledger.recompute_balances()
            for acct in ledger.accounts():
                assert recomputed[acct.account_id].balance_fen == acct.balance_fen
                assert recomputed[acct.account_id].held_fen == acct.held_fen
                assert acct.held_fen >= 0
        finally:
            ledger.close()


def _apply(ledger: SQLiteLedger, op: tuple[object, ...], at: datetime, i: int) -> None:
    kind = op[0]
    if kind == "top_up":
        _, account, amount, ref = op
        # A repeated reference is a retry: booked once.
        ledger.top_up(str(account), int(amount), f"{account}-{amount}-{ref}", at, create=True)  # type: ignore[call-overload]
    elif kind == "reserve":
        _, rid, account, amounts = op
        before = ledger.account(str(account))
        prices = [int(a) for a in amounts]  # type: ignore[attr-defined]
        result = ledger.reserve(spec(str(rid), str(account), *prices, at=at))
        if not result.replay:
            after = ledger.account(str(account))
            # A reservation never takes more than was available.
            assert before is not None and after is not None
            assert after.available_fen >= 0
            assert after.available_fen == before.available_fen - result.record.reserved_fen
    elif kind == "settle":
        _, rid, picks = op
        delivered = frozenset(("dept", f"ds{p}") for p in picks)  # type: ignore[attr-defined]
        ledger.settle(str(rid), delivered, at)
    elif kind == "release":
        _, rid, refund = op
        ledger.release(str(rid), at, refund=bool(refund))
    elif kind == "adjust":
        _, account, amount = op
        if ledger.account(str(account)) is not None:
            ledger.adjust(str(account), int(amount), f"adj-{i}", at)  # type: ignore[call-overload]
    elif kind == "credit":
        _, account, limit = op
        if ledger.account(str(account)) is not None:
            ledger.set_credit_limit(str(account), int(limit))  # type: ignore[call-overload]


def test_a_batch_that_sqlite_aborts_fails_as_a_whole(tmp_path: Path) -> None:
    """Group commit: if one operation makes SQLite roll the transaction back
    (here: the file hits its page cap), nothing of the batch is stored and no
    later operation slips out on a transaction of its own."""
    now = datetime.now(UTC)
    ledger = SQLiteLedger(tmp_path / "l.sqlite")
    ledger.top_up("a", 10_000, "t1", now, create=True)

    def spec(request_id: str, lines: int) -> ReserveSpec:
        priced = tuple(PricedLine("d", f"s{i}", 1) for i in range(lines))
        return ReserveSpec(request_id, "a", "paid", priced, "digest", now)

    pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
    ledger._conn.execute(f"PRAGMA max_page_count={pages + 3}")
    outcomes = []
    with pytest.raises(LedgerError, match="aborted"), ledger.batch():
        for request_id, lines in (("r1", 1), ("big", 400), ("r3", 1)):
            try:
                ledger.reserve(spec(request_id, lines))
                outcomes.append("ok")
            except LedgerError:
                outcomes.append("failed")
    assert outcomes == ["ok", "failed", "failed"]
    ledger._conn.execute("PRAGMA max_page_count=1000000")
    assert [ledger.request(r) for r in ("r1", "big", "r3")] == [None, None, None]
    account = ledger.account("a")
    assert account is not None and (account.balance_fen, account.held_fen) == (10_000, 0)
    assert ledger.check() == []
