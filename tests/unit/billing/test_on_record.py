"""Every booking is on the record, whatever happens.

A real ledger file, a real signed audit log file and the real QueryAuditor;
"a crash" is a meter closed without its next step, then reopened (start-up
recovery) on the same two files; ``billing reconcile`` then reads both files
through its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.audit import Ed25519Signer
from gateway.audit.auditor import QueryAuditor
from gateway.audit.errors import StorageError
from gateway.audit.log import AuditLog
from gateway.audit.note import generate_key
from gateway.billing import Meter, PriceList, Reservation
from gateway.billing.reconcile import Movements, read_records, record_movements
from gateway.cli.billing import billing_main
from gateway.errors import AuditUnavailableError, GatewayError
from gateway.stores.sqlite.audit import SQLiteStore
from protos.credit.v1 import query_pb2
from tests.unit.billing.conftest import TODAY, fund

REG = ("market", "registration")  # 100 fen
ARREARS = ("tax", "arrears")  # 300 fen
DEBTORS = ("court", "dishonest_debtors")  # 200 fen
THREE = [REG, ARREARS, DEBTORS]


@dataclass
class Books:
    """The gateway's two files and their keys; :meth:`open` is a (re)start."""

    tmp: Path
    prices: PriceList
    skey: str
    vkey: Path
    meter: Meter | None = None
    auditor: QueryAuditor | None = None

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.db"

    @property
    def audit_log(self) -> Path:
        return self.tmp / "audit.db"

    async def open(
        self, store: SQLiteStore | None = None, *, checkpoint_interval: float = 1.0
    ) -> tuple[Meter, QueryAuditor]:
        """Start: open the log, then the meter, which recovers against the log."""
        log = await AuditLog.open(
            None if store else self.audit_log,
            Ed25519Signer.from_key_string(self.skey),
            store=store,
            retry_interval=0.05,
            checkpoint_interval=checkpoint_interval,
        )
        self.auditor = QueryAuditor(log, b"k" * 32, gateway_origin=log.origin)
        self.meter = await Meter.open(
            self.ledger,
            self.prices,
            on_event=self.auditor.record_billing,
            audit_lookup=self.auditor.billing_records,
        )
        return self.meter, self.auditor

    async def crash(self) -> None:
        """Stop without finishing anything in flight (what SIGKILL leaves is
        durable: every ledger call and audit append returned only once fsynced)."""
        assert self.meter is not None and self.auditor is not None
        await self.meter.ledger.close()
        with contextlib.suppress(GatewayError):  # a failed log closes with an error
            await self.auditor.log.close()
        self.meter = self.auditor = None

    def reconcile(self) -> tuple[int, str]:
        out = io.StringIO()
        code = billing_main(
            [
                "reconcile",
                "--ledger",
                str(self.ledger),
                "--audit-log",
                str(self.audit_log),
                "--key",
                str(self.vkey),
                # Pending (still marked) counts too: these are stopped files.
                "--strict",
            ],
            out=out,
            err=out,
        )
        return code, out.getvalue()

    def records(self, request_id: str) -> list[dict[str, Any]]:
        signed, unsigned = read_records(self.audit_log)
        return [r for r in signed + unsigned if r.get("request_id") == request_id]


@pytest_asyncio.fixture
async def books(tmp_path: Path, prices: PriceList) -> AsyncIterator[Books]:
    skey, vkey = generate_key("books.test/audit")
    (tmp_path / "verifier.key").write_text(vkey + "\n")
    b = Books(tmp_path, prices, skey, tmp_path / "verifier.key")
    yield b
    if b.meter is not None:
        await b.crash()


async def _paid(meter: Meter, rid: str, lines: list[tuple[str, str]] = THREE) -> Reservation:
    return await meter.reserve(
        request_id=rid, agency_id="bank", mode="paid", lines=lines, today=TODAY
    )


async def _query_record(auditor: QueryAuditor, res: Reservation, settled: Any) -> None:
    """Step 8 as the service writes it (the billing block of a query record)."""
    await auditor.append_query(
        None,
        None,
        query_pb2.QueryRequest(request_id=res.request_id),
        query_pb2.QueryResponse(request_id=res.request_id),
        None,
        charge_fen=settled.amount_fen,
        billing={
            "basis": res.basis,
            "reserved_fen": res.reserved_fen,
            "charged_fen": settled.amount_fen,
            "state": settled.state,
            "replay": res.replay,
            "lines": [],
        },
    )


async def _balance(meter: Meter) -> tuple[int, int]:
    acct = await meter.ledger.run(meter.store.account, "bank")
    assert acct is not None
    return acct.balance_fen, acct.held_fen


