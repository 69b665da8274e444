"""The ledger store's contract (:class:`gateway.billing.ledger.LedgerStore`), run against
SQLite and PostgreSQL alike: top-ups, statements, append-only entries, recomputable
balances, the available amount never below zero, and "charged once" between two
processes."""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.billing.ledger import LedgerStore, PricedLine, RecordedSettlement, ReserveSpec
from gateway.errors import (
    GatewayError,
    InsufficientBalanceError,
    InvalidArgumentError,
    LedgerError,
    NotFoundError,
    QuotaExhaustedError,
)
from tests.contract.conftest import RawSql

T0 = datetime(2026, 11, 5, 2, 0, tzinfo=UTC)


def spec(rid: str, account: str, *amounts: int, at: datetime = T0) -> ReserveSpec:
    lines = tuple(PricedLine("dept", f"ds{i}", a) for i, a in enumerate(amounts))
    return ReserveSpec(
        request_id=rid, account_id=account, basis="paid", lines=lines, digest="d", at=at
    )


def free_spec(rid: str, account: str, limit: int) -> ReserveSpec:
    return ReserveSpec(
        request_id=rid,
        account_id=account,
        basis="free_quota",
        lines=(PricedLine("dept", "ds0", 100),),
        digest="d",
        at=T0,
        quota_key=account,
        period="2026-11-05",
        quota_limit=limit,
        resets_at="2026-11-06T00:00:00+08:00",
    )


def test_top_up_is_idempotent_by_reference(ledger: LedgerStore) -> None:
    first = ledger.top_up("bank", 5_000, "TX-1", T0, actor="finance", create=True)
    again = ledger.top_up("bank", 5_000, "TX-1", T0 + timedelta(hours=1), actor="finance")
    assert not first.replayed and again.replayed
    assert again.entry == first.entry
    assert again.account.balance_fen == 5_000
    with pytest.raises(InvalidArgumentError) as exc:
        ledger.top_up("bank", 6_000, "TX-1", T0)
    assert exc.value.reason == "REFERENCE_REUSED"
    assert ledger.top_up_entry("TX-1") == first.entry


@pytest.mark.parametrize("amount", [0, -5, 2.5, True, 10**13])
def test_top_up_amount_must_be_positive_integer_fen(ledger: LedgerStore, amount: object) -> None:
    with pytest.raises(InvalidArgumentError, match="amount_fen"):
        ledger.top_up("bank", amount, "TX-1", T0, create=True)  # type: ignore[arg-type]


def test_top_up_of_unknown_account_needs_create(ledger: LedgerStore) -> None:
    with pytest.raises(NotFoundError):
        ledger.top_up("bank", 5_000, "TX-1", T0)
    assert ledger.account("bank") is None


def test_entries_are_append_only(ledger: LedgerStore, ledger_sql: RawSql) -> None:
    ledger.top_up("bank", 5_000, "TX-1", T0, create=True)
    with pytest.raises(Exception, match="append-only"):
        ledger_sql("UPDATE entries SET amount_fen = 1")
    with pytest.raises(Exception, match="append-only"):
        ledger_sql("DELETE FROM entries")
    assert [e.amount_fen for e in ledger.entries("bank")] == [5_000]


def test_check_finds_a_tampered_balance(ledger: LedgerStore, ledger_sql: RawSql) -> None:
    ledger.top_up("bank", 5_000, "TX-1", T0, create=True)
    ledger.reserve(spec("r1", "bank", 300))
    assert ledger.check() == []
    ledger_sql("UPDATE accounts SET balance_fen = 9999999 WHERE account_id = 'bank'")
    problems = ledger.check()
    assert problems and problems[0].account_id == "bank"
    assert ledger.recompute_balances()["bank"].balance_fen == 5_000


def test_statement_period_opening_closing_and_pages(ledger: LedgerStore) -> None:
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
    assert all(e.at.tzinfo is not None for e in page.entries)
    with pytest.raises(NotFoundError):
        ledger.statement("nobody", start, end)


def test_adjustment_is_booked_once(ledger: LedgerStore) -> None:
    ledger.top_up("bank", 1_000, "TX-1", T0, create=True)
    entry = ledger.adjust("bank", -250, "ADJ-1", T0, actor="finance", note="duplicate transfer")
    assert entry.balance_fen == 750 and entry.balance_change_fen == -250
    with pytest.raises(InvalidArgumentError):
        ledger.adjust("bank", -250, "ADJ-1", T0)
    assert ledger.check() == []


