"""The ledger's types and its store interface: what every backend shares.

:class:`LedgerStore` is the interface (synchronous; every operation is one
transaction). It stays here, with the concept, and the backends live in
:mod:`gateway.stores`: :class:`~gateway.stores.sqlite.ledger.SQLiteLedger` (the
embedded file, ``BEGIN IMMEDIATE``) and
:class:`~gateway.stores.postgres.ledger.PostgresLedger` (shared by many processes,
``SELECT ... FOR UPDATE`` on the rows it changes). Amounts are integer fen; times
are timezone-aware UTC.

The effect of each entry kind on an account (:func:`entry_effect`):

==========  ============  ==============
kind        balance       held
==========  ============  ==============
reserve                   + amount
charge      - amount      - amount
release                   - amount
top_up      + amount
adjustment  + amount (signed; a refund is a positive adjustment)
==========  ============  ==============
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.errors import LedgerError

__all__ = [
    "MAX_AMOUNT_FEN",
    "AccountState",
    "Balances",
    "Basis",
    "Discrepancy",
    "Entry",
    "EntryKind",
    "LedgerStore",
    "PricedLine",
    "RecordedSettlement",
    "ReleaseResult",
    "RequestRecord",
    "RequestState",
    "ReserveResult",
    "ReserveSpec",
    "SettleResult",
    "StatementPage",
    "TopUpResult",
    "UnauditedKind",
    "entry_effect",
]

Basis = Literal["paid", "free_quota", "self_allowance"]
RequestState = Literal["reserved", "settled", "released"]
EntryKind = Literal["reserve", "charge", "release", "top_up", "adjustment"]
UnauditedKind = Literal["request", "top_up"]

#: Bound on a single top-up or adjustment (10 billion yuan): catches a wrong
#: unit and keeps every balance far inside SQLite's 64-bit integers.
MAX_AMOUNT_FEN = 1_000_000_000_000


def entry_effect(kind: str, amount_fen: int) -> tuple[int, int]:
    """``(balance change, held change)`` of one entry (the table above)."""
    if kind == "reserve":
        return 0, amount_fen
    if kind == "charge":
        return -amount_fen, -amount_fen
    if kind == "release":
        return 0, -amount_fen
    if kind in ("top_up", "adjustment"):
        return amount_fen, 0
    raise LedgerError(f"unknown entry kind {kind!r}")


@dataclass(frozen=True, slots=True)
class PricedLine:
    """One dataset of one request and its amount in fen (0 when free)."""

    department: str
    dataset: str
    amount_fen: int

    @property
    def key(self) -> tuple[str, str]:
        """``(department, dataset)``: the line's identity within a request."""
        return (self.department, self.dataset)


@dataclass(frozen=True, slots=True)
class AccountState:
    """One account's money in fen: posted balance, reserved holds, and credit limit."""

    account_id: str
    balance_fen: int
    held_fen: int
    credit_limit_fen: int

    @property
    def available_fen(self) -> int:
        """What new reservations may take: balance, minus holds, plus credit."""
        return self.balance_fen - self.held_fen + self.credit_limit_fen


@dataclass(frozen=True, slots=True)
class Entry:
    """One append-only ledger entry; ``balance_fen``/``held_fen`` are the account's after it."""

    seq: int
    account_id: str
    kind: EntryKind
    amount_fen: int
    request_id: str
    reference: str
    department: str
    dataset: str
    balance_fen: int
    held_fen: int
    at: datetime
    actor: str = ""
    note: str = ""

    @property
    def balance_change_fen(self) -> int:
        """The entry's signed effect on the balance, in fen (see :func:`entry_effect`)."""
        return entry_effect(self.kind, self.amount_fen)[0]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """The stored state of one metered request id."""

    request_id: str
    account_id: str
    basis: Basis
    state: RequestState
    digest: str
    quota_key: str
    period: str
    quota_limit: int
    lines: tuple[PricedLine, ...]
    delivered: tuple[PricedLine, ...]
    reserved_fen: int
    charged_fen: int
    #: The outcome reported at settlement (replayed verbatim on a retry).
    balance_fen: int
    free_remaining: int
    attempts: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReserveSpec:
    """What :meth:`LedgerStore.reserve` needs; the meter builds it."""

    request_id: str
    account_id: str
    basis: Basis
    #: Priced at the list price; the store zeroes them if a free unit is used.
    lines: tuple[PricedLine, ...]
    #: Identifies the request's content: a reused request id must match it.
    digest: str
    at: datetime
    #: free_quota: the agency id; self_allowance: the subject's pseudonym.
    quota_key: str = ""
    #: free_quota: the local date YYYY-MM-DD; self_allowance: the year YYYY.
    period: str = ""
    quota_limit: int = 0
    #: For QuotaExhaustedError's metadata.
    resets_at: str = ""
    #: self_allowance used up: pay the list price instead of refusing.
    paid_fallback: bool = False


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """What :meth:`LedgerStore.reserve` did: the request's record and the account after it."""

    record: RequestRecord
    #: True if the request id was already reserved or settled: nothing was done.
    replay: bool
    account: AccountState | None
    free_remaining: int


