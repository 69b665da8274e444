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
* **Nothing is lost in a crash.** Settlement happens before the response
  leaves; so a reservation found still open at start-up (:meth:`Meter.recover`)
  belongs to a query whose response was never sent, and is released.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, Protocol

from gateway.billing.ledger import (
    AsyncLedger,
    Basis,
    LedgerStore,
    PricedLine,
    RequestRecord,
    ReserveResult,
    ReserveSpec,
)
from gateway.billing.prices import PriceList
from gateway.decision import Decision
from gateway.errors import ConflictError, InternalError, InvalidArgumentError, LedgerError
from protos.credit.v1 import query_pb2

__all__ = [
    "DELIVERED_STATUSES",
    "ChargeLine",
    "EventHook",
    "Meter",
    "Mode",
    "Reservation",
    "Settlement",
    "delivered_lines",
    "granted_lines",
    "mode_name",
]

log = logging.getLogger("credit_gateway.billing")

Mode = Literal["free", "paid"]
#: An async callback handed every billing event (a dict of str/int/list, no floats).
EventHook = Callable[[dict[str, Any]], Awaitable[None]]
ChargeLine = PricedLine

#: Section statuses that count as delivered (and are charged).
DELIVERED_STATUSES: frozenset[int] = frozenset(
    {query_pb2.SECTION_STATUS_OK, query_pb2.SECTION_STATUS_NOT_FOUND}
)

#: A pseudonym is an HMAC, never an identifier: identifiers are 18 characters.
_MIN_SUBJECT_KEY = 32


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a request cost; :meth:`to_proto` gives the response's ``Charge``."""

    request_id: str
    #: "settled" (something was delivered) or "released" (nothing was charged).
    state: Literal["settled", "released"]
    amount_fen: int
    lines: tuple[ChargeLine, ...]
    #: The account's balance after the charge (0 if the agency has no account).
    balance_fen: int
    #: Free units left: today's quota (free mode) or this year's self-queries.
    free_remaining: int
    #: True if this is the stored outcome of an earlier call: nothing was booked now.
    replay: bool = False

    def to_proto(self) -> query_pb2.Charge:
        charge = query_pb2.Charge(
            amount_fen=self.amount_fen,
            balance_fen=self.balance_fen,
            free_remaining=self.free_remaining,
        )
        for line in self.lines:
            charge.lines.add(
                department=line.department, dataset=line.dataset, amount_fen=line.amount_fen
            )
        return charge


@dataclass(frozen=True, slots=True)
class Reservation:
    """What :meth:`Meter.reserve` holds for a request; pass it to settle/release_all."""

    request_id: str
    agency_id: str
    mode: Mode
    basis: Basis
    #: Every reserved dataset at the amount it will cost if delivered.
    lines: tuple[ChargeLine, ...]
    reserved_fen: int
    balance_fen: int
    free_remaining: int
    #: True if the request id was seen before: this is the original reservation.
    replay: bool = False
    #: Set if the request id was already settled: its original outcome.
    settlement: Settlement | None = None
    #: Which attempt under this request id (a released id may be tried again).
    attempt: int = 0

    @property
    def deliverable(self) -> frozenset[tuple[str, str]]:
        """What may be asked for: the reserved lines, or, when replaying a
        settled request, only what was paid for."""
        lines = self.settlement.lines if self.settlement is not None else self.lines
        return frozenset(x.key for x in lines)

    @property
    def empty(self) -> bool:
        return not self.lines


class _HasStatus(Protocol):
    @property
    def status(self) -> int: ...


def granted_lines(decision: Decision) -> list[tuple[str, str]]:
    """Every (department, dataset) the decision allows, in a stable order."""
    return sorted((dept, ds) for dept, dd in decision.departments.items() for ds in dd.allowed)


def delivered_lines(
    decision: Decision, outcomes: Mapping[str, _HasStatus]
) -> list[tuple[str, str]]:
    """The allowed datasets of every department whose outcome is OK or NOT_FOUND."""
    out: list[tuple[str, str]] = []
    for dept, outcome in outcomes.items():
        dd = decision.departments.get(dept)
        if dd is not None and outcome.status in DELIVERED_STATUSES:
            out.extend((dept, ds) for ds in dd.allowed)
    return sorted(out)


def mode_name(mode: int) -> Mode:
    """``query_pb2.QueryMode`` -> "free" | "paid". Raises InvalidArgumentError."""
    if mode == query_pb2.QUERY_MODE_FREE:
        return "free"
    if mode == query_pb2.QUERY_MODE_PAID:
        return "paid"
    raise InvalidArgumentError("mode", "must be QUERY_MODE_FREE or QUERY_MODE_PAID")