def test_available_never_goes_below_zero(ledger: LedgerStore) -> None:
    """PostgreSQL's CHECK and the shared rules agree: neither a negative adjustment nor
    a lowered credit limit may leave less than 0 fen available."""
    ledger.top_up("bank", 1_000, "TX-1", T0, create=True)
    ledger.set_credit_limit("bank", 500)
    ledger.reserve(spec("r1", "bank", 1_200))
    with pytest.raises(InvalidArgumentError) as exc:
        ledger.adjust("bank", -301, "ADJ-1", T0)
    assert exc.value.reason == "OVERDRAWN"
    with pytest.raises(InvalidArgumentError):
        ledger.set_credit_limit("bank", 199)
    ledger.adjust("bank", -300, "ADJ-2", T0)
    acct = ledger.account("bank")
    assert acct is not None and acct.available_fen == 0
    assert ledger.check() == []


def test_refused_reservation_leaves_no_trace(ledger: LedgerStore) -> None:
    ledger.top_up("bank", 100, "TX-1", T0, create=True)
    with pytest.raises(InsufficientBalanceError):
        ledger.reserve(spec("r1", "bank", 60, 60))
    assert ledger.request("r1") is None
    assert [e.kind for e in ledger.entries("bank")] == ["top_up"]
    assert ledger.unaudited() == [("top_up", "TX-1")]


def test_naive_times_are_refused(ledger: LedgerStore) -> None:
    with pytest.raises(LedgerError, match="timezone"):
        ledger.top_up("bank", 1, "TX-1", datetime(2026, 1, 1), create=True)


def test_reserve_settle_release_and_marks(ledger: LedgerStore) -> None:
    ledger.top_up("bank", 1_000, "TX-1", T0, create=True)
    ledger.mark_audited("top_up", "TX-1")
    first = ledger.reserve(spec("r1", "bank", 100, 200))
    assert not first.replay and first.record.reserved_fen == 300
    again = ledger.reserve(spec("r1", "bank", 100, 200))
    assert again.replay and again.record == first.record
    with pytest.raises(InvalidArgumentError) as exc:
        ledger.reserve(spec("r1", "other", 100))
    assert exc.value.reason == "REQUEST_ID_REUSED"
    assert [r.request_id for r in ledger.interrupted()] == ["r1"]
    settled = ledger.settle("r1", frozenset({("dept", "ds1")}), T0 + timedelta(seconds=1))
    assert settled.record.state == "settled" and settled.record.charged_fen == 200
    assert ledger.settle("r1", frozenset({("dept", "ds0")}), T0).replay
    assert ledger.interrupted() == []
    assert ledger.unaudited() == [("request", "r1")]
    refund = ledger.release("r1", T0 + timedelta(seconds=2), refund=True)
    assert refund.changed and refund.refunded_fen == 200
    acct = ledger.account("bank")
    assert acct is not None and (acct.balance_fen, acct.held_fen) == (1_000, 0)
    # Released: the id may be reserved afresh, as a new attempt.
    retry = ledger.reserve(spec("r1", "bank", 100, 200, at=T0 + timedelta(seconds=3)))
    assert not retry.replay and retry.record.attempts == 2
    assert ledger.release("r1", T0, attempt=1).changed is False
    ledger.mark_audited("request", "r1")
    assert ledger.unaudited() == []
    assert ledger.check() == []


def test_free_units_are_counted_and_given_back(ledger: LedgerStore) -> None:
    assert ledger.reserve(free_spec("f1", "bank", 2)).free_remaining == 1
    assert ledger.reserve(free_spec("f2", "bank", 2)).free_remaining == 0
    with pytest.raises(QuotaExhaustedError):
        ledger.reserve(free_spec("f3", "bank", 2))
    ledger.settle("f1", frozenset(), T0)  # nothing delivered: the unit comes back
    assert ledger.reserve(free_spec("f3", "bank", 2)).record.reserved_fen == 0
    assert ledger.check() == []


# --- two processes at once -------------------------------------------------------------


