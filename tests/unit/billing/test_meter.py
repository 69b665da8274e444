"""The meter (pipeline steps 4 and 7) on real SQLite files with real asyncio concurrency."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.billing import Meter, delivered_lines, granted_lines, mode_name
from gateway.billing.ledger import AsyncLedger
from gateway.errors import (
    AuditUnavailableError,
    ConfigError,
    ConflictError,
    InsufficientBalanceError,
    InternalError,
    InvalidArgumentError,
    QuotaExhaustedError,
)
from gateway.pipeline.decision import Decision, DepartmentDecision
from protos.credit.v1 import query_pb2
from tests.unit.billing.conftest import (
    OTHER_SUBJECT_KEY,
    SUBJECT_KEY,
    TODAY,
    Clock,
    Events,
    OpenMeter,
    fund,
)

REG = ("market", "registration")  # 100 fen
ARREARS = ("tax", "arrears")  # 300 fen
DEBTORS = ("court", "dishonest_debtors")  # 200 fen
THREE = [REG, ARREARS, DEBTORS]


async def account(meter: Meter, agency: str) -> tuple[int, int]:
    acct = await meter.ledger.run(meter.store.account, agency)
    assert acct is not None
    return acct.balance_fen, acct.held_fen


async def consistent(meter: Meter) -> None:
    assert await meter.ledger.run(meter.store.check) == []


async def paid(meter: Meter, rid: str, lines: list[tuple[str, str]] = THREE, **kw: Any) -> Any:
    kw.setdefault("agency_id", "bank")
    kw.setdefault("today", TODAY)
    return await meter.reserve(request_id=rid, mode="paid", lines=lines, **kw)


# --- paid: reserve, partial delivery ---------------------------------------------------


async def test_charges_exactly_what_was_delivered(meter: Meter, events: Events) -> None:
    await fund(meter, "bank", 10_000)
    res = await paid(meter, "r1")
    assert res.reserved_fen == 600 and not res.replay
    assert await account(meter, "bank") == (10_000, 600)

    # market and court answered; tax timed out.
    settled = await meter.settle(res, [REG, DEBTORS])
    assert settled.state == "settled"
    assert settled.amount_fen == 300
    assert sorted((x.department, x.dataset, x.amount_fen) for x in settled.lines) == [
        ("court", "dishonest_debtors", 200),
        ("market", "registration", 100),
    ]
    assert settled.balance_fen == 9_700
    assert await account(meter, "bank") == (9_700, 0)

    charge = settled.to_proto()
    assert charge.amount_fen == 300 and charge.balance_fen == 9_700 and len(charge.lines) == 2

    kinds = [e.kind for e in await meter.ledger.run(meter.store.entries, "bank", "r1")]
    assert kinds == ["reserve"] * 3 + ["charge", "release", "charge"]
    assert events.kinds("r1") == []  # the query record carries both: no event is built
    await consistent(meter)


async def test_never_charges_what_was_not_reserved(meter: Meter) -> None:
    await fund(meter, "bank", 10_000)
    res = await paid(meter, "r1", [REG])
    settled = await meter.settle(res, [REG, ARREARS])  # ARREARS was never granted
    assert settled.amount_fen == 100
    assert await account(meter, "bank") == (9_900, 0)


async def test_nothing_delivered_costs_nothing(meter: Meter, events: Events) -> None:
    await fund(meter, "bank", 1_000)
    res = await paid(meter, "r1")
    settled = await meter.settle(res, [])
    assert settled.state == "released" and settled.amount_fen == 0
    assert await account(meter, "bank") == (1_000, 0)
    assert events.kinds("r1") == []  # the query record carries the release
    await consistent(meter)


async def test_insufficient_balance_says_needed_and_available(meter: Meter) -> None:
    await fund(meter, "bank", 500)
    with pytest.raises(InsufficientBalanceError) as exc:
        await paid(meter, "r1")
    assert exc.value.metadata["needed_fen"] == "600"
    assert exc.value.metadata["available_fen"] == "500"
    assert "600 fen" in exc.value.message and "500 fen" in exc.value.message
    assert await account(meter, "bank") == (500, 0)
    # A refused request id may be retried once the account can pay.
    await fund(meter, "bank", 100, ref="more")
    assert (await paid(meter, "r1")).reserved_fen == 600


async def test_no_account_is_insufficient_balance(meter: Meter) -> None:
    with pytest.raises(InsufficientBalanceError) as exc:
        await paid(meter, "r1", agency_id="guarantor")
    assert exc.value.metadata["available_fen"] == "0"


async def test_credit_limit_extends_what_may_be_reserved(meter: Meter) -> None:
    await fund(meter, "bank", 100)
    await meter.ledger.run(meter.store.set_credit_limit, "bank", 500)
    res = await paid(meter, "r1")  # 600 = 100 balance + 500 credit
    await meter.settle(res, THREE)
    assert await account(meter, "bank") == (-500, 0)
    with pytest.raises(InsufficientBalanceError):
        await paid(meter, "r2", [REG])
    await consistent(meter)


async def test_a_dataset_without_a_price_is_a_config_error(meter: Meter) -> None:
    await fund(meter, "bank", 10_000)
    with pytest.raises(ConfigError) as exc:
        await paid(meter, "r1", [("hrss", "income")])
    assert exc.value.key == "prices.hrss.income"


# --- concurrency ---------------------------------------------------------------------------


async def test_100_concurrent_queries_never_overdraw(meter: Meter) -> None:
    price = 600  # the three datasets
    await fund(meter, "bank", 10 * price)

    async def query(i: int) -> int:
        res = await paid(meter, f"q{i:03d}")
        await asyncio.sleep(0)  # fan-out happens here
        return (await meter.settle(res, THREE)).amount_fen

    results = await asyncio.gather(*(query(i) for i in range(100)), return_exceptions=True)
    charged = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, InsufficientBalanceError)]
    assert len(charged) == 10 and sum(charged) == 10 * price
    assert len(refused) == 90
    assert await account(meter, "bank") == (0, 0)
    await consistent(meter)


async def test_two_connections_on_one_file_never_overdraw(
    meter: Meter, open_meter: OpenMeter
) -> None:
    """Two ledger connections (as two processes would have) write the same
    account concurrently: BEGIN IMMEDIATE keeps them from both spending it."""
    await fund(meter, "bank", 10 * 100)
    other = await open_meter(recover=False)

    async def query(m: Meter, i: int) -> bool:
        try:
            res = await paid(m, f"c{i:03d}", [REG])
        except InsufficientBalanceError:
            return False
        await m.settle(res, [REG])
        return True

    results = await asyncio.gather(*(query(meter if i % 2 else other, i) for i in range(40)))
    assert results.count(True) == 10
    assert await account(meter, "bank") == (0, 0)
    await consistent(meter)


# --- idempotency and restarts ------------------------------------------------------------------


async def test_retry_with_same_request_id_charges_once(meter: Meter, events: Events) -> None:
    await fund(meter, "bank", 10_000)
    first = await meter.settle(await paid(meter, "r1"), [REG, ARREARS])
    again = await paid(meter, "r1")
    assert again.replay and again.settlement is not None
    # A retry may ask only for what was paid for.
    assert again.deliverable == {REG, ARREARS}
    second = await meter.settle(again, THREE)
    assert second.replay
    assert (second.amount_fen, second.balance_fen, second.lines) == (
        first.amount_fen,
        first.balance_fen,
        first.lines,
    )
    assert await account(meter, "bank") == (9_600, 0)
    assert events.kinds("r1") == []
    # A replay never refunds the original.
    await meter.release_all(again)
    assert await account(meter, "bank") == (9_600, 0)


async def test_retry_after_reopening_the_ledger_charges_once(
    meter: Meter, open_meter: OpenMeter
) -> None:
    await fund(meter, "bank", 10_000)
    first = await meter.settle(await paid(meter, "r1"), THREE)
    await meter.close()

    reopened = await open_meter()
    again = await paid(reopened, "r1")
    assert again.replay and again.settlement is not None
    assert again.settlement.amount_fen == first.amount_fen == 600
    assert again.settlement.balance_fen == first.balance_fen == 9_400
    assert await account(reopened, "bank") == (9_400, 0)
    await consistent(reopened)


async def test_concurrent_duplicates_charge_once(meter: Meter) -> None:
    await fund(meter, "bank", 10_000)

    async def query() -> int | str:
        try:
            res = await paid(meter, "dup")
        except ConflictError:
            return "in progress"
        return (await meter.settle(res, THREE)).amount_fen

    outcomes = await asyncio.gather(*(query() for _ in range(5)))
    # One copy is answered and charged; copies racing it are told to retry, or (on a
    # backend running calls side by side, once it is settled) get its charge back...
    assert "600" in map(str, outcomes) and set(map(str, outcomes)) <= {"600", "in progress"}
    assert await account(meter, "bank") == (9_400, 0)
    # ...and a retry once it is done gets the original charge, not a new one.
    again = await paid(meter, "dup")
    assert again.replay and (await meter.settle(again, THREE)).amount_fen == 600
    assert await account(meter, "bank") == (9_400, 0)


async def test_a_copy_racing_a_request_that_then_fails_reads_nothing_for_free(
    meter: Meter,
) -> None:
    await fund(meter, "bank", 10_000)
    first = await paid(meter, "race")
    with pytest.raises(ConflictError):  # the copy may not ride on the open reservation
        await paid(meter, "race")
    await meter.release_all(first, reason="client went away")
    retry = await paid(meter, "race")  # after the release it is a new attempt, paid again
    assert not retry.replay and retry.reserved_fen == 600
    assert (await meter.settle(retry, THREE)).amount_fen == 600
    assert await account(meter, "bank") == (9_400, 0)


async def test_request_id_of_another_request_is_refused(meter: Meter) -> None:
    await fund(meter, "bank", 10_000)
    await fund(meter, "guarantor", 10_000)
    await paid(meter, "r1")
    with pytest.raises(InvalidArgumentError) as exc:
        await paid(meter, "r1", agency_id="guarantor")
    assert exc.value.reason == "REQUEST_ID_REUSED"
    assert "bank" not in exc.value.message  # nothing about the other agency leaks
    with pytest.raises(InvalidArgumentError):
        await meter.reserve(
            request_id="r1", agency_id="bank", mode="free", lines=THREE, today=TODAY
        )
    with pytest.raises(InvalidArgumentError):
        await paid(meter, "r1", request_digest="another subject")


async def test_restart_between_reserve_and_settle(
    meter: Meter, open_meter: OpenMeter, events: Events
) -> None:
    await fund(meter, "bank", 1_000)
    await paid(meter, "r1")
    assert await account(meter, "bank") == (1_000, 600)
    # The process dies here: no settle, no release, the connection abandoned.

    restarted = await open_meter()  # recovery runs at start-up
    assert await account(restarted, "bank") == (1_000, 0)
    await consistent(restarted)
    assert events.items[-1]["event"] == "release"
    assert events.items[-1]["reason"] == "recovered"
    rec = await restarted.ledger.run(restarted.store.request, "r1")
    assert rec is not None and rec.state == "released"

    # The agency's retry (no response ever reached it) is a fresh attempt.
    retry = await paid(restarted, "r1")
    assert not retry.replay
    assert (await restarted.settle(retry, [REG])).amount_fen == 100
    assert await account(restarted, "bank") == (900, 0)
    await consistent(restarted)


async def test_recover_older_than_spares_queries_in_flight(meter: Meter, clock: Clock) -> None:
    await fund(meter, "bank", 1_000)
    await paid(meter, "old", [REG])
    clock.advance(minutes=5)
    await paid(meter, "new", [REG])
    assert await meter.recover(older_than=timedelta(minutes=1)) == ["old"]
    assert await account(meter, "bank") == (1_000, 100)


async def test_settle_after_recovery_charges_nothing(meter: Meter) -> None:
    await fund(meter, "bank", 1_000)
    res = await paid(meter, "r1")
    await meter.recover()
    settled = await meter.settle(res, THREE)
    assert settled.amount_fen == 0 and settled.state == "released"
    assert await account(meter, "bank") == (1_000, 0)


# --- failures ---------------------------------------------------------------------------------


async def test_release_all_refunds_a_failed_query(meter: Meter, events: Events) -> None:
    await fund(meter, "bank", 1_000)
    res = await paid(meter, "r1")
    await meter.settle(res, THREE)
    # The audit append failed after settlement: no response, so no charge.
    out = await meter.release_all(res, reason="audit unavailable")
    assert out.amount_fen == 0 and out.state == "released"
    assert await account(meter, "bank") == (1_000, 0)
    # One record for what no query record carries: the reservation, charge and refund.
    assert events.kinds("r1") == ["refund"]
    assert events.items[-1]["movements"] == {"reserve": 600, "charge": 600, "refund": 600}
    # Released twice is released once.
    await meter.release_all(res)
    assert await account(meter, "bank") == (1_000, 0)
    await consistent(meter)


async def test_a_query_s_own_bookings_make_no_event(meter: Meter, events: Events) -> None:
    """Reservation and settlement are carried by the query record: the hook is not
    called for them (a failing hook changes nothing); a failed query's refund is."""
    await fund(meter, "bank", 1_000)
    events.fail = AuditUnavailableError("disk full")
    res = await paid(meter, "r1")
    assert (await meter.settle(res, THREE)).amount_fen == 600
    assert await account(meter, "bank") == (400, 0)
    await meter.release_all(res)  # never raises for the event: the money is back
    assert await account(meter, "bank") == (1_000, 0)
    assert events.items == []
    # ...and the refund stays marked, for recovery to put on the record.
    assert ("request", "r1") in await meter.ledger.run(meter.store.unaudited)
    await consistent(meter)


