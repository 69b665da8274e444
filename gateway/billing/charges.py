"""What a query reserves and what it is charged: the values steps 4 and 7 of the query
pipeline hand around (:class:`Reservation`, :class:`Settlement`), and the datasets a
decision grants and its departments deliver. Amounts are integer fen.

The :class:`~gateway.billing.meter.Meter` makes them; the pipeline reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.audit.schema import BillingLine, QueryBilling
from gateway.billing.ledger import Basis, PricedLine, RequestRecord, ReserveResult
from gateway.errors import InvalidArgumentError
from gateway.pipeline.decision import Decision
from protos.credit.v1 import query_pb2

__all__ = [
    "DELIVERED_STATUSES",
    "ChargeLine",
    "Mode",
    "Reservation",
    "Settlement",
    "delivered_lines",
    "granted_lines",
    "mode_name",
    "query_billing",
    "reservation_of",
    "settlement_of",
]

Mode = Literal["free", "paid"]
ChargeLine = PricedLine

#: Section statuses that count as delivered (and are charged).
DELIVERED_STATUSES: frozenset[int] = frozenset(
    {query_pb2.SECTION_STATUS_OK, query_pb2.SECTION_STATUS_NOT_FOUND}
)


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
        """The ``credit.v1.Charge`` of a query response: amounts in fen, one line per dataset."""
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
        """True when no dataset was granted: nothing is metered and no free unit is used."""
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


def settlement_of(rec: RequestRecord, *, replay: bool) -> Settlement:
    """The :class:`Settlement` a stored request stands for (``replay``: booked before)."""
    return Settlement(
        request_id=rec.request_id,
        state="settled" if rec.state == "settled" else "released",
        amount_fen=rec.charged_fen,
        lines=rec.delivered,
        balance_fen=rec.balance_fen,
        free_remaining=rec.free_remaining,
        replay=replay,
    )


def reservation_of(result: ReserveResult, mode: Mode) -> Reservation:
    """The :class:`Reservation` of a ledger reservation, in ``mode``; a request already
    settled carries its original :class:`Settlement`."""
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
        settlement=settlement_of(rec, replay=True) if rec.state == "settled" else None,
        attempt=rec.attempts,
    )


def query_billing(reservation: Reservation, settlement: Settlement) -> QueryBilling:
    """The ``billing`` block of the query record that carries ``reservation`` and its
    ``settlement`` (amounts in fen; the lines charged, 0 fen each on a free basis)."""
    return QueryBilling(
        basis=reservation.basis,
        reserved_fen=reservation.reserved_fen,
        charged_fen=settlement.amount_fen,
        state=settlement.state,
        replay=reservation.replay,
        lines=tuple(BillingLine(x.department, x.dataset, x.amount_fen) for x in settlement.lines),
        attempt=reservation.attempt,
    )