@dataclass(frozen=True, slots=True)
class SettleResult:
    """What :meth:`LedgerStore.settle` did to the request."""

    record: RequestRecord
    #: True if the request was already settled or released: nothing was done.
    replay: bool


@dataclass(frozen=True, slots=True)
class RecordedSettlement:
    """A settlement whose query record is already durable but which the ledger has not
    booked yet: a free-basis query's (0 fen), settled in memory by the meter and booked
    with the clearing of its unaudited mark (:meth:`LedgerStore.book_recorded`).

    ``balance_fen`` and ``free_remaining`` are the outcome the agency was told; the
    ledger stores them so that a retry replays that outcome verbatim."""

    request_id: str
    #: The attempt that was settled: another attempt of the request id is left alone.
    attempt: int
    #: The reserved lines delivered (0 fen each), in their reserved order; never empty.
    lines: tuple[PricedLine, ...]
    balance_fen: int
    free_remaining: int


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """What :meth:`LedgerStore.release` did: fen released from the hold and fen refunded."""

    record: RequestRecord
    #: False if there was nothing to release (already released, or settled
    #: and no refund asked for).
    changed: bool
    released_fen: int
    refunded_fen: int


@dataclass(frozen=True, slots=True)
class TopUpResult:
    """A booked top-up or adjustment entry and the account after it."""

    entry: Entry
    account: AccountState
    #: True if this reference was already booked: nothing was added.
    replayed: bool


@dataclass(frozen=True, slots=True)
class StatementPage:
    """One page of an account's statement over a period (amounts in fen)."""

    account_id: str
    #: Balance before the period, and at its end (the whole period, not the page).
    opening_balance_fen: int
    closing_balance_fen: int
    entries: tuple[Entry, ...]
    #: Pass as ``after_seq`` for the next page; 0 when this is the last one.
    next_after_seq: int