async def test_cancelled_reserve_is_undone(meter: Meter) -> None:
    await fund(meter, "bank", 1_000)
    task = asyncio.create_task(paid(meter, "r1"))
    await asyncio.sleep(0)  # the booking is on the ledger thread now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Wait for the release itself: where the ledger runs calls side by side
    # (PostgreSQL), a read may overtake the reservation still being booked.
    for _ in range(200):
        rec = await meter.ledger.run(meter.store.request, "r1")
        if rec is not None and rec.state == "released":
            break
        await asyncio.sleep(0.01)
    assert await account(meter, "bank") == (1_000, 0)
    await consistent(meter)


async def test_bad_arguments(meter: Meter) -> None:
    with pytest.raises(InvalidArgumentError, match="request_id"):
        await paid(meter, "")
    with pytest.raises(InvalidArgumentError, match="mode"):
        await meter.reserve(
            request_id="r", agency_id="bank", mode="gratis",  # type: ignore[arg-type]
            lines=THREE, today=TODAY,
        )  # fmt: skip
    with pytest.raises(InternalError):
        await paid(meter, "r", self_query_subject_key="110105194912310021")  # an identifier


async def test_nothing_granted_books_nothing(meter: Meter) -> None:
    res = await meter.reserve(request_id="r", agency_id="ndrc", mode="free", lines=[], today=TODAY)
    assert res.empty
    assert (await meter.settle(res, [])).amount_fen == 0
    assert await meter.ledger.run(meter.store.request, "r") is None


