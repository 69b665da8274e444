"""Steps 4 (meter) and 7 (settle) of the query pipeline.

::

    meter = await Meter.open(ledger_path, load_prices(), on_event=audit_hook)
    reservation = await meter.reserve(request_id=..., agency_id=..., mode="paid",
                                      lines=granted_lines(decision), today=today)
    try:
        ...ask only for reservation.deliverable...
        settlement = await meter.settle(reservation, delivered_lines(decision, outcomes))
        settlement.to_proto()          # -> QueryResponse.charge
        ...audit, respond...
    except BaseException:
        await meter.release_all(reservation)   # a failed query costs nothing
        raise

The rules, and why:

* **Reserve before asking.** Paid: the list price of every granted dataset is
  held on the agency's account; the query is refused with
  InsufficientBalanceError (FAILED_PRECONDITION, metadata ``needed_fen``,
  ``available_fen``) if the account cannot cover it. Free: one unit of the
  agency's daily quota (QuotaExhaustedError, RESOURCE_EXHAUSTED, metadata
  ``resets_at`` = next local midnight). Self-query (Art. 17): one of the
  subject's free reports of the calendar year, counted by the subject's keyed
  pseudonym; when they are used, a paid-mode query pays the list price and a
  free-mode one is refused until 1 January.
* **Charge what was delivered.** A department that answered OK or NOT_FOUND
  delivered: it did the work, and "holds nothing about the subject" is
  information the agency paid to learn. UNAVAILABLE, TIMED_OUT and WITHHELD
  departments delivered nothing and cost nothing; their lines are released. A
  query of which nothing was delivered is released entirely and gives its
  free unit back.
* **Once per request id.** A request id already reserved or settled returns
  the original reservation or settlement and books nothing, also after a
  restart. A retry of a settled request should ask only for what was paid
  (``reservation.deliverable``): the response of the first attempt may have
  been lost, and the retry is how the agency gets what it paid for. A request
  id whose attempt was released (nothing charged, nothing delivered) may be
  tried again.
* **Nothing is lost in a crash, nothing is off the record.** A paid
  settlement is booked before the audit append, and the append before the
  response leaves. A free one (free quota or self-allowance: 0 fen, the unit
  already taken at reservation) is settled in memory, carried by the query
  record, and booked together with the clearing of the mark once that record is
  durable (:meth:`Meter.recorded`: one batched ledger call for many queries), so
  a free query costs one ledger transaction of its own, not two. So a
  reservation found still open at start-up (:meth:`Meter.recover`) is settled as
  its query record says if that record is on the log (a free query answered,
  its unit stays used), and released otherwise (no answer left). A free query
  of which nothing was delivered is released in the ledger at once (its unit
  given back before the record). Every
  booking marks its request in the ledger (``unaudited``) in its own
  transaction, and the mark is cleared only once the audit record carrying it
  is durable (the query record, or a billing event). At start-up the marked
  bookings are looked up in the audit log: a settlement without its query
  record was never disclosed and is refunded; whatever moved and is not on the
  record gets a billing record saying so (its ``movements``), so that the
  ledger and the log tell the same story (``credit-gateway billing reconcile``).

Why one module (some 800 lines): booking (reserve, settle, release) and start-up
recovery keep one rule together: every booking marks its request ``unaudited`` in the
ledger, and the mark is cleared only once the audit record carrying it is durable; recovery
reads exactly those marks (and settles a free reservation the way its record says, which
is what lets a free settlement wait for the record). Apart, neither half shows how the
other keeps the rule. The values the meter hands the pipeline are in
:mod:`gateway.billing.charges`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from gateway.audit.schema import (
    BILLED_KINDS,
    BillingLine,
    BillingRecord,
    QueryBilling,
    QueryRecord,
)
from gateway.billing.charges import (
    Mode,
    Reservation,
    Settlement,
    reservation_of,
    settlement_of,
)
from gateway.billing.ledger import (
    AsyncLedger,
    Basis,
    LedgerStore,
    PricedLine,
    RecordedSettlement,
    RequestRecord,
    ReserveResult,
    ReserveSpec,
    UnauditedKind,
)
from gateway.billing.ledger._rules import QUOTA_BASES
from gateway.billing.prices import PriceList
from gateway.billing.reconcile import Movements, ledger_movements, record_movements
from gateway.errors import ConflictError, InternalError, InvalidArgumentError, LedgerError

__all__ = ["AuditLookup", "EventHook", "Meter"]

log = logging.getLogger("credit_gateway.billing")

#: An async callback handed every billing event (a dict of str/int/list, no floats).
EventHook = Callable[[dict[str, Any]], Awaitable[None]]
#: Start-up recovery's view of the audit log: given bookings as
#: ``("request", request_id)`` / ``("top_up", reference)``, every decoded audit
#: record about each (query records with a ``billing`` block, billing events).
AuditLookup = Callable[
    [Sequence[tuple[UnauditedKind, str]]],
    Awaitable[Mapping[tuple[str, str], Sequence[Mapping[str, Any]]]],
]
#: Seconds after the audit log heals before the bookings of the outage are put on
#: the record: longer than any query in flight (the fan-out is bounded by seconds).
HEALED_SETTLE_S = 60.0

#: A pseudonym is an HMAC, never an identifier: identifiers are 18 characters.
_MIN_SUBJECT_KEY = 32


@dataclasses.dataclass(frozen=True, slots=True)
class _Pending:
    """A free settlement made in memory, until the ledger books it."""

    booking: RecordedSettlement
    settlement: Settlement
    #: Its query record is durable: the booking is queued (Meter.recorded).
    recorded: bool = False


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Meter:
    """Reserves, settles and releases the cost of queries on a ledger.

    ``on_event`` receives one dict per booking that no query record carries
    (a release or refund of a failed query, a recovery), after it is durable,
    for the audit log; each carries ``movements`` (:class:`Movements` as a
    dict: what the record stands for in the ledger). A query's own reservation
    and settlement make no event: its query record carries them (the caller
    builds the block with :func:`gateway.billing.charges.query_billing`).
    ``audit_lookup`` lets :meth:`recover` read the audit log; with it, free
    settlements are booked lazily (see the module docstring), since only then
    can recovery settle an open free reservation from its query record. ``clock`` gives the
    (timezone-aware) time of ledger entries; the local date that quotas count
    is the ``today`` the caller passes.
    """

    def __init__(
        self,
        ledger: AsyncLedger,
        prices: PriceList,
        *,
        on_event: EventHook | None = None,
        audit_lookup: AuditLookup | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self._on_event = on_event
        self._audit_lookup = audit_lookup
        self._clock = clock
        # Undo-bookings started from done-callbacks; kept so they are not
        # garbage-collected before they finish.
        self._background: set[asyncio.Future[Any]] = set()
        # Free settlements are booked after their query record only where
        # recovery can read that record back.
        self._lazy = audit_lookup is not None
        # Free settlements made in memory, by request id (on the loop only):
        # from settle() until the ledger has booked them (or the query failed).
        self._pending: dict[str, _Pending] = {}
        # Request ids whose query records are durable, and the free settlements
        # they carry, waiting for one ledger call to book them and clear their
        # marks (appended on the loop, taken on the ledger thread).
        self._recorded: list[str] = []
        self._recorded_settled: list[RecordedSettlement] = []
        self._recorded_flush = False
        self._recorded_lock = threading.Lock()
        self._healed: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str] | LedgerStore,
        prices: PriceList,
        *,
        on_event: EventHook | None = None,
        audit_lookup: AuditLookup | None = None,
        clock: Callable[[], datetime] = _utcnow,
        recover: bool = True,
        recover_older_than: timedelta | None = None,
    ) -> Meter:
        """Open the SQLite ledger at ``path`` (or drive the open store ``path``, such
        as a :class:`~gateway.stores.postgres.ledger.PostgresLedger`) and, with
        ``recover``, release interrupted reservations and put unaudited bookings on
        the record (:meth:`recover`; ``recover_older_than``: its bound, for a ledger
        other processes share). Raises LedgerError, and AuditUnavailableError if a
        recovery record cannot be appended."""
        ledger = await AsyncLedger.open(path)
        meter = cls(ledger, prices, on_event=on_event, audit_lookup=audit_lookup, clock=clock)
        if recover:
            await meter.recover(older_than=recover_older_than)
        return meter

    @property
    def store(self) -> LedgerStore:
        """The ledger store behind :attr:`ledger` (call it only on the ledger thread)."""
        return self.ledger.store

    async def settled(self) -> None:
        """Return once every booking started in the background so far (free settlements
        with their marks cleared, :meth:`recorded`; undone reservations) has landed or
        failed. Never raises."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        """Wait for background bookings (one more try for any that failed), then close
        the ledger."""
        if self._healed is not None:
            self._healed.cancel()  # the next start-up does it
        await self.settled()
        with self._recorded_lock:
            left = bool(self._recorded) and not self._recorded_flush
        if left and not self.ledger.closed:
            try:
                await self.ledger.run(self._clear_recorded)
            except Exception:  # the marks stay; start-up recovery books them from the records
                log.exception("bookings left for start-up recovery")
        await self.ledger.close()

    # --- start-up ------------------------------------------------------------------

    async def recover(self, *, older_than: timedelta | None = None) -> list[str]:
        """Close what a stopped process left open; returns the request ids released,
        refunded or settled.

        Rules: a paid settlement precedes the audit append, which precedes the
        response; a free one is booked after its query record is durable. So
        an open reservation whose query record (of the same attempt) is on the
        log is a free query answered, or about to be: it is settled as that
        record's ``billing`` block says (its free unit stays used); any other
        open reservation is a query whose response never left the gateway: it
        is released. With ``audit_lookup``, every booking
        marked unaudited is looked up in the audit log: a settlement whose
        query record is not there was never disclosed and is refunded (its
        free unit given back); then whatever the ledger moved for the booking
        beyond what the log records is appended as a billing record
        (``reason: "recovered"``), and the mark is cleared. Without
        ``audit_lookup`` only open reservations are released.

        With one gateway process per ledger (SQLite), call it at start-up with
        no ``older_than``; processes sharing a ledger must pass a bound longer
        than any query's deadline so that they never touch each other's
        queries in flight. Raises LedgerError, and whatever ``on_event`` or
        ``audit_lookup`` raise (AuditUnavailableError): then start-up fails,
        and the next start-up finds the same marks.
        """
        cutoff = None if older_than is None else self._clock() - older_than
        open_ids = [r.request_id for r in await self.ledger.run(self.store.interrupted, cutoff)]
        done: list[str] = []
        if self._audit_lookup is None:
            for rid in open_ids:
                if await self._recover_request(rid, None):
                    done.append(rid)
        else:
            marks = await self.ledger.run(self.store.unaudited, cutoff)
            keys = list(dict.fromkeys([*(("request", r) for r in open_ids), *marks]))
            found = await self._audit_lookup(keys) if keys else {}
            for kind, ref in keys:
                records = found.get((kind, ref), ())
                if kind == "top_up":
                    await self._recover_top_up(ref, records)
                elif await self._recover_request(ref, records):
                    done.append(ref)
        if done:
            log.warning("recovered interrupted bookings", extra={"count": len(done)})
        return done

    def audit_healed(self, *, settle_s: float = HEALED_SETTLE_S) -> None:
        """The audit log takes appends again after a failure (call on the event
        loop): in ``settle_s`` seconds, put on the record what was booked while
        it was down (refunds and releases of the queries it failed), as
        :meth:`recover` does at start-up, limited to bookings older than
        ``settle_s``, so that no query still in flight is touched. ``settle_s``
        must exceed the longest query (the fan-out timeout bounds it)."""
        if self._healed is not None and not self._healed.done():
            return
        self._healed = asyncio.get_running_loop().create_task(
            self._record_after_outage(settle_s), name="billing-after-audit-outage"
        )

    async def _record_after_outage(self, settle_s: float) -> None:
        await asyncio.sleep(settle_s)
        try:
            await self.recover(older_than=timedelta(seconds=settle_s))
        except Exception:  # the marks stay; the next start-up records them
            log.exception("could not record the bookings of an audit outage")

    async def _recover_request(
        self, request_id: str, records: Sequence[Mapping[str, Any]] | None
    ) -> bool:
        rec = await self.ledger.run(self.store.request, request_id)
        if rec is None:
            await self.ledger.run(self.store.mark_audited, "request", request_id)
            return False
        moved = False
        event = "release"
        recorded = None
        if rec.state == "reserved" and records is not None:
            recorded = _settled_on_record(records, rec.attempts)
        if recorded is not None:
            # A free query whose record is durable, its lazy settlement not yet
            # booked: book it as recorded (what was delivered stays used).
            delivered = frozenset((x.department, x.dataset) for x in recorded.lines or ())
            settled = await self.ledger.run(
                self.store.settle, request_id, delivered, self._clock(), attempt=rec.attempts
            )
            moved = not settled.replay
        elif rec.state == "reserved":
            result = await self.ledger.run(
                self.store.release,
                request_id,
                self._clock(),
                note="interrupted; released at start-up",
            )
            moved = result.changed
        elif (
            rec.state == "settled"
            and records is not None
            and _settled_on_record(records, None) is None
        ):
            # Settled, but its query record never became durable: the answer
            # never left, so the query costs nothing (free unit included).
            result = await self.ledger.run(
                self.store.release,
                request_id,
                self._clock(),
                refund=True,
                note="settled but not on the audit log; refunded at start-up",
            )
            moved = result.changed
            event = "refund"
        after = await self.ledger.run(self.store.request, request_id)
        assert after is not None
        if records is None:
            # No audit log to read: record the release itself, as before.
            if moved:
                amount = after.reserved_fen
                await self._emit_quietly(
                    event,
                    after,
                    amount,
                    reason="recovered",
                    movements=Movements(reserve=amount, release=amount),
                )
            return moved
        entries = await self.ledger.run(self.store.entries, None, request_id)
        missing = ledger_movements(entries) - sum(
            (record_movements(r) for r in records), Movements()
        )
        if any(v < 0 for v in missing.as_dict().values()):
            # The log records more than the ledger moved: not for recovery to
            # guess; `billing reconcile` shows it.
            log.error("audit log and ledger disagree", extra={"request_id": request_id[:64]})
            return moved
        if missing or (moved and recorded is None):
            # (A settlement booked as its query record says adds nothing to the record.)
            if event == "release" and missing.refund:
                event = "refund"
            await self._emit(
                event, after, missing.refund or missing.release, "recovered", movements=missing
            )
        await self.ledger.run(self.store.mark_audited, "request", request_id)
        return moved

    async def _recover_top_up(self, reference: str, records: Sequence[Mapping[str, Any]]) -> None:
        if not any(r.get("event") == "top_up" for r in records):
            entry = await self.ledger.run(self.store.top_up_entry, reference)
            if entry is not None:
                # Booked offline (``credit-gateway billing top-up``) or its
                # record was lost: put it on the record now.
                await self._emit_event(
                    BillingRecord(
                        event="top_up",
                        request_id="",
                        reference=entry.reference,
                        agency_id=entry.account_id,
                        amount_fen=entry.amount_fen,
                        balance_fen=entry.balance_fen,
                        actor=entry.actor,
                        at=entry.at.isoformat(),
                        reason="recorded at start-up",
                    ).to_json()
                )
        await self.ledger.run(self.store.mark_audited, "top_up", reference)

    # --- step 4 ------------------------------------------------------------------

    async def reserve(
        self,
        *,
        request_id: str,
        agency_id: str,
        mode: Mode,
        lines: Sequence[tuple[str, str]],
        today: date,
        self_query_subject_key: str | None = None,
        request_digest: str = "",
        quota_key: str | None = None,
    ) -> Reservation:
        """Reserve the cost of a query before any department is asked.

        ``lines`` are the granted (department, dataset) pairs; ``today`` the
        gateway's local date. ``self_query_subject_key`` is the subject's HMAC
        pseudonym when the subject queries itself (never the identifier).
        ``request_digest`` optionally identifies the request's content (e.g. a
        hash of subject and datasets): a reused request id with another digest
        is refused. ``quota_key`` counts free-mode units under another key than
        the agency id (screens count apart from queries: ``screening:<agency>``).

        Returns the reservation, or, for a request id seen before, the
        original one (``replay``; with ``settlement`` if it was settled).
        Raises InvalidArgumentError (bad id or mode, request id reused for a
        different request), InsufficientBalanceError, QuotaExhaustedError,
        ConfigError (a dataset without a price), LedgerError, and ConflictError
        (ABORTED) when the first attempt of the request id is still being answered.
        """
        _check_id(request_id, "request_id")
        _check_id(agency_id, "agency_id")
        if mode not in ("free", "paid"):
            raise InvalidArgumentError("mode", "must be free or paid")
        keys = list(dict.fromkeys(lines))  # dedupe, keep order
        for dept, ds in keys:
            if not dept or not ds:
                raise InvalidArgumentError("datasets", "department and dataset must be named")
        if self_query_subject_key is not None and len(self_query_subject_key) < _MIN_SUBJECT_KEY:
            # The caller's bug, not the agency's: an identifier must never be stored.
            raise InternalError("self_query_subject_key must be a keyed pseudonym (HMAC)")

        tz = self.prices.timezone
        spec_args: dict[str, Any] = {}
        if self_query_subject_key is not None:
            basis: Basis = "self_allowance"
            spec_args = {
                "quota_key": self_query_subject_key,
                "period": f"{today.year:04d}",
                "quota_limit": self.prices.self_free_per_year,
                "resets_at": datetime(today.year + 1, 1, 1, tzinfo=tz).isoformat(),
                "paid_fallback": mode == "paid",
            }
        elif mode == "free":
            basis = "free_quota"
            spec_args = {
                "quota_key": quota_key or agency_id,
                "period": today.isoformat(),
                "quota_limit": self.prices.free_daily_quota(agency_id),
                "resets_at": datetime.combine(today + timedelta(days=1), time(0), tz).isoformat(),
            }
        else:
            basis = "paid"
        priced = tuple(
            PricedLine(d, s, self.prices.price(d, s) if mode == "paid" else 0) for d, s in keys
        )
        if not priced:
            # Nothing granted: nothing to meter, and no free unit is used.
            return Reservation(request_id, agency_id, mode, basis, (), 0, 0, 0)

        digest = hashlib.sha256(
            json.dumps([agency_id, mode, self_query_subject_key or "", request_digest]).encode()
        ).hexdigest()
        spec = ReserveSpec(
            request_id=request_id,
            account_id=agency_id,
            basis=basis,
            lines=priced,
            digest=digest,
            at=self._clock(),
            **spec_args,
        )
        fut = self.ledger.submit(self.store.reserve, spec)
        try:
            result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The booking may still commit; nobody would ever settle it, so
            # undo it as soon as it does.
            fut.add_done_callback(self._undo_abandoned)
            raise
        reservation = reservation_of(result, mode)
        if result.replay and result.record.state == "reserved":
            settled = await self._recorded_settlement(request_id, result.record.attempts)
            if settled is not None:
                # The first attempt is answered and on the record, its free
                # settlement booked lazily: replay exactly that settlement
                # (never more than it delivered).
                return dataclasses.replace(reservation, settlement=settled)
            # The first attempt is still in flight: replaying it would let this
            # copy read the data while the first may still release and pay nothing.
            raise ConflictError(
                "a query with this request id is still being answered; retry when it is done",
                metadata={"request_id": request_id},
            )
        # A query's own reservation makes no billing event: its query record carries it.
        return reservation

    async def _recorded_settlement(self, request_id: str, attempt: int) -> Settlement | None:
        """The settlement of ``attempt`` if its query record is durable: from memory
        while its lazy booking is under way, else as the ledger holds it now (the
        booking may have landed since the reservation read the row)."""
        pending = self._pending.get(request_id)
        if pending is None or not pending.recorded:
            rec = await self.ledger.run(self.store.request, request_id)
            if rec is not None and rec.state == "settled" and rec.attempts == attempt:
                return settlement_of(rec, replay=True)
            pending = self._pending.get(request_id)
        if pending is not None and pending.recorded and pending.booking.attempt == attempt:
            return dataclasses.replace(pending.settlement, replay=True)
        return None

    def _undo_abandoned(self, fut: asyncio.Future[ReserveResult]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        result = fut.result()
        if result.replay:
            return
        undo = asyncio.ensure_future(self._release_abandoned(result.record))
        self._background.add(undo)
        undo.add_done_callback(self._background_done)

    async def _release_abandoned(self, rec: RequestRecord) -> None:
        # The caller went away while its reservation was being booked: give
        # it back and put both on the record (no query record will carry them).
        try:
            result = await self.ledger.run(
                self.store.release,
                rec.request_id,
                self._clock(),
                note="caller went away",
                attempt=rec.attempts,
            )
        except (RuntimeError, LedgerError):  # the ledger is closing; recovery releases it
            log.warning("abandoned reservation left for recovery")
            return
        if result.changed:
            await self._emit_quietly(
                "release",
                result.record,
                result.released_fen,
                reason="caller went away",
                movements=Movements(reserve=result.released_fen, release=result.released_fen),
            )

    def _background_done(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            # The marks stay: start-up recovery releases an abandoned reservation,
            # or settles a recorded free one as its record says; nothing is lost.
            log.error("a background booking failed; recovery completes it", exc_info=exc)

    # --- step 7 ------------------------------------------------------------------

    async def settle(
        self, reservation: Reservation, delivered: Iterable[tuple[str, str]]
    ) -> Settlement:
        """Charge the reserved datasets in ``delivered``; release the rest.

        Datasets that were not reserved are never charged. Settling a request
        already settled returns the original settlement (``replay``) and books
        nothing. A free settlement with something delivered (0 fen; the unit was
        taken at reservation) is made in memory when the meter can read the
        audit log back (``audit_lookup``): the ledger books it once its query
        record is durable (:meth:`recorded`), or releases it if the query fails
        (:meth:`release_all`); anything else is booked now. Raises
        NotFoundError (unknown reservation) and LedgerError.
        """
        if reservation.empty:
            return Settlement(reservation.request_id, "released", 0, (), 0, 0)
        if reservation.settlement is not None:
            return reservation.settlement
        wanted = frozenset(delivered) & reservation.deliverable
        if (
            self._lazy
            and wanted
            and not reservation.reserved_fen
            and reservation.basis in QUOTA_BASES
            and reservation.attempt > 0
        ):
            settlement = Settlement(
                request_id=reservation.request_id,
                state="settled",
                amount_fen=0,
                lines=tuple(x for x in reservation.lines if x.key in wanted),
                balance_fen=reservation.balance_fen,
                free_remaining=reservation.free_remaining,
            )
            self._pending[reservation.request_id] = _Pending(
                RecordedSettlement(
                    reservation.request_id,
                    reservation.attempt,
                    settlement.lines,
                    settlement.balance_fen,
                    settlement.free_remaining,
                ),
                settlement,
            )
            return settlement
        # A query's own settlement makes no billing event: its query record carries it.
        result = await self.ledger.run(
            self.store.settle,
            reservation.request_id,
            wanted,
            self._clock(),
            attempt=reservation.attempt,
        )
        return settlement_of(result.record, replay=result.replay)

    def recorded(self, reservation: Reservation) -> None:
        """The query record carrying ``reservation`` and its settlement is
        durable: book a free settlement made in memory and clear the booking's
        unaudited mark, in the background and in one ledger call with those of
        other queries recorded meanwhile (a crash before it lands only costs
        start-up recovery one look-up: it settles the reservation as the record
        says). Until it lands, a retry of the request id replays the settlement."""
        if reservation.empty or reservation.replay:
            # A replay's mark, if any, belongs to the first attempt's record.
            return
        rid = reservation.request_id
        pending = self._pending.get(rid)
        if pending is not None and pending.booking.attempt == reservation.attempt:
            self._pending[rid] = dataclasses.replace(pending, recorded=True)
        with self._recorded_lock:
            self._recorded.append(rid)
            if pending is not None and pending.booking.attempt == reservation.attempt:
                self._recorded_settled.append(pending.booking)
            if self._recorded_flush:
                return
            self._recorded_flush = True
        try:
            fut = self.ledger.submit(self._clear_recorded)
        except LedgerError:  # closing: recovery finds the marks and the records
            return
        self._background.add(fut)
        fut.add_done_callback(self._background_done)
        fut.add_done_callback(self._forget)

    def _forget(self, fut: asyncio.Future[list[str]]) -> None:
        # Booked: the ledger now answers a retry. (A failed call was queued
        # again; until a later one lands, a retry replays from memory.)
        if not fut.cancelled() and fut.exception() is None:
            for rid in fut.result():
                self._pending.pop(rid, None)

    def _clear_recorded(self) -> list[str]:
        # On the ledger thread, so that every query recorded until now shares
        # this one call (and, on SQLite, the group commit of other queries' calls).
        with self._recorded_lock:
            ids, self._recorded = self._recorded, []
            settled, self._recorded_settled = self._recorded_settled, []
            self._recorded_flush = False
        try:
            self.store.book_recorded(ids, settled, self._clock())
        except BaseException:
            # Nothing of it happened: the next call books it (or start-up
            # recovery, from the records, if none comes).
            with self._recorded_lock:
                self._recorded[:0] = ids
                self._recorded_settled[:0] = settled
            raise
        return [s.request_id for s in settled]

    async def release_all(
        self, reservation: Reservation, *, reason: str = "", on_record: bool = False
    ) -> Settlement:
        """A denied or failed query costs nothing: release the reservation,
        or, if it was already settled by this attempt, refund the charge.

        ``on_record``: the query record carrying this attempt's settlement is
        durable (the caller went away after it was appended); the billing
        record then stands for the refund alone, else also for the reservation
        and settlement that no record carries.

        Call it only when no response is sent. A replayed reservation is left
        alone: the first attempt owns the outcome. Raises NotFoundError,
        LedgerError; never what ``on_event`` raises (the money is already
        back; the failure is logged and the booking stays marked unaudited,
        for start-up recovery).
        """
        if reservation.empty:
            return Settlement(reservation.request_id, "released", 0, (), 0, 0)
        pending = self._pending.get(reservation.request_id)
        if pending is not None and not pending.recorded and not reservation.replay:
            # Settled in memory only, its record not durable: nothing to book but
            # the release below (the reservation is still open in the ledger).
            del self._pending[reservation.request_id]
        if reservation.replay:
            rec = await self.ledger.run(self.store.request, reservation.request_id)
            if rec is None or rec.state == "reserved":
                return Settlement(reservation.request_id, "released", 0, (), 0, 0, replay=True)
            return settlement_of(rec, replay=True)
        result = await self.ledger.run(
            self.store.release,
            reservation.request_id,
            self._clock(),
            refund=True,
            note=reason or "query failed; nothing delivered",
            attempt=reservation.attempt,
        )
        rec = result.record
        reserved = rec.reserved_fen
        if result.changed and result.refunded_fen:
            charged = result.refunded_fen
            moved = Movements(refund=charged)
            if not on_record:
                moved = Movements(reserved, charged, reserved - charged, charged)
            await self._emit_quietly("refund", rec, charged, reason=reason, movements=moved)
        elif result.changed:
            await self._emit_quietly(
                "release",
                rec,
                result.released_fen,
                reason=reason,
                movements=Movements(reserve=result.released_fen, release=result.released_fen),
            )
        elif rec.state == "released" and rec.attempts == reservation.attempt and not on_record:
            # Settled with nothing delivered (released), and the query record
            # carrying that never became durable: record it here.
            await self._emit_quietly(
                "release",
                rec,
                reserved,
                reason=reason,
                movements=Movements(reserve=reserved, release=reserved),
            )
        return settlement_of(rec, replay=not result.changed)

    # --- events ------------------------------------------------------------------

    def _event(
        self,
        kind: str,
        rec: RequestRecord,
        amount_fen: int,
        reason: str,
        movements: Movements,
    ) -> dict[str, Any]:
        lines = rec.delivered if kind == "charge" else rec.lines
        return BillingRecord(
            event=kind,
            request_id=rec.request_id,
            attempt=rec.attempts,
            agency_id=rec.account_id,
            basis=rec.basis,
            amount_fen=amount_fen,
            movements=movements.as_dict(),
            lines=tuple(BillingLine(x.department, x.dataset, x.amount_fen) for x in lines),
            balance_fen=rec.balance_fen,
            free_remaining=rec.free_remaining,
            at=rec.updated_at.isoformat(),
            reason=reason or None,
        ).to_json()

    async def _emit(
        self,
        kind: str,
        rec: RequestRecord,
        amount_fen: int,
        reason: str = "",
        *,
        movements: Movements,
    ) -> None:
        await self._emit_event(self._event(kind, rec, amount_fen, reason, movements))
        # This record carries every movement of the booking not yet on the log.
        await self.ledger.run(self.store.mark_audited, "request", rec.request_id)

    async def _emit_event(self, event: dict[str, Any]) -> None:
        if self._on_event is not None:
            await self._on_event(event)

    async def _emit_quietly(
        self,
        kind: str,
        rec: RequestRecord,
        amount_fen: int,
        reason: str = "",
        *,
        movements: Movements,
    ) -> None:
        try:
            await self._emit(kind, rec, amount_fen, reason, movements=movements)
        except Exception:
            # Money went back to the agency; the ledger entries record it, and
            # the booking stays marked unaudited: start-up recovery puts it on
            # the record once the log can be written.
            log.exception("billing event not recorded", extra={"request_id": rec.request_id[:64]})


def _settled_on_record(
    records: Sequence[Mapping[str, Any]], attempt: int | None
) -> QueryBilling | None:
    """The billing block of a query record carrying a settlement (not a replay) of
    the request, of ``attempt`` if given (a block without ``attempt``, written
    before it existed, matches none), or None."""
    for r in records:
        if r.get("kind") not in BILLED_KINDS:  # a query's or a screen's record
            continue
        billing = QueryRecord.from_json(r).billing
        if billing is None or billing.state != "settled" or billing.replay:
            continue
        if attempt is None or billing.attempt == attempt:
            return billing
    return None


def _check_id(value: str, field: str) -> None:
    if not value or len(value) > 128 or not value.isprintable():
        raise InvalidArgumentError(field, "must be 1 to 128 printable characters")