@dataclass(frozen=True, slots=True)
class Balances:
    """An account's balance and held amount in fen, as recomputed from its entries."""

    balance_fen: int
    held_fen: int


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One inconsistency :meth:`LedgerStore.check` found on an account."""

    account_id: str
    problem: str


class LedgerStore(ABC):
    """Accounts, entries and requests. Every method is one transaction,
    synchronous (callers run it off the event loop, see :class:`AsyncLedger`),
    and raises LedgerError if storage fails."""

    @abstractmethod
    def reserve(self, spec: ReserveSpec) -> ReserveResult:
        """Reserve a request, or return its existing reservation/settlement.

        A request id already ``reserved`` or ``settled`` is returned unchanged
        (``replay=True``); one ``released`` (nothing charged, nothing
        delivered) is reserved afresh. Raises InvalidArgumentError (reason
        REQUEST_ID_REUSED) if the id belongs to another account or digest,
        QuotaExhaustedError if a free unit is needed and none is left, and
        InsufficientBalanceError if the account cannot cover the lines.
        """

    @abstractmethod
    def settle(
        self,
        request_id: str,
        delivered: frozenset[tuple[str, str]],
        at: datetime,
        *,
        attempt: int | None = None,
    ) -> SettleResult:
        """Charge the reserved lines in ``delivered``, release the others.

        Lines not reserved are never charged. With nothing delivered the
        request is released instead (its free unit given back). A request not
        in state ``reserved``, or (with ``attempt``) reserved by another
        attempt, is returned unchanged (``replay=True``). Raises NotFoundError
        for an unknown request id.
        """

    @abstractmethod
    def release(
        self,
        request_id: str,
        at: datetime,
        *,
        refund: bool = False,
        note: str = "",
        attempt: int | None = None,
    ) -> ReleaseResult:
        """Release a reservation; with ``refund``, also reverse a settled
        charge (a positive adjustment per charged line). Either way the free
        unit is given back and the state becomes ``released``. With
        ``attempt``, only that attempt of the request id is touched (a stale
        caller never releases a later retry). Raises NotFoundError for an
        unknown request id."""

    @abstractmethod
    def request(self, request_id: str) -> RequestRecord | None:
        """The stored request, or None."""

    @abstractmethod
    def interrupted(self, older_than: datetime | None = None) -> list[RequestRecord]:
        """Requests still ``reserved`` (last touched before ``older_than``, if given)."""

    @abstractmethod
    def unaudited(self, older_than: datetime | None = None) -> list[tuple[UnauditedKind, str]]:
        """Every booking marked as possibly not on the audit log yet (marked
        before ``older_than``, if given): ``("request", request_id)`` or
        ``("top_up", reference)``, oldest first. Reserve, settle, release and
        top-up set the mark in their own transaction."""

    @abstractmethod
    def top_up_entry(self, reference: str) -> Entry | None:
        """The top-up booked under ``reference``, or None."""

    @abstractmethod
    def mark_audited(self, kind: UnauditedKind, *refs: str) -> None:
        """Clear the marks of bookings whose movements are all on the audit log."""

    @abstractmethod
    def book_recorded(
        self, request_ids: Sequence[str], settled: Sequence[RecordedSettlement], at: datetime
    ) -> list[str]:
        """The query records of ``request_ids`` are durable: in one transaction, book
        each of ``settled`` as :meth:`settle` would book a 0-fen settlement (state
        ``settled``, its ``lines`` delivered, its ``balance_fen`` and
        ``free_remaining`` stored, at ``at``; one statement, no entries: no money
        moves), only from state ``reserved`` of its ``attempt`` with nothing held
        (anything else, or an unknown request id, is left alone), then clear the
        unaudited marks of ``request_ids``. Returns the request ids of ``settled``
        booked now."""

    @abstractmethod
    def set_credit_limit(self, account_id: str, credit_limit_fen: int) -> AccountState:
        """Change an account's credit limit. Raises NotFoundError, InvalidArgumentError."""

    @abstractmethod
    def account(self, account_id: str) -> AccountState | None:
        """The account, or None."""

    @abstractmethod
    def accounts(self) -> list[AccountState]:
        """Every account, by id."""

    @abstractmethod
    def top_up(
        self,
        account_id: str,
        amount_fen: int,
        reference: str,
        at: datetime,
        *,
        actor: str = "",
        note: str = "",
        create: bool = False,
    ) -> TopUpResult:
        """Add money, idempotent by ``reference``: a reference already booked
        returns its entry (``replayed=True``). Raises InvalidArgumentError for
        a bad amount or a reference booked with another account or amount,
        NotFoundError for an unknown account unless ``create``."""

    @abstractmethod
    def adjust(
        self,
        account_id: str,
        amount_fen: int,
        reference: str,
        at: datetime,
        *,
        actor: str = "",
        note: str = "",
    ) -> Entry:
        """Book a signed correction, once per ``reference``. Raises
        InvalidArgumentError, NotFoundError."""

    @abstractmethod
    def entries(self, account_id: str | None = None, request_id: str | None = None) -> list[Entry]:
        """Entries in order, optionally of one account and/or one request."""

    @abstractmethod
    def statement(
        self,
        account_id: str,
        start: datetime,
        end: datetime,
        *,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> StatementPage:
        """Entries with ``start <= at < end``, in order, at most ``limit``
        after ``after_seq``. Raises NotFoundError for an unknown account."""

    @abstractmethod
    def recompute_balances(self) -> dict[str, Balances]:
        """Every account's balance and held amount, folded from its entries alone."""

    @abstractmethod
    def check(self) -> list[Discrepancy]:
        """Compare stored balances with the entries, each entry's running
        totals, and held amounts with the open reservations; empty if consistent."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release resources."""