# --- free mode -------------------------------------------------------------------------------


async def free(meter: Meter, rid: str, agency: str = "procurement", today: date = TODAY) -> Any:
    return await meter.reserve(
        request_id=rid, agency_id=agency, mode="free", lines=[REG, DEBTORS], today=today
    )


async def test_free_quota_resets_at_local_midnight(meter: Meter) -> None:
    # procurement: 2 free queries a day.
    a = await free(meter, "f1")
    assert (a.reserved_fen, a.free_remaining) == (0, 1)
    assert (await meter.settle(a, [REG])).free_remaining == 1
    b = await free(meter, "f2")
    assert b.free_remaining == 0
    with pytest.raises(QuotaExhaustedError) as exc:
        await free(meter, "f3")
    assert exc.value.metadata["resets_at"] == "2026-11-06T00:00:00+08:00"
    # The next local day has a fresh quota.
    c = await free(meter, "f3", today=TODAY + timedelta(days=1))
    assert c.free_remaining == 1
    # Other agencies have their own quota (default 3).
    assert (await free(meter, "g1", agency="ndrc")).free_remaining == 2


async def test_free_query_with_nothing_delivered_gives_its_unit_back(meter: Meter) -> None:
    await meter.settle(await free(meter, "f1"), [])
    res = await free(meter, "f2")
    assert res.free_remaining == 1  # f1 did not count
    await meter.release_all(res)  # a failed query
    assert (await free(meter, "f3")).free_remaining == 1


