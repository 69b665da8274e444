"""Property: whatever sequence of reserve, settle, record, cancel, audit-log failure
and crash-restart happens, after each restart the ledger and the audit log tell
the same story (``reconcile`` finds 0 differences) and no query that was not
disclosed (no durable query record) is charged.

Real ledger and audit log files, the real QueryAuditor; the steps are those the
query service takes (gateway.pipeline.query: _reserve, _answer, _undo).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.audit.auditor import QueryAuditor
from gateway.audit.errors import StorageError
from gateway.audit.log import AuditLog
from gateway.audit.note import Ed25519Signer, generate_key
from gateway.billing import Meter, Reservation, Settlement, parse_prices
from gateway.billing.reconcile import ledger_movements, read_records, reconcile
from gateway.errors import GatewayError, InsufficientBalanceError
from gateway.stores.sqlite.audit import SQLiteStore
from protos.credit.v1 import query_pb2
from tests.unit.billing.conftest import PRICES_DOC, TODAY

LINES = [("market", "registration"), ("tax", "arrears"), ("court", "dishonest_debtors")]
SKEY, _ = generate_key("stateful.test/audit")


class _Store(SQLiteStore):
    failing = False

    def append(self, first_index: int, entries: Any, checkpoints: Any, tiles: Any = ()) -> None:
        if self.failing:
            raise StorageError("injected: disk full")
        super().append(first_index, entries, checkpoints, tiles)


class Bookings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bookings-"))
        self.loop = asyncio.new_event_loop()
        self.prices = parse_prices(PRICES_DOC)
        # Queries in flight: request id -> (reservation, settlement or None).
        self.flight: dict[str, tuple[Reservation, Settlement | None]] = {}
        self.issued = 0
        self.run(self._start())
        assert self.meter is not None
        self.run(
            self.meter.ledger.run(
                self.meter.store.top_up, "bank", 5_000, "open", self.meter._clock(), create=True
            )
        )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        self.store = _Store(self.dir / "audit.db")
        log = await AuditLog.open(None, Ed25519Signer.from_key_string(SKEY), store=self.store)
        self.auditor = QueryAuditor(log, b"k" * 32, gateway_origin=log.origin)
        self.meter = await Meter.open(
            self.dir / "ledger.db",
            self.prices,
            on_event=self.auditor.record_billing,
            audit_lookup=self.auditor.billing_records,
        )

    async def _stop(self) -> None:
        await self.meter.ledger.close()  # no wait for anything in flight: a crash
        with contextlib.suppress(GatewayError):
            await self.auditor.log.close()

    # --- the service's steps ---------------------------------------------------------

    @rule(lines=st.lists(st.sampled_from(LINES), min_size=1, max_size=3, unique=True))
    def reserve(self, lines: list[tuple[str, str]]) -> None:
        if not self.auditor.available:
            return  # the service refuses before booking anything
        # Deterministic ids: hypothesis replays a failing sequence exactly.
        self.issued += 1
        rid = str(uuid.UUID(int=self.issued))
        try:
            res = self.run(
                self.meter.reserve(
                    request_id=rid, agency_id="bank", mode="paid", lines=lines, today=TODAY
                )
            )
        except InsufficientBalanceError:
            return
        self.flight[rid] = (res, None)

    @precondition(lambda self: any(s is None for _, s in self.flight.values()))
    @rule(data=st.data(), delivered=st.lists(st.sampled_from(LINES), unique=True))
    def settle(self, data: st.DataObject, delivered: list[tuple[str, str]]) -> None:
        rid = data.draw(
            st.sampled_from(sorted(r for r, (_, s) in self.flight.items() if s is None))
        )
        res, _ = self.flight[rid]
        self.flight[rid] = (res, self.run(self.meter.settle(res, delivered)))

    def _append(self, res: Reservation, settled: Settlement) -> bool:
        """Step 8: the query record; True once durable."""
        rid = res.request_id
        try:
            self.run(
                self.auditor.append_query(
                    None,
                    None,
                    query_pb2.QueryRequest(request_id=rid),
                    query_pb2.QueryResponse(request_id=rid),
                    None,
                    charge_fen=settled.amount_fen,
                    billing={
                        "basis": res.basis,
                        "reserved_fen": res.reserved_fen,
                        "charged_fen": settled.amount_fen,
                        "state": settled.state,
                        "replay": False,
                    },
                )
            )
        except GatewayError:
            return False

        async def recorded() -> None:
            self.meter.recorded(res)  # clears the mark in the background, as the service does

        self.run(recorded())
        return True

    @precondition(lambda self: any(s is not None for _, s in self.flight.values()))
    @rule(data=st.data())
    def record(self, data: st.DataObject) -> None:
        """Step 8 and the answer; on failure the service's undo (nothing on the record)."""
        ready = sorted(r for r, (_, s) in self.flight.items() if s is not None)
        rid = data.draw(st.sampled_from(ready))
        res, settled = self.flight.pop(rid)
        assert settled is not None
        if not self._append(res, settled):
            self.run(self.meter.release_all(res, reason="query failed"))

    @precondition(lambda self: bool(self.flight))
    @rule(data=st.data(), after_record=st.booleans())
    def cancel(self, data: st.DataObject, after_record: bool) -> None:
        """The caller goes away: before its settlement was recorded, or (with
        ``after_record``) once its query record was appended, before the answer left."""
        rid = data.draw(st.sampled_from(sorted(self.flight)))
        res, settled = self.flight.pop(rid)
        on_record = after_record and settled is not None and self._append(res, settled)
        self.run(self.meter.release_all(res, reason="caller went away", on_record=on_record))

    @rule()
    def fail_log(self) -> None:
        self.store.failing = True

    @rule()
    def crash_and_restart(self) -> None:
        self.run(self._stop())
        self.flight.clear()
        self.run(self._start())  # the disk works again; recovery runs
        records, _ = read_records(self.dir / "audit.db")  # no key: every record
        report = reconcile(self.meter.store, records)
        assert report.differences == []
        # An undisclosed query is never charged.
        disclosed = {
            r["request_id"]
            for r in records
            if r.get("kind") == "query" and r["billing"]["state"] == "settled"
        }
        for rid in {
            e.request_id for e in self.run(self.meter.ledger.run(self.meter.store.entries))
        }:
            if not rid:
                continue
            moved = ledger_movements(
                self.run(self.meter.ledger.run(self.meter.store.entries, None, rid))
            )
            if moved.charge > moved.refund:
                assert rid in disclosed

    @invariant()
    def balances_are_consistent(self) -> None:
        assert self.run(self.meter.ledger.run(self.meter.store.check)) == []

    def teardown(self) -> None:
        try:
            self.crash_and_restart()
        finally:
            self.run(self._stop())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


Bookings.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBookings = Bookings.TestCase
