"""``BillingAdmin``: balances, top-ups and statements, for the finance role.

The servicer never decides who is finance staff itself: it takes an
``authorize(context) -> principal_id`` callable (the gateway wires it to
:mod:`gateway.auth` with ``Role.FINANCE``) that raises
:class:`~gateway.errors.PermissionDeniedError` (or AuthenticationError) for
anybody else. Every RPC calls it first, so a caller that is not finance staff
learns nothing, not even whether an account exists. Errors are raised for the
gRPC edge (:mod:`gateway.api.edge`) to map to statuses and put on the audit record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import grpc

from gateway.api.edge import authenticate, identified
from gateway.audit.schema import BillingRecord
from gateway.billing.ledger import AccountState, AsyncLedger, Entry
from gateway.billing.meter import EventHook
from gateway.errors import InvalidArgumentError, NotFoundError
from gateway.pipeline.freetext import echo, holds_identifier
from protos.credit.v1 import billing_pb2, billing_pb2_grpc

__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_TOP_UP_FEN",
    "Authorize",
    "BillingAdminService",
    "account_proto",
    "entry_proto",
    "period_bounds",
]

log = logging.getLogger("credit_gateway.billing.admin")

#: Returns the caller's principal id; raises PermissionDeniedError otherwise.
Authorize = Callable[[grpc.aio.ServicerContext[Any, Any]], str]

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
#: The largest top-up: 10^12 fen (10 billion yuan). Balances stay far inside SQLite's
#: 64-bit INTEGER however many top-ups an account receives.
MAX_TOP_UP_FEN = 10**12
_MAX_SEQ = 2**63 - 1
_MAX_ACCOUNT_ID = 128
_MAX_REFERENCE = 256

_KINDS = {
    "reserve": billing_pb2.ENTRY_KIND_RESERVE,
    "charge": billing_pb2.ENTRY_KIND_CHARGE,
    "release": billing_pb2.ENTRY_KIND_RELEASE,
    "top_up": billing_pb2.ENTRY_KIND_TOP_UP,
    "adjustment": billing_pb2.ENTRY_KIND_ADJUSTMENT,
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def account_proto(acct: AccountState) -> billing_pb2.Account:
    """The ``credit.v1.Account`` message of a ledger account; every amount in fen."""
    return billing_pb2.Account(
        account_id=acct.account_id,
        balance_fen=acct.balance_fen,
        held_fen=acct.held_fen,
        credit_limit_fen=acct.credit_limit_fen,
        available_fen=acct.available_fen,
    )


def entry_proto(e: Entry) -> billing_pb2.LedgerEntry:
    """The ``credit.v1.LedgerEntry`` message of a ledger entry.

    Amounts and the running ``balance_fen``/``held_fen`` are in fen; ``at`` is the entry's
    UTC instant. Raises KeyError for an entry kind the proto has no value for.
    """
    msg = billing_pb2.LedgerEntry(
        seq=e.seq,
        kind=_KINDS[e.kind],
        amount_fen=e.amount_fen,
        request_id=e.request_id,
        reference=e.reference,
        department=e.department,
        dataset=e.dataset,
        balance_fen=e.balance_fen,
        held_fen=e.held_fen,
        actor=e.actor,
        note=e.note,
    )
    msg.at.FromDatetime(e.at)
    return msg


def parse_date(text: str, field: str) -> date:
    """A strict ``YYYY-MM-DD``. Raises InvalidArgumentError naming ``field``."""
    if not _DATE.fullmatch(text):
        raise InvalidArgumentError(field, "must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(field, f"{text} is not a real date") from None


def period_bounds(first: date, last: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """The UTC instants ``[start of first, end of last)`` of local days in ``tz``.

    Raises InvalidArgumentError if ``last`` is before ``first``.
    """
    if last < first:
        raise InvalidArgumentError("to_date", "is before from_date")
    try:
        start = datetime.combine(first, time(0), tz).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), time(0), tz).astimezone(UTC)
    except OverflowError:
        # 0001-01-01 in UTC+8 is before year 1; 9999-12-31's next day is past 9999.
        raise InvalidArgumentError(
            "from_date" if first.year == 1 else "to_date",
            "out of range: from 0001-01-02 to 9999-12-30",
        ) from None
    return start, end


def _now() -> datetime:
    return datetime.now(UTC)


class BillingAdminService(billing_pb2_grpc.BillingAdminServicer):
    """The ``credit.v1.BillingAdmin`` servicer over a ledger.

    ``timezone`` is the one of the price list (statement days are local
    days). ``account_exists`` says whether an account id names a paying
    principal (the gateway wires it to the agency registry): a top-up to an
    unknown id is NOT_FOUND instead of creating a phantom account; without it
    only accounts already in the ledger can be topped up. ``on_event``
    receives each new top-up for the audit log.
    """

    def __init__(
        self,
        ledger: AsyncLedger,
        *,
        authorize: Authorize,
        timezone: tzinfo,
        account_exists: Callable[[str], bool] | None = None,
        on_event: EventHook | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._ledger = ledger
        self._authorize = authorize
        self._tz = timezone
        self._account_exists = account_exists
        self._on_event = on_event
        self._clock = clock

    async def GetBalance(
        self, request: billing_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> billing_pb2.GetBalanceResponse:
        """RPC ``GetBalance``: the account's balance, holds, credit limit and available fen.

        Statuses: UNAUTHENTICATED / PERMISSION_DENIED for a caller that is not finance staff;
        INVALID_ARGUMENT for a missing or over-long ``account_id``; NOT_FOUND for an account
        the ledger does not hold; UNAVAILABLE when the ledger cannot be read (LedgerError).
        """
        self._finance(context)
        account = _account_id(request.account_id)
        acct = await self._ledger.run(self._ledger.store.account, account)
        if acct is None:
            raise NotFoundError(f"no account {echo(account)}")
        return billing_pb2.GetBalanceResponse(account=account_proto(acct))

    async def TopUp(
        self, request: billing_pb2.TopUpRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> billing_pb2.TopUpResponse:
        """RPC ``TopUp``: add ``amount_fen`` to an account, idempotent by ``reference``.

        A reference already booked returns its entry with ``replayed=True`` and emits no
        event; a new top-up is logged and goes to ``on_event`` (for the audit log), whose
        failure is logged, not returned. Statuses: UNAUTHENTICATED / PERMISSION_DENIED for a
        caller that is not finance staff; NOT_FOUND for an id that names no paying principal
        (or, without ``account_exists``, no ledger account); INVALID_ARGUMENT for a bad
        ``account_id``, a note over 500 or a reference over 256 characters, a note or
        reference holding a resident identity number (GB 11643-1999) or unified social credit
        code (GB 32100-2015), an amount that is not positive or over ``MAX_TOP_UP_FEN``, or
        a reference booked with another account or amount; UNAVAILABLE when the ledger fails.
        """
        actor = self._finance(context)
        account = _account_id(request.account_id)
        if self._account_exists is not None and not self._account_exists(account):
            raise NotFoundError(f"no paying principal {echo(account)}")
        if len(request.note) > 500:
            raise InvalidArgumentError("note", "at most 500 characters")
        if len(request.reference) > _MAX_REFERENCE:
            raise InvalidArgumentError("reference", f"at most {_MAX_REFERENCE} characters")
        # The ledger keeps both for good, in clear, and the reference goes on the
        # audit record. The query fields' rule: a bank reference carrying a UUID is not
        # refused for the check-valid pattern one random hex id in thirty holds.
        for field, text in (("reference", request.reference), ("note", request.note)):
            if holds_identifier(text):
                raise InvalidArgumentError(
                    field,
                    "must not contain a resident identity number or unified social "
                    "credit code (the text is not repeated)",
                )
        if request.amount_fen > MAX_TOP_UP_FEN:
            raise InvalidArgumentError("amount_fen", f"at most {MAX_TOP_UP_FEN} fen in one top-up")
        result = await self._ledger.run(
            self._ledger.store.top_up,
            account,
            request.amount_fen,
            request.reference,
            self._clock(),
            actor=actor,
            note=request.note,
            create=self._account_exists is not None,
        )
        if not result.replayed:
            log.info(
                "top-up",
                extra={"account": request.account_id, "amount_fen": request.amount_fen},
            )
            await self._emit_top_up(result.entry, actor)
        return billing_pb2.TopUpResponse(
            account=account_proto(result.account),
            entry=entry_proto(result.entry),
            replayed=result.replayed,
        )

    async def Statement(
        self, request: billing_pb2.StatementRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> billing_pb2.StatementResponse:
        """RPC ``Statement``: an account's entries over local days ``from_date``..``to_date``.

        The dates are ``YYYY-MM-DD`` days in the price list's time zone (Beijing time in the
        shipped configuration), both included; opening and closing balances are in fen.
        Pages hold ``page_size`` entries (default 1000, at most 10,000); ``next_page_token``
        is empty on the last page. Statuses: UNAUTHENTICATED / PERMISSION_DENIED for a caller
        that is not finance staff; INVALID_ARGUMENT for a bad ``account_id``, date, period
        (``to_date`` before ``from_date``), page size or page token; NOT_FOUND for an
        account the ledger does not hold; UNAVAILABLE when the ledger cannot be read.
        """
        self._finance(context)
        account = _account_id(request.account_id)
        first = parse_date(request.from_date, "from_date")
        last = parse_date(request.to_date, "to_date")
        start, end = period_bounds(first, last, self._tz)
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise InvalidArgumentError("page_size", f"at most {MAX_PAGE_SIZE}")
        after = 0
        if request.page_token:
            # A ledger sequence number: an SQLite INTEGER, never beyond 2**63 - 1.
            token = request.page_token
            if not (token.isascii() and token.isdigit() and int(token) <= _MAX_SEQ):
                raise InvalidArgumentError("page_token", "not a token of this service")
            after = int(token)
        page = await self._ledger.run(
            self._ledger.store.statement,
            account,
            start,
            end,
            after_seq=after,
            limit=size,
        )
        response = billing_pb2.StatementResponse(
            account_id=page.account_id,
            opening_balance_fen=page.opening_balance_fen,
            closing_balance_fen=page.closing_balance_fen,
            next_page_token=str(page.next_after_seq) if page.next_after_seq else "",
        )
        response.entries.extend(entry_proto(e) for e in page.entries)
        return response

    def _finance(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The calling finance principal; raises AuthenticationError or
        PermissionDeniedError for anybody else (see :func:`gateway.api.edge.authenticate`)."""
        principal = authenticate(self._authorize, context)
        identified(principal)
        return principal

    async def _emit_top_up(self, entry: Entry, actor: str) -> None:
        if self._on_event is None:
            return
        event = BillingRecord(
            event="top_up",
            request_id="",
            # Screened at TopUp; an entry booked before that screen existed is not repeated.
            reference="(withheld)" if holds_identifier(entry.reference) else entry.reference,
            agency_id=entry.account_id,
            amount_fen=entry.amount_fen,
            balance_fen=entry.balance_fen,
            actor=actor,
            at=entry.at.isoformat(),
        ).to_json()
        try:
            await self._on_event(event)
        except Exception:
            # The top-up is booked and durable with its actor in the ledger;
            # failing the RPC now would only make finance staff retry it.
            log.exception("top-up event not recorded", extra={"account": entry.account_id})


def _account_id(text: str) -> str:
    """An account id from a request: a registry id, so short. Raises InvalidArgumentError."""
    if not text:
        raise InvalidArgumentError("account_id", "required")
    if len(text) > _MAX_ACCOUNT_ID:
        raise InvalidArgumentError("account_id", f"at most {_MAX_ACCOUNT_ID} characters")
    return text