async def test_crash_between_settle_and_audit_append_is_refunded_and_recorded(
    books: Books,
) -> None:
    meter, _ = await books.open()
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    res = await _paid(meter, rid)
    settled = await meter.settle(res, [REG, DEBTORS])  # step 7: 300 fen charged
    assert settled.amount_fen == 300 and await _balance(meter) == (9_700, 0)
    await books.crash()  # before step 8: no query record, no answer

    code, output = books.reconcile()
    assert code == 1 and f"request {rid}" in output  # the charge is off the record

    meter, _ = await books.open()  # start-up recovery
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "released"
    assert await _balance(meter) == (10_000, 0)  # an undisclosed query costs nothing
    assert await meter.ledger.run(meter.store.unaudited) == []
    await books.crash()

    (record,) = books.records(rid)
    assert record["event"] == "refund" and record["reason"] == "recovered"
    assert record_movements(record) == Movements(600, 300, 300, 300)
    code, output = books.reconcile()
    assert code == 0, output
    assert "0 differences" in output


async def test_crash_after_the_query_record_keeps_the_charge(books: Books) -> None:
    """The record is durable, the mark not yet cleared: recovery clears it and
    books nothing (the agency retries the request id to get what it paid for)."""
    meter, auditor = await books.open()
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    res = await _paid(meter, rid)
    settled = await meter.settle(res, [REG])
    await _query_record(auditor, res, settled)
    await books.crash()

    meter, _ = await books.open()
    assert await _balance(meter) == (9_900, 0)
    assert await meter.ledger.run(meter.store.unaudited) == []
    await books.crash()
    assert [r["kind"] for r in books.records(rid)] == ["query"]
    assert books.reconcile()[0] == 0


async def test_crash_while_reserved_releases_and_records_both(books: Books) -> None:
    meter, _ = await books.open()
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    await _paid(meter, rid)
    await books.crash()
    meter, _ = await books.open()
    assert await _balance(meter) == (10_000, 0)
    await books.crash()
    (record,) = books.records(rid)
    assert record_movements(record) == Movements(reserve=600, release=600)
    assert books.reconcile()[0] == 0


async def test_offline_top_up_is_put_on_the_record_at_start_up(books: Books) -> None:
    await books.open()  # a ledger file, as the gateway creates it
    await books.crash()
    out = io.StringIO()
    code = billing_main(
        [
            "--ledger",
            str(books.ledger),
            "top-up",
            "bank",
            "5000",
            "--reference",
            "TX-1",
            "--create",
        ],
        out=out,
        err=out,
    )
    assert code == 0, out.getvalue()
    code, output = books.reconcile()
    assert code == 1 and "top-up TX-1: 5000 fen to bank, no audit record" in output
    await books.open()
    await books.crash()
    assert books.reconcile()[0] == 0


async def test_a_caller_gone_while_its_reservation_is_booked_is_released_on_the_record(
    books: Books,
) -> None:
    meter, _ = await books.open()
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    task = asyncio.ensure_future(_paid(meter, rid))
    await asyncio.sleep(0)  # the booking is submitted to the ledger thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(10):
        while ("request", rid) in await meter.ledger.run(meter.store.unaudited):
            await asyncio.sleep(0.01)
    rec = await meter.ledger.run(meter.store.request, rid)
    assert rec is not None and rec.state == "released"
    await books.crash()
    (record,) = books.records(rid)
    assert record["reason"] == "caller went away"
    assert record_movements(record) == Movements(reserve=600, release=600)
    code, output = books.reconcile()
    assert code == 1 and "top-up fund-bank-10000" in output  # booked behind the gateway's back
    await books.open()  # ...and put on the record at the next start
    await books.crash()
    code, output = books.reconcile()
    assert code == 0, output


class FailingStore(SQLiteStore):
    """The real SQLite store whose writes start failing on demand (a full disk)."""

    failing = False

    def append(self, first_index: int, entries: Any, checkpoints: Any, tiles: Any = ()) -> None:
        if self.failing:
            raise StorageError("injected: disk full")
        super().append(first_index, entries, checkpoints, tiles)


async def test_refund_while_the_log_is_down_is_recorded_once_it_is_back(books: Books) -> None:
    store = FailingStore(books.audit_log)
    meter, auditor = await books.open(store)
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    res = await _paid(meter, rid)
    settled = await meter.settle(res, [REG])
    store.failing = True
    with pytest.raises(AuditUnavailableError):
        await _query_record(auditor, res, settled)
    assert not auditor.available
    await meter.release_all(res, reason="query failed")  # the service's undo
    assert await _balance(meter) == (10_000, 0)
    # Refunded, but the refund could not be recorded: the mark stays.
    assert ("request", rid) in await meter.ledger.run(meter.store.unaudited)
    await books.crash()

    await books.open()  # the disk has room again
    await books.crash()
    (record,) = books.records(rid)
    assert record_movements(record) == Movements(600, 100, 500, 100)
    code, output = books.reconcile()
    assert code == 0, output