async def test_zero_quota_agency_is_refused(meter: Meter) -> None:
    with pytest.raises(QuotaExhaustedError):
        await free(meter, "n1", agency="nogrants")


async def test_free_settlement_charges_zero_fen_per_line(meter: Meter) -> None:
    settled = await meter.settle(await free(meter, "f1"), [REG, DEBTORS])
    assert settled.amount_fen == 0
    assert [x.amount_fen for x in settled.lines] == [0, 0]
    assert len(settled.to_proto().lines) == 2


# --- self-query (Art. 17) ---------------------------------------------------------------------


async def self_query(
    meter: Meter, rid: str, mode: str = "free", today: date = TODAY, key: str = SUBJECT_KEY
) -> Any:
    return await meter.reserve(
        request_id=rid,
        agency_id="self_service",
        mode=mode,  # type: ignore[arg-type]
        lines=[REG],
        today=today,
        self_query_subject_key=key,
    )


async def test_two_free_self_queries_a_year_then_paid(meter: Meter) -> None:
    await fund(meter, "self_service", 1_000)
    one = await meter.settle(await self_query(meter, "s1"), [REG])
    assert (one.amount_fen, one.free_remaining) == (0, 1)
    two = await meter.settle(await self_query(meter, "s2", mode="paid"), [REG])
    assert (two.amount_fen, two.free_remaining) == (0, 0)  # paid mode uses a free one first

    with pytest.raises(QuotaExhaustedError) as exc:
        await self_query(meter, "s3")
    assert exc.value.metadata["resets_at"] == "2027-01-01T00:00:00+08:00"
    third = await meter.settle(await self_query(meter, "s3p", mode="paid"), [REG])
    assert third.amount_fen == 100
    assert await account(meter, "self_service") == (900, 0)

    # Another subject has its own allowance; next year the allowance is back.
    assert (await self_query(meter, "o1", key=OTHER_SUBJECT_KEY)).reserved_fen == 0
    nxt = await self_query(meter, "s4", today=date(2027, 1, 1))
    assert (nxt.reserved_fen, nxt.free_remaining) == (0, 1)
    await consistent(meter)