class Meter:
    """Reserves, settles and releases the cost of queries on a ledger.

    ``on_event`` receives one dict per booking (reserve, charge, release,
    refund), after it is durable, for the audit log. ``clock`` gives the
    (timezone-aware) time of ledger entries; the local date that quotas count
    is the ``today`` the caller passes.
    """

    def __init__(
        self,
        ledger: AsyncLedger,
        prices: PriceList,
        *,
        on_event: EventHook | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self._on_event = on_event
        self._clock = clock
        # Undo-bookings started from done-callbacks; kept so they are not
        # garbage-collected before they finish.
        self._background: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        prices: PriceList,
        *,
        on_event: EventHook | None = None,
        clock: Callable[[], datetime] = _utcnow,
        recover: bool = True,
    ) -> Meter:
        """Open the SQLite ledger at ``path`` and, with ``recover``, release
        interrupted reservations (:meth:`recover`). Raises LedgerError."""
        ledger = await AsyncLedger.open(path)
        meter = cls(ledger, prices, on_event=on_event, clock=clock)
        if recover:
            await meter.recover()
        return meter

    @property
    def store(self) -> LedgerStore:
        return self.ledger.store

    async def close(self) -> None:
        """Wait for background bookings, then close the ledger."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.ledger.close()

    # --- start-up ------------------------------------------------------------------

    async def recover(self, *, older_than: timedelta | None = None) -> list[str]:
        """Release every reservation left open by a stopped process; returns their ids.

        Rule: settlement precedes the response, so an open reservation is a
        query whose response never left the gateway; nothing was delivered,
        nothing is charged. With one gateway process per ledger (SQLite), call
        it at start-up with no ``older_than``; processes sharing a ledger must
        pass a bound longer than any query's deadline so that they never
        release each other's queries in flight. Raises LedgerError.
        """
        cutoff = None if older_than is None else self._clock() - older_than
        released: list[str] = []
        for rec in await self.ledger.run(self.store.interrupted, cutoff):
            result = await self.ledger.run(
                self.store.release,
                rec.request_id,
                self._clock(),
                note="interrupted; released at start-up",
            )
            if result.changed:
                released.append(rec.request_id)
                await self._emit_quietly(
                    "release", result.record, result.released_fen, reason="recovered"
                )
        if released:
            log.warning("released interrupted reservations", extra={"count": len(released)})
        return released

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
    ) -> Reservation:
        """Reserve the cost of a query before any department is asked.

        ``lines`` are the granted (department, dataset) pairs; ``today`` the
        gateway's local date. ``self_query_subject_key`` is the subject's HMAC
        pseudonym when the subject queries itself (never the identifier).
        ``request_digest`` optionally identifies the request's content (e.g. a
        hash of subject and datasets): a reused request id with another digest
        is refused.

        Returns the reservation, or, for a request id seen before, the
        original one (``replay``; with ``settlement`` if it was settled).
        Raises InvalidArgumentError (bad id or mode, request id reused for a
        different request), InsufficientBalanceError, QuotaExhaustedError,
        ConfigError (a dataset without a price), LedgerError, and whatever
        ``on_event`` raises (the reservation is then released).
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
                "quota_key": agency_id,
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
        if result.replay and result.record.state == "reserved":
            # The first attempt is still in flight: replaying it would let this
            # copy read the data while the first may still release and pay nothing.
            raise ConflictError(
                "a query with this request id is still being answered; retry when it is done",
                metadata={"request_id": request_id},
            )
        reservation = _reservation(result, mode)
        if not result.replay:
            try:
                await self._emit("reserve", result.record, result.record.reserved_fen)
            except BaseException:
                # No audit record, no reservation: fail closed, give it back.
                await self.ledger.run(
                    self.store.release,
                    request_id,
                    self._clock(),
                    note="audit of reservation failed",
                    attempt=result.record.attempts,
                )
                raise
        return reservation

    def _undo_abandoned(self, fut: asyncio.Future[ReserveResult]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        result = fut.result()
        if result.replay:
            return
        try:
            undo = self.ledger.submit(
                self.store.release,
                result.record.request_id,
                self._clock(),
                note="caller went away",
                attempt=result.record.attempts,
            )
        except (RuntimeError, LedgerError):  # the ledger is closing; recovery releases it
            log.warning("abandoned reservation left for recovery")
            return
        self._background.add(undo)
        undo.add_done_callback(self._background_done)

    def _background_done(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            # Start-up recovery releases it instead; nothing is lost.
            log.error("could not release an abandoned reservation", exc_info=exc)

    # --- step 7 ------------------------------------------------------------------

    async def settle(
        self, reservation: Reservation, delivered: Iterable[tuple[str, str]]
    ) -> Settlement:
        """Charge the reserved datasets in ``delivered``; release the rest.

        Datasets that were not reserved are never charged. Settling a request
        already settled returns the original settlement (``replay``) and books
        nothing. Raises NotFoundError (unknown reservation), LedgerError, and
        whatever ``on_event`` raises for the charge: the caller then treats
        the query as failed and calls :meth:`release_all`, which refunds it.
        """
        if reservation.empty:
            return Settlement(reservation.request_id, "released", 0, (), 0, 0)
        if reservation.settlement is not None:
            return reservation.settlement
        wanted = frozenset(delivered) & reservation.deliverable
        result = await self.ledger.run(
            self.store.settle,
            reservation.request_id,
            wanted,
            self._clock(),
            attempt=reservation.attempt,
        )
        settlement = _settlement(result.record, replay=result.replay)
        if not result.replay:
            if result.record.state == "settled":
                await self._emit("charge", result.record, result.record.charged_fen)
            else:
                await self._emit_quietly("release", result.record, reservation.reserved_fen)
        return settlement

    async def release_all(self, reservation: Reservation, *, reason: str = "") -> Settlement:
        """A denied or failed query costs nothing: release the reservation,
        or, if it was already settled by this attempt, refund the charge.

        Call it only when no response is sent. A replayed reservation is left
        alone: the first attempt owns the outcome. Raises NotFoundError,
        LedgerError; never what ``on_event`` raises (the money is already
        back; the failure is logged).
        """
        if reservation.empty:
            return Settlement(reservation.request_id, "released", 0, (), 0, 0)
        if reservation.replay:
            rec = await self.ledger.run(self.store.request, reservation.request_id)
            if rec is None or rec.state == "reserved":
                return Settlement(reservation.request_id, "released", 0, (), 0, 0, replay=True)
            return _settlement(rec, replay=True)
        result = await self.ledger.run(
            self.store.release,
            reservation.request_id,
            self._clock(),
            refund=True,
            note=reason or "query failed; nothing delivered",
            attempt=reservation.attempt,
        )
        if result.changed:
            if result.refunded_fen:
                await self._emit_quietly(
                    "refund", result.record, result.refunded_fen, reason=reason
                )
            else:
                await self._emit_quietly(
                    "release", result.record, result.released_fen, reason=reason
                )
        return _settlement(result.record, replay=not result.changed)

    # --- events ------------------------------------------------------------------

    def _event(self, kind: str, rec: RequestRecord, amount_fen: int, reason: str) -> dict[str, Any]:
        lines = rec.delivered if kind == "charge" else rec.lines
        event: dict[str, Any] = {
            "kind": "billing",
            "event": kind,
            "request_id": rec.request_id,
            "agency_id": rec.account_id,
            "basis": rec.basis,
            "amount_fen": amount_fen,
            "lines": [
                {"department": x.department, "dataset": x.dataset, "amount_fen": x.amount_fen}
                for x in lines
            ],
            "balance_fen": rec.balance_fen,
            "free_remaining": rec.free_remaining,
            "at": rec.updated_at.isoformat(),
        }
        if reason:
            event["reason"] = reason
        return event

    async def _emit(self, kind: str, rec: RequestRecord, amount_fen: int, reason: str = "") -> None:
        if self._on_event is not None:
            await self._on_event(self._event(kind, rec, amount_fen, reason))

    async def _emit_quietly(
        self, kind: str, rec: RequestRecord, amount_fen: int, reason: str = ""
    ) -> None:
        try:
            await self._emit(kind, rec, amount_fen, reason)
        except Exception:
            # Money went back to the agency; the ledger entries record it even
            # if the audit log could not.
            log.exception("billing event not recorded", extra={"request_id": rec.request_id[:64]})


def _check_id(value: str, field: str) -> None:
    if not value or len(value) > 128 or not value.isprintable():
        raise InvalidArgumentError(field, "must be 1 to 128 printable characters")


def _settlement(rec: RequestRecord, *, replay: bool) -> Settlement:
    return Settlement(
        request_id=rec.request_id,
        state="settled" if rec.state == "settled" else "released",
        amount_fen=rec.charged_fen,
        lines=rec.delivered,
        balance_fen=rec.balance_fen,
        free_remaining=rec.free_remaining,
        replay=replay,
    )


def _reservation(result: ReserveResult, mode: Mode) -> Reservation:
    rec = result.record
    return Reservation(
        request_id=rec.request_id,
        agency_id=rec.account_id,
        mode=mode,
        basis=rec.basis,
        lines=rec.lines,
        reserved_fen=rec.reserved_fen,
        balance_fen=result.account.balance_fen if result.account else 0,
        free_remaining=result.free_remaining,
        replay=result.replay,
        settlement=_settlement(rec, replay=True) if rec.state == "settled" else None,
        attempt=rec.attempts,
    )