async def test_reconcile_names_what_differs_and_nothing_personal(books: Books) -> None:
    meter, auditor = await books.open()
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    res = await _paid(meter, rid)
    settled = await meter.settle(res, [REG])
    await _query_record(auditor, res, settled)
    # A charge on the record that the ledger never booked, under an officer's
    # identity number: the report names the request and the amounts, never the number.
    ghost = str(uuid.uuid4())
    await auditor.append_query(
        None,
        None,
        query_pb2.QueryRequest(
            request_id=ghost, officer_id="11010519491231002X", case_reference="110105491231002"
        ),
        query_pb2.QueryResponse(request_id=ghost),
        None,
        charge_fen=100,
        billing={"reserved_fen": 100, "charged_fen": 100, "state": "settled", "replay": False},
    )
    # ...and the same request charged twice on the record.
    await _query_record(auditor, res, settled)
    await books.crash()
    await books.open()  # records the opening top-up; touches neither request
    await books.crash()
    code, output = books.reconcile()
    assert code == 1
    assert (
        f"request {ghost}: ledger reserve 0, charge 0, release 0, refund 0 fen;"
        " audit log reserve 100, charge 100, release 0, refund 0 fen"
    ) in output
    assert f"request {rid}: charged 2 times" in output
    assert "11010519491231002X" not in output and "110105491231002" not in output
    assert "3 differences" in output
    out = io.StringIO()
    args = ["reconcile", "--strict", "--ledger", str(books.ledger)]
    args += ["--audit-log", str(books.audit_log)]
    assert billing_main([*args, "--json"], out=out, err=out) == 1
    report = json.loads(out.getvalue())
    assert len(report["differences"]) == 3 and report["charged_fen"] == 100


async def test_bookings_of_an_outage_go_on_the_record_once_the_log_heals(books: Books) -> None:
    store = FailingStore(books.audit_log)
    meter, auditor = await books.open(store)
    # As the gateway wires it (gateway.runtime.assembly), with a short settling time.
    auditor.log.add_listener(lambda ok: meter.audit_healed(settle_s=0.3) if ok else None)
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    res = await _paid(meter, rid)
    settled = await meter.settle(res, [REG])
    store.failing = True
    with pytest.raises(AuditUnavailableError):
        await _query_record(auditor, res, settled)
    await meter.release_all(res, reason="query failed")
    assert ("request", rid) in await meter.ledger.run(meter.store.unaudited)
    store.failing = False  # the disk has room again: the log heals by itself...
    async with asyncio.timeout(20):
        while ("request", rid) in await meter.ledger.run(meter.store.unaudited):
            await asyncio.sleep(0.05)
    assert auditor.available
    await books.crash()  # ...and the refund is on the record without a restart
    (record,) = books.records(rid)
    assert record["event"] == "refund" and record["reason"] == "recovered"
    assert record_movements(record) == Movements(600, 100, 500, 100)


async def test_a_query_in_flight_is_pending_not_a_difference(books: Books) -> None:
    """Reconcile beside a live gateway: a reservation booked and marked, whose
    query record is not written yet, is reported as pending (exit 0); ``--strict``
    (for a stopped gateway's files) counts it as a difference."""
    meter, _auditor = await books.open()
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    await _paid(meter, rid)  # reserved: in flight
    args = ["reconcile", "--ledger", str(books.ledger), "--audit-log", str(books.audit_log)]
    out = io.StringIO()
    assert billing_main(args, out=out, err=out) == 0, out.getvalue()
    text = out.getvalue()
    assert f"pending: request {rid}: still reserved (600 fen held)" in text
    # The request twice (held; its reserve not yet on the record) and the
    # opening top-up, booked offline, which the next start records.
    assert f"pending: request {rid}: ledger reserve 600" in text
    assert "pending: top-up " in text
    assert text.splitlines()[-1].startswith("ledger and audit log agree: 0 differences;")
    assert "; 3 pending (" in text
    out = io.StringIO()
    assert billing_main([*args, "--strict"], out=out, err=out) == 1
    assert f"request {rid}: still reserved (600 fen held)" in out.getvalue()
    assert "pending" not in out.getvalue().splitlines()[0]


async def test_a_record_not_yet_signed_is_pending_not_a_difference(books: Books) -> None:
    """With ``--key`` only signed records are evidence; a booking whose record is
    in the unsigned tail of a live log (signed within a second) is pending."""
    meter, auditor = await books.open(checkpoint_interval=3600)
    await fund(meter, "bank", 10_000)
    rid = str(uuid.uuid4())
    res = await _paid(meter, rid)
    settled = await meter.settle(res, [REG])
    await _query_record(auditor, res, settled)
    await meter.ledger.run(meter.ledger.store.mark_audited, "request", rid)
    args = ["reconcile", "--ledger", str(books.ledger), "--audit-log", str(books.audit_log)]
    out = io.StringIO()
    assert billing_main(args, out=out, err=out) == 0, out.getvalue()
    assert rid not in out.getvalue()  # unverified, every record counts: it agrees
    out = io.StringIO()
    assert billing_main([*args, "--key", str(books.vkey)], out=out, err=out) == 0
    assert f"pending: request {rid}: ledger reserve 600" in out.getvalue()
    out = io.StringIO()
    assert billing_main([*args, "--key", str(books.vkey), "--strict"], out=out, err=out) == 1