def test_two_stores_reserving_at_once_charge_each_request_once(
    ledger: LedgerStore, other_ledger: LedgerStore
) -> None:
    """Two independent stores on one database (two processes) reserve and settle the
    same and different request ids at once: each id is held once, each charged once,
    no balance is spent twice, and the ledger checks clean."""
    ledger.top_up("bank", 100_000, "TX-1", T0, create=True)
    ledger.top_up("tight", 1_000, "TX-2", T0, create=True)
    shared = [f"same-{i}" for i in range(30)]
    outcomes: dict[str, list[bool]] = {rid: [] for rid in shared}
    errors: list[BaseException] = []
    start = threading.Barrier(2)
    lock = threading.Lock()

    def run(store: LedgerStore, me: str) -> None:
        try:
            start.wait()
            for i, rid in enumerate(shared):
                result = store.reserve(spec(rid, "bank", 100))
                with lock:
                    outcomes[rid].append(result.replay)
                store.settle(rid, frozenset({("dept", "ds0")}), T0)
                # Different ids, one small account: never more than it holds.
                with contextlib.suppress(InsufficientBalanceError):
                    store.reserve(spec(f"{me}-{i}", "tight", 70))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(ledger, "a")),
        threading.Thread(target=run, args=(other_ledger, "b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    for rid in shared:
        assert sorted(outcomes[rid]) == [False, True], rid
        assert [e.kind for e in ledger.entries(request_id=rid)] == ["reserve", "charge"]
    bank = ledger.account("bank")
    tight = ledger.account("tight")
    assert bank is not None and bank.balance_fen == 100_000 - 100 * len(shared)
    assert tight is not None and tight.held_fen == 980 and tight.available_fen == 20
    assert ledger.check() == []
    assert other_ledger.check() == []


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
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(OPS, max_size=25))
def test_balances_recomputed_from_entries_equal_stored(
    ledger: LedgerStore, ops: list[tuple[object, ...]]
) -> None:
    # One store for every example: each example names its own accounts and requests.
    ns = uuid.uuid4().hex[:8] + "-"
    for i, op in enumerate(ops):
        at = T0 + timedelta(seconds=i)
        # Refused operations must leave everything consistent too.
        with contextlib.suppress(GatewayError):
            _apply(ledger, op, at, i, ns)
    assert ledger.check() == []
    recomputed = ledger.recompute_balances()
    for acct in ledger.accounts():
        assert recomputed[acct.account_id].balance_fen == acct.balance_fen
        assert recomputed[acct.account_id].held_fen == acct.held_fen
        assert acct.held_fen >= 0
        assert acct.available_fen >= 0


def _apply(ledger: LedgerStore, op: tuple[object, ...], at: datetime, i: int, ns: str) -> None:
    kind = op[0]
    if kind == "top_up":
        _, account, amount, ref = op
        # A repeated reference is a retry: booked once.
        ledger.top_up(
            ns + str(account), int(amount), f"{ns}{account}-{amount}-{ref}", at, create=True
        )  # type: ignore[call-overload]
    elif kind == "reserve":
        _, rid, account, amounts = op
        before = ledger.account(ns + str(account))
        prices = [int(a) for a in amounts]  # type: ignore[attr-defined]
        result = ledger.reserve(spec(ns + str(rid), ns + str(account), *prices, at=at))
        if not result.replay:
            after = ledger.account(ns + str(account))
            # A reservation never takes more than was available.
            assert before is not None and after is not None
            assert after.available_fen >= 0
            assert after.available_fen == before.available_fen - result.record.reserved_fen
    elif kind == "settle":
        _, rid, picks = op
        delivered = frozenset(("dept", f"ds{p}") for p in picks)  # type: ignore[attr-defined]
        ledger.settle(ns + str(rid), delivered, at)
    elif kind == "release":
        _, rid, refund = op
        ledger.release(ns + str(rid), at, refund=bool(refund))
    elif kind == "adjust":
        _, account, amount = op
        if ledger.account(ns + str(account)) is not None:
            ledger.adjust(ns + str(account), int(amount), f"{ns}adj-{i}", at)  # type: ignore[call-overload]
    elif kind == "credit":
        _, account, limit = op
        if ledger.account(ns + str(account)) is not None:
            ledger.set_credit_limit(ns + str(account), int(limit))  # type: ignore[call-overload]


def test_two_stores_booking_one_top_up_reference_book_it_once(
    ledger: LedgerStore, other_ledger: LedgerStore
) -> None:
    """The same payment reference booked by two processes at once (on PostgreSQL the
    loser's insert hits the unique key and its transaction is run again): once."""
    ledger.top_up("bank", 1, "TX-0", T0, create=True)
    replayed: list[bool] = []
    start = threading.Barrier(2)

    def run(store: LedgerStore) -> None:
        start.wait()
        for i in range(20):
            replayed.append(store.top_up("bank", 100, f"TX-{i + 1}", T0).replayed)

    threads = [threading.Thread(target=run, args=(s,)) for s in (ledger, other_ledger)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(replayed) == [False] * 20 + [True] * 20
    acct = ledger.account("bank")
    assert acct is not None and acct.balance_fen == 1 + 20 * 100
    assert ledger.check() == []


def test_two_stores_taking_free_units_at_once_take_no_more_than_the_quota(
    ledger: LedgerStore, other_ledger: LedgerStore
) -> None:
    granted: list[str] = []
    start = threading.Barrier(2)

    def run(store: LedgerStore, me: str) -> None:
        start.wait()
        for i in range(10):
            with contextlib.suppress(QuotaExhaustedError):
                granted.append(store.reserve(free_spec(f"{me}-{i}", "bank", 7)).record.request_id)

    threads = [
        threading.Thread(target=run, args=(s, m)) for s, m in ((ledger, "a"), (other_ledger, "b"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(granted) == 7
    assert ledger.check() == []


def test_book_recorded_settles_free_reservations_and_clears_marks(ledger: LedgerStore) -> None:
    """The lazy booking of free settlements (Meter.recorded): one transaction books the
    settlement as the agency was told it and clears the marks; another attempt, a
    request not reserved and an unknown id are left alone."""
    ledger.reserve(free_spec("f1", "agency", 3))
    ledger.reserve(free_spec("f2", "agency", 3))
    ledger.reserve(spec("p1", "nobody"))  # nothing priced: nothing to cover
    line = (PricedLine("dept", "ds0", 0),)
    told = RecordedSettlement("f1", 1, line, 0, 7)
    stale = RecordedSettlement("f2", 2, line, 0, 7)
    ghost = RecordedSettlement("nope", 1, line, 0, 7)
    paid = RecordedSettlement("p2", 1, (PricedLine("dept", "ds0", 100),), 0, 0)
    ledger.top_up("bank", 1_000, "fund-bank", T0, create=True)
    ledger.reserve(spec("p2", "bank", 100))
    booked = ledger.book_recorded(["f1", "f2", "p1", "nope"], [told, stale, ghost, paid], T0)
    assert booked == ["f1"]
    f1 = ledger.request("f1")
    assert f1 is not None and f1.state == "settled"
    assert [(x.key, x.amount_fen) for x in f1.delivered] == [(("dept", "ds0"), 0)]
    assert f1.free_remaining == 7  # what the agency was told, replayed verbatim
    f2 = ledger.request("f2")
    assert f2 is not None and f2.state == "reserved"
    p2 = ledger.request("p2")  # money is never settled this way
    assert p2 is not None and p2.state == "reserved"
    assert ("request", "p2") in ledger.unaudited()
    assert {k for k, _ in ledger.unaudited()} == {"request", "top_up"}
    assert ledger.entries(request_id="f1") == []  # no money moved
    assert [r for k, r in ledger.unaudited() if k == "request"] == ["p2"]
    assert ledger.check() == []
    # A second booking of the same settlement books nothing.
    assert ledger.book_recorded(["f1"], [told], T0) == []


def test_the_fast_path_books_what_the_portable_transaction_books(pg_ledger: LedgerStore) -> None:
    """PostgreSQL books reservations and settlements in one statement each; on every
    common case the rows and entries must equal what the portable transaction writes
    (run side by side on two accounts). SQLite has only the portable path."""
    from gateway.billing.ledger import SqlLedger
    from gateway.stores.postgres.ledger import PostgresLedger

    ledger = pg_ledger
    assert isinstance(ledger, PostgresLedger)
    calls: list[str] = []
    fast = ledger._fast

    def spy(sql: bytes, args: object) -> object:
        out = fast(sql, args)  # type: ignore[arg-type]
        calls.append("fast" if out is not None else "slow")
        return out

    ledger._fast = spy  # type: ignore[method-assign]
    for who in ("fast", "slow"):
        ledger.top_up(who, 10_000, f"fund-{who}", T0, create=True)
    cases = [
        (spec("{}-p", "{}", 100, 0, 300), {("dept", "ds0"), ("dept", "ds2")}),
        (spec("{}-q", "{}", 250, 250), {("dept", "ds1"), ("other", "x")}),
        (spec("{}-z", "{}", 0), {("dept", "ds0")}),
    ]
    for template, delivered in cases:
        for who in ("fast", "slow"):
            s = ReserveSpec(template.request_id.format(who), who, "paid", template.lines, "d", T0)
            if who == "fast":
                r = ledger.reserve(s)
                st_ = ledger.settle(s.request_id, frozenset(delivered), T0)
            else:
                r = SqlLedger.reserve(ledger, s)
                st_ = SqlLedger.settle(ledger, s.request_id, frozenset(delivered), T0)
            assert not r.replay and not st_.replay
    for who in ("fast", "slow"):
        s = free_spec(f"{who}-f", f"free-{who}", 2)
        r = ledger.reserve(s) if who == "fast" else SqlLedger.reserve(ledger, s)
        assert r.free_remaining == 1
        args = (s.request_id, frozenset({("dept", "ds0")}), T0)
        st_ = ledger.settle(*args) if who == "fast" else SqlLedger.settle(ledger, *args)
        assert st_.record.state == "settled"
    assert calls == ["fast"] * 8

    def shape(who: str) -> list[object]:
        out: list[object] = []
        for suffix in ("p", "q", "z", "f"):
            rec = ledger.request(f"{who}-{suffix}")
            assert rec is not None
            out.append(
                (rec.basis, rec.state, rec.lines, rec.delivered, rec.reserved_fen,
                 rec.charged_fen, rec.balance_fen, rec.free_remaining, rec.attempts)
            )  # fmt: skip
            out.append(
                [
                    (e.kind, e.amount_fen, e.department, e.dataset, e.balance_fen, e.held_fen)
                    for e in ledger.entries(request_id=f"{who}-{suffix}")
                ]
            )
        acct = ledger.account(who)
        out.append(acct and (acct.balance_fen, acct.held_fen))
        return out

    assert shape("fast") == shape("slow")
    assert ledger.check() == []
    # The refusals and replays are the portable transaction's, exactly.
    calls.clear()
    with pytest.raises(InsufficientBalanceError):
        ledger.reserve(spec("big", "fast", 10**6))
    assert ledger.reserve(spec("fast-p", "fast", 100, 0, 300)).replay
    assert ledger.settle("fast-p", frozenset({("dept", "ds0")}), T0).replay
    assert ledger.settle("fast-z", frozenset(), T0).replay
    assert calls == ["slow"] * 4


def test_on_postgresql_a_conflicting_write_is_tried_again_then_refused(
    pg_ledger: LedgerStore, pg_url: str
) -> None:
    """A serialization failure (SQLSTATE 40001, what PostgreSQL raises when concurrent
    transactions conflict) is retried, on the fast path and in the portable transaction
    alike, up to RETRIES tries; then the write is refused as conflicting. The failures are
    real: a trigger on the requests table raises them while a sequence (not rolled back
    with the transaction) is below a bound."""
    import psycopg

    from gateway.billing.ledger import SqlLedger
    from gateway.stores.postgres.ledger import RETRIES

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE ledger.conflicts")
        conn.execute("CREATE TABLE ledger.conflict_bound (n bigint NOT NULL)")
        conn.execute("INSERT INTO ledger.conflict_bound VALUES (0)")
        conn.execute(
            "CREATE FUNCTION ledger.conflict() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF nextval('ledger.conflicts') <= (SELECT n FROM ledger.conflict_bound)"
            " THEN RAISE EXCEPTION 'forced conflict' USING ERRCODE = '40001'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER conflict BEFORE INSERT ON ledger.requests"
            " FOR EACH ROW EXECUTE FUNCTION ledger.conflict()"
        )

        def conflicts(n: int) -> None:
            conn.execute("SELECT setval('ledger.conflicts', 1, false)")
            conn.execute("UPDATE ledger.conflict_bound SET n = %s", (n,))

        pg_ledger.top_up("bank", 10_000, "fund", T0, create=True)
        portable = functools.partial(SqlLedger.reserve, pg_ledger)
        for way, reserve in (("fast", pg_ledger.reserve), ("slow", portable)):
            conflicts(RETRIES - 1)  # every try but the last conflicts
            s = spec(f"{way}-1", "bank", 100)
            r = reserve(s)
            assert r.record.state == "reserved" and not r.replay
            conflicts(RETRIES)  # every try conflicts
            s = spec(f"{way}-2", "bank", 100)
            with pytest.raises(LedgerError, match="kept conflicting"):
                reserve(s)
            assert pg_ledger.request(f"{way}-2") is None
        conn.execute("DROP TRIGGER conflict ON ledger.requests")
    assert pg_ledger.check() == []
