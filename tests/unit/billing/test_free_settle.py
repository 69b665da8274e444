"""Free queries cost one ledger transaction: the settlement is made in memory and booked
with the clearing of the unaudited mark once the query record is durable.

A real ledger file, a real signed audit log file and the real QueryAuditor (the
``books`` fixture of test_on_record.py); "a crash" closes both files without the next
step, and reopening runs start-up recovery against the log.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from gateway.audit.auditor import QueryAuditor
from gateway.billing import Meter, Reservation, Settlement, query_billing
from gateway.billing.reconcile import read_records
from gateway.errors import (
    AuditUnavailableError,
    ConflictError,
    LedgerError,
    QuotaExhaustedError,
)
from protos.credit.v1 import query_pb2
from tests.unit.billing import test_on_record as on_record
from tests.unit.billing.conftest import TODAY
from tests.unit.billing.test_on_record import Books, FailingStore

#: The real files and their start-up (test_on_record.py's fixture).
books = on_record.books

REG = ("market", "registration")
ARREARS = ("tax", "arrears")
TWO = [REG, ARREARS]
#: The daily free quota of an agency not named in the test price list.
QUOTA = 3


async def _free(meter: Meter, rid: str, agency: str = "ndrc") -> Reservation:
    return await meter.reserve(
        request_id=rid, agency_id=agency, mode="free", lines=TWO, today=TODAY
    )


async def _record(auditor: QueryAuditor, res: Reservation, settled: Settlement) -> None:
    """Step 8 as the pipeline writes it: the typed billing block."""
    await auditor.append_query(
        None,
        None,
        query_pb2.QueryRequest(request_id=res.request_id),
        query_pb2.QueryResponse(request_id=res.request_id),
        None,
        charge_fen=settled.amount_fen,
        billing=query_billing(res, settled),
    )


def _used(books: Books, agency: str = "ndrc") -> int:
    """Free units the ledger counts as used today (read from the file itself)."""
    with sqlite3.connect(books.ledger) as conn:
        row = conn.execute(
            "SELECT used FROM quota_usage WHERE basis = 'free_quota' AND quota_key = ?",
            (agency,),
        ).fetchone()
    return 0 if row is None else int(row[0])


async def _landed(meter: Meter) -> None:
    """Wait until the background bookings (Meter.recorded) have run. (A no-op queued
    behind them is not enough: PostgreSQL's ledger runs calls on several threads.)"""
    await meter.settled()


async def test_a_free_query_books_one_transaction_and_its_settlement_with_the_mark(
    books: Books,
) -> None:
    meter, auditor = await books.open()
    rid = str(uuid.uuid4())
    calls: list[str] = []
    store = meter.store
    for name in ("reserve", "settle", "book_recorded", "mark_audited"):
        real = getattr(store, name)

        def spy(*a: object, _real: object = real, _name: str = name, **kw: object) -> object:
            calls.append(_name)
            return _real(*a, **kw)  # type: ignore[operator]

        setattr(store, name, spy)
    res = await _free(meter, rid)
    settled = await meter.settle(res, [REG])
    # Settled in memory: the agency is told at once, the ledger still holds it reserved.
    assert (settled.state, settled.amount_fen, settled.free_remaining) == ("settled", 0, 2)
    assert [(x.department, x.dataset, x.amount_fen) for x in settled.lines] == [(*REG, 0)]
    assert calls == ["reserve"]
    await _record(auditor, res, settled)
    meter.recorded(res)
    await _landed(meter)
    assert calls == ["reserve", "book_recorded"]  # one call of its own, one shared
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "settled"
    assert [x.key for x in rec.delivered] == [REG]
    assert (rec.free_remaining, rec.balance_fen) == (2, 0)  # what the agency was told
    assert await meter.ledger.run(meter.store.unaudited) == []
    assert _used(books) == 1
    await books.crash()
    assert [r["kind"] for r in books.records(rid)] == ["query"]
    code, output = books.reconcile()
    assert code == 0, output


async def test_crash_between_the_audit_append_and_the_booking_settles_at_start_up(
    books: Books,
) -> None:
    meter, auditor = await books.open()
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    settled = await meter.settle(res, [REG, ARREARS])
    await _record(auditor, res, settled)  # durable: the answer may have left
    await books.crash()  # before Meter.recorded: the ledger still says reserved

    meter, _ = await books.open()  # start-up recovery reads the record back
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "settled" and rec.attempts == 1
    assert sorted(x.key for x in rec.delivered) == sorted(TWO)
    assert _used(books) == 1  # the free unit stays used
    assert await meter.ledger.run(meter.store.unaudited) == []
    # A retry replays the recorded settlement, and asks only for what it delivered.
    again = await _free(meter, rid)
    assert again.replay and again.settlement is not None
    assert again.deliverable == set(TWO) and again.settlement.amount_fen == 0
    await books.crash()
    assert [r["kind"] for r in books.records(rid)] == ["query"]  # nothing added
    code, output = books.reconcile()
    assert code == 0, output


async def test_crash_before_the_audit_append_gives_the_unit_back(books: Books) -> None:
    meter, _ = await books.open()
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    await meter.settle(res, [REG])  # in memory only; no record, no answer
    await books.crash()

    meter, _ = await books.open()
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "released"
    assert _used(books) == 0
    await books.crash()
    (record,) = books.records(rid)
    assert (record["event"], record["reason"]) == ("release", "recovered")
    code, output = books.reconcile()
    assert code == 0, output


async def test_a_record_of_another_attempt_is_not_this_attempt_s_settlement(
    books: Books,
) -> None:
    """Attempt 1 answered and on the record, then refunded (the caller went away after
    the append); attempt 2 crashes before its record: recovery releases attempt 2."""
    meter, auditor = await books.open()
    rid = str(uuid.uuid4())
    first = await _free(meter, rid)
    settled = await meter.settle(first, [REG])
    await _record(auditor, first, settled)
    await meter.release_all(first, reason="caller went away", on_record=True)
    second = await _free(meter, rid)
    assert second.attempt == 2 and not second.replay
    await meter.settle(second, [REG])
    await books.crash()

    meter, _ = await books.open()
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "released" and rec.attempts == 2
    assert _used(books) == 0
    await books.crash()
    code, output = books.reconcile()
    assert code == 0, output


async def test_a_failed_audit_append_gives_the_unit_back(books: Books) -> None:
    store = FailingStore(books.audit_log)
    meter, auditor = await books.open(store)
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    settled = await meter.settle(res, [REG])
    store.failing = True
    with pytest.raises(AuditUnavailableError):
        await _record(auditor, res, settled)
    await meter.release_all(res, reason="query failed")  # the pipeline's undo
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "released"
    assert _used(books) == 0
    await books.crash()
    store.failing = False
    await books.open()  # the release goes on the record at the next start
    await books.crash()
    code, output = books.reconcile()
    assert code == 0, output


async def test_nothing_delivered_gives_the_unit_back_at_once(books: Books) -> None:
    meter, auditor = await books.open()
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    settled = await meter.settle(res, [])  # every department failed
    assert (settled.state, settled.lines) == ("released", ())
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "released"  # booked before the record
    assert _used(books) == 0
    assert settled.free_remaining == QUOTA
    await _record(auditor, res, settled)
    meter.recorded(res)
    await _landed(meter)
    await books.crash()
    code, output = books.reconcile()
    assert code == 0, output


async def test_a_replay_while_the_first_is_unrecorded_is_refused(books: Books) -> None:
    meter, _ = await books.open()
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    await meter.settle(res, [REG])  # the audit append has not returned yet
    with pytest.raises(ConflictError):
        await _free(meter, rid)
    await meter.release_all(res, reason="query failed")
    retry = await _free(meter, rid)  # the first failed: a new attempt
    assert not retry.replay and retry.attempt == 2


async def test_a_replay_in_the_window_before_the_booking_lands_gets_the_settlement(
    books: Books,
) -> None:
    """The retry reads the row while it is still ``reserved`` (its booking queued
    behind it on the ledger thread): it replays the recorded settlement, exactly."""
    meter, auditor = await books.open()
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    settled = await meter.settle(res, [ARREARS])
    await _record(auditor, res, settled)
    gate = threading.Event()
    hold = meter.ledger.submit(gate.wait, 10)  # the ledger thread is busy meanwhile
    retry = asyncio.ensure_future(_free(meter, rid))
    await asyncio.sleep(0.05)  # the retry's read is queued first...
    meter.recorded(res)  # ...then the booking
    gate.set()
    await hold
    again = await retry
    assert again.replay and again.settlement is not None
    assert again.deliverable == {ARREARS}  # never more than the first delivered
    assert again.settlement.lines == settled.lines
    assert again.settlement.free_remaining == settled.free_remaining
    assert (await meter.settle(again, TWO)).replay
    await _landed(meter)
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "settled"
    # ...and while the booking is queued, the replay comes from memory.
    rid2 = str(uuid.uuid4())
    res2 = await _free(meter, rid2)
    settled2 = await meter.settle(res2, [REG])
    await _record(auditor, res2, settled2)
    gate.clear()
    hold = meter.ledger.submit(gate.wait, 10)
    retry = asyncio.ensure_future(_free(meter, rid2))
    await asyncio.sleep(0.05)
    meter.recorded(res2)
    assert meter._pending[rid2].recorded
    gate.set()
    await hold
    again2 = await retry
    assert again2.settlement is not None and again2.deliverable == {REG}
    await books.crash()
    code, output = books.reconcile()
    assert code == 0, output


@pytest.mark.parametrize("seed", range(6))
async def test_parallel_free_queries_never_use_more_than_the_quota(books: Books, seed: int) -> None:
    """12 queries at once against a quota of 3, each answered, with nothing delivered,
    or failing at the audit append: never more than 3 answered with a free unit, the
    units used are exactly those answered, and the ledger and the log agree."""
    meter, auditor = await books.open()
    rng = random.Random(seed)
    plan = [rng.choice(["ok", "ok", "nothing", "audit fails"]) for _ in range(12)]
    outcomes: Counter[str] = Counter()
    delays = [rng.random() / 100 for _ in plan]

    async def one(what: str, delay: float) -> None:
        rid = str(uuid.uuid4())
        await asyncio.sleep(delay)
        try:
            res = await _free(meter, rid)
        except QuotaExhaustedError:
            outcomes["refused"] += 1
            return
        settled = await meter.settle(res, [] if what == "nothing" else [REG])
        try:
            if what == "audit fails":
                raise AuditUnavailableError("injected")
            await _record(auditor, res, settled)
        except AuditUnavailableError:
            await meter.release_all(res, reason="query failed")
            outcomes["failed"] += 1
            return
        meter.recorded(res)
        outcomes["answered" if settled.state == "settled" else "nothing"] += 1

    await asyncio.gather(*(one(w, d) for w, d in zip(plan, delays, strict=True)))
    await _landed(meter)
    assert outcomes.total() == len(plan)
    assert outcomes["answered"] <= QUOTA
    assert outcomes["refused"] >= len(plan) - QUOTA - outcomes["nothing"] - outcomes["failed"]
    assert _used(books) == outcomes["answered"]
    assert await meter.ledger.run(meter.store.check) == []
    await books.crash()
    await books.open()  # nothing left open; the failed ones' releases are on the record
    await books.crash()
    code, output = books.reconcile()
    assert code == 0, output


async def test_a_failed_booking_is_booked_by_the_next_and_replays_meanwhile(
    books: Books,
) -> None:
    meter, auditor = await books.open()
    store = meter.store
    real = store.book_recorded
    fail = [True]

    def flaky(*a: Any, **kw: Any) -> list[str]:
        if fail.pop() if fail else False:
            raise LedgerError("injected: the ledger file is busy")
        return real(*a, **kw)

    store.book_recorded = flaky  # type: ignore[method-assign]
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    settled = await meter.settle(res, [REG])
    await _record(auditor, res, settled)
    meter.recorded(res)
    await _landed(meter)
    rec = await meter.ledger.run(store.request, rid)
    assert rec is not None and rec.state == "reserved"  # not booked yet...
    again = await _free(meter, rid)  # ...yet a retry gets what the record says
    assert again.settlement is not None and again.deliverable == {REG}
    other = await _free(meter, str(uuid.uuid4()))
    await _record(auditor, other, await meter.settle(other, [REG]))
    meter.recorded(other)  # the next booking carries the first one too
    await _landed(meter)
    rec = await meter.ledger.run(store.request, rid)
    assert rec is not None and rec.state == "settled"
    assert await meter.ledger.run(store.unaudited) == []
    assert _used(books) == 2 and meter._pending == {}
    await books.crash()
    code, output = books.reconcile()
    assert code == 0, output


async def test_a_clean_stop_books_what_a_failed_booking_left(books: Books) -> None:
    meter, auditor = await books.open()
    store = meter.store
    real = store.book_recorded
    fail = [True]

    def flaky(*a: Any, **kw: Any) -> list[str]:
        if fail.pop() if fail else False:
            raise LedgerError("injected: the ledger file is busy")
        return real(*a, **kw)

    store.book_recorded = flaky  # type: ignore[method-assign]
    rid = str(uuid.uuid4())
    res = await _free(meter, rid)
    await _record(auditor, res, await meter.settle(res, [REG]))
    meter.recorded(res)
    await _landed(meter)
    assert ("request", rid) in await meter.ledger.run(store.unaudited)
    await meter.close()  # one more try before the ledger closes
    await books.crash()
    with sqlite3.connect(books.ledger) as conn:  # booked by the stop, not by recovery
        assert (
            conn.execute("SELECT state FROM requests WHERE request_id = ?", (rid,)).fetchone()[0]
            == "settled"
        )
        assert conn.execute("SELECT COUNT(*) FROM unaudited").fetchone()[0] == 0
    assert [r["kind"] for r in books.records(rid)] == ["query"]


async def test_on_postgresql_a_crash_before_the_booking_settles_as_recorded(
    books: Books, pg_url: str
) -> None:
    """The same rule on a shared PostgreSQL ledger: the booking lands with the mark
    clear; a crash before it is settled from the record at the next start (bounded by
    ``older_than`` as processes sharing a ledger run it)."""
    from datetime import timedelta

    from gateway.billing.reconcile import reconcile
    from gateway.stores.postgres.connect import PgTarget, open_pool
    from gateway.stores.postgres.ledger import PostgresLedger

    async def start() -> tuple[Meter, QueryAuditor]:
        _, auditor = await books.open()
        assert books.meter is not None
        await books.meter.close()  # the SQLite one the fixture opens; this test's is below
        meter = await Meter.open(
            PostgresLedger(open_pool(PgTarget(pg_url), max_size=2)),
            books.prices,
            on_event=auditor.record_billing,
            audit_lookup=auditor.billing_records,
        )
        books.meter = meter
        return meter, auditor

    meter, auditor = await start()
    answered, crashed = str(uuid.uuid4()), str(uuid.uuid4())
    res = await _free(meter, answered)
    await _record(auditor, res, await meter.settle(res, [REG]))
    meter.recorded(res)
    await _landed(meter)
    rec = await meter.ledger.run(meter.store.request, answered)
    assert rec is not None and rec.state == "settled"
    res = await _free(meter, crashed)
    settled = await meter.settle(res, [REG, ARREARS])
    await _record(auditor, res, settled)
    await books.crash()

    meter, _ = await start()
    rec = await meter.ledger.run(meter.store.request, crashed)
    assert rec is not None and rec.state == "settled"
    assert sorted(x.key for x in rec.delivered) == sorted(TWO)
    assert await meter.recover(older_than=timedelta(0)) == []  # nothing left to do
    assert await meter.ledger.run(meter.store.unaudited) == []
    quota = await _free(meter, str(uuid.uuid4()))
    assert quota.free_remaining == QUOTA - 3  # both units stay used, this one too
    signed, unsigned = read_records(books.audit_log)
    report = await meter.ledger.run(reconcile, meter.store, signed + unsigned)
    assert report.differences == [] and report.pending == [
        f"request {quota.request_id}: still reserved (0 fen held)"
    ]