async def test_self_query_events_carry_no_subject(meter: Meter, events: Events) -> None:
    res = await self_query(meter, "s1")
    await meter.settle(res, [REG])
    await meter.release_all(res, reason="query failed")
    assert events.kinds("s1") == ["release"]
    assert SUBJECT_KEY not in json.dumps(events.items)


# --- events and helpers -------------------------------------------------------------------------


async def test_events_are_json_without_floats(meter: Meter, events: Events) -> None:
    await fund(meter, "bank", 1_000)
    for res in (await paid(meter, "r1"), await free(meter, "f1")):
        await meter.settle(res, [REG])
        await meter.release_all(res, reason="query failed")
    assert events.kinds() == ["refund", "release"]

    def no_floats(v: object) -> None:
        assert not isinstance(v, float)
        for child in v.values() if isinstance(v, dict) else v if isinstance(v, list) else ():
            no_floats(child)

    for e in events.items:
        no_floats(e)
        json.dumps(e)
        assert e["kind"] == "billing" and e["request_id"]


def test_delivered_counts_ok_and_not_found_only() -> None:
    decision = Decision(
        "v1",
        {
            "market": DepartmentDecision({"registration": ("name",)}),
            "tax": DepartmentDecision({"arrears": ("amount_fen",), "credit_rating": ("rating",)}),
            "court": DepartmentDecision({"dishonest_debtors": ("case_number",)}),
            "pbccrc": DepartmentDecision({"personal_loans": ("lender",)}),
        },
    )
    assert granted_lines(decision) == sorted(
        [REG, ARREARS, ("tax", "credit_rating"), DEBTORS, ("pbccrc", "personal_loans")]
    )
    outcomes = {
        "market": SimpleNamespace(status=query_pb2.SECTION_STATUS_OK),
        "tax": SimpleNamespace(status=query_pb2.SECTION_STATUS_NOT_FOUND),
        "court": SimpleNamespace(status=query_pb2.SECTION_STATUS_TIMED_OUT),
        "pbccrc": SimpleNamespace(status=query_pb2.SECTION_STATUS_UNAVAILABLE),
    }
    assert delivered_lines(decision, outcomes) == [REG, ARREARS, ("tax", "credit_rating")]


def test_mode_name() -> None:
    assert mode_name(query_pb2.QUERY_MODE_FREE) == "free"
    assert mode_name(query_pb2.QUERY_MODE_PAID) == "paid"
    with pytest.raises(InvalidArgumentError):
        mode_name(query_pb2.QUERY_MODE_UNSPECIFIED)


async def test_ledger_close_is_idempotent(meter: Meter) -> None:
    ledger: AsyncLedger = meter.ledger
    await meter.close()
    await meter.close()
    assert ledger.closed


async def test_a_stale_attempt_never_touches_a_retry(meter: Meter) -> None:
    await fund(meter, "bank", 1_000)
    first = await paid(meter, "r1", [REG])
    await meter.release_all(first)  # the first attempt failed
    retry = await paid(meter, "r1", [REG])
    assert retry.attempt == first.attempt + 1 and not retry.replay
    # The first attempt's late calls do nothing to the retry.
    assert (await meter.settle(first, [REG])).amount_fen == 0
    await meter.release_all(first)
    assert await account(meter, "bank") == (1_000, 100)
    assert (await meter.settle(retry, [REG])).amount_fen == 100
    assert await account(meter, "bank") == (900, 0)
    await consistent(meter)
