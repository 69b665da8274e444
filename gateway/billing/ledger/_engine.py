"""The ledger's transactions, written once over portable SQL for every backend.

:class:`SqlLedger` implements every :class:`LedgerStore` operation as one function of a
database handle; a backend (:class:`~gateway.stores.sqlite.ledger.SQLiteLedger`,
:class:`~gateway.stores.postgres.ledger.PostgresLedger`) supplies the schema, the
transaction (:meth:`SqlLedger._transaction`: SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's
READ COMMITTED with row locks and a retry on a conflict) and how times are stored. So the
rules (held amounts, quota units, the ``unaudited`` marks set in the movement's own
transaction, "charged once" by the request id) cannot drift apart between backends: the
contract suite (tests/contract/) runs the same tests against both.

The SQL uses ``?`` placeholders and what SQLite (3.35+) and PostgreSQL both accept:
``INSERT ... ON CONFLICT ... DO NOTHING``, ``RETURNING``. Rows an operation will change
are read with :attr:`SqlLedger.for_update` appended (``FOR UPDATE`` on PostgreSQL, where
several processes write at once; empty on SQLite, whose ``BEGIN IMMEDIATE`` already holds
the file's write lock). Lock order is always request row, then account row, so two
transactions never wait on each other in a circle.

A reservation first claims its request id (``INSERT ... ON CONFLICT (request_id) DO
NOTHING``): of two processes reserving one id at once, the second waits for the first to
commit, inserts nothing, and returns the stored reservation (``replay=True``). The unique
request id on the one database is the only arbiter of "charged once".

Why one module (some 800 lines): it is one class whose methods are each one transaction
over the ledger's tables, plus the row mapping they share; splitting the transactions
apart would scatter the invariants (held amounts, quota units, the unaudited marks) that
every method must keep together. What needs no SQL is in :mod:`._rules`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar, cast

from gateway.billing.ledger._rules import (
    QUOTA_BASES,
    Acct,
    balance_error,
    check_amount,
    check_available,
    check_text,
    dump_lines,
    find_discrepancies,
    fold_balances,
    free_lines,
    load_lines,
    quota_error,
)
from gateway.billing.ledger._types import (
    AccountState,
    Balances,
    Basis,
    Discrepancy,
    Entry,
    EntryKind,
    LedgerStore,
    PricedLine,
    RecordedSettlement,
    ReleaseResult,
    RequestRecord,
    RequestState,
    ReserveResult,
    ReserveSpec,
    SettleResult,
    StatementPage,
    TopUpResult,
    UnauditedKind,
    entry_effect,
)
from gateway.errors import InvalidArgumentError, LedgerError, NotFoundError
from gateway.pipeline.freetext import echo

__all__ = ["Cursor", "Db", "SqlLedger"]

_T = TypeVar("_T")

_ENTRY_COLS = (
    "seq, account_id, kind, amount_fen, request_id, reference, department, dataset,"
    " balance_fen, held_fen, at, actor, note"
)
_REQUEST_COLS = (
    "request_id, account_id, basis, state, digest, quota_key, period, quota_limit, quota_units,"
    " lines, delivered, reserved_fen, charged_fen, balance_fen, free_remaining, attempts,"
    " created_at, updated_at"
)


class Cursor(Protocol):
    """What a statement returns: sqlite3's and psycopg's cursors both fit."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""
        ...

    def fetchone(self) -> Any:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """Every remaining row."""
        ...

    def __iter__(self) -> Any:
        """Iterate over the rows."""
        ...


class Db(Protocol):
    """A connection inside one transaction: ``execute(sql, args)`` with ``?`` placeholders."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Any:
        """Run one statement; returns a :class:`Cursor`."""
        ...

    def executemany(self, sql: str, args: Sequence[Sequence[Any]], /) -> Any:
        """Run one statement once per row of ``args`` (no rows back)."""
        ...


class SqlLedger(LedgerStore):
    """Every :class:`LedgerStore` operation over a :class:`Db`; subclasses provide
    :meth:`_transaction`, :meth:`_to_db_time` and :meth:`_from_db_time`."""

    #: Appended to a SELECT of rows the operation changes (row locks where needed).
    for_update: ClassVar[str] = ""

    @abstractmethod
    def _transaction(self, fn: Callable[[Db], _T], *, write: bool) -> _T:
        """Run ``fn`` in one transaction (a consistent snapshot when not ``write``);
        commit if it returns, roll back if it raises. Raises LedgerError when storage
        fails, and whatever ``fn`` raises."""

    @abstractmethod
    def _to_db_time(self, when: datetime) -> Any:
        """A timezone-aware UTC instant as the backend stores it."""

    @abstractmethod
    def _from_db_time(self, value: Any) -> datetime:
        """The inverse of :meth:`_to_db_time`: a timezone-aware UTC datetime."""

    def _lock_quota(self, db: Db, basis: str, quota_key: str, period: str) -> None:
        """Lock the free-unit counter of ``(basis, quota_key, period)`` until commit,
        where other writers could take units meanwhile (nothing to do on SQLite, whose
        writer holds the file's lock)."""

    # --- row mapping -------------------------------------------------------------------

    def _ts(self, when: datetime) -> Any:
        if when.tzinfo is None:
            raise LedgerError("ledger times must be timezone-aware")
        return self._to_db_time(when)

    def _entry(self, row: Sequence[Any]) -> Entry:
        return Entry(
            seq=int(row[0]),
            account_id=str(row[1]),
            kind=cast(EntryKind, row[2]),
            amount_fen=int(row[3]),
            request_id=str(row[4]),
            reference=str(row[5]),
            department=str(row[6]),
            dataset=str(row[7]),
            balance_fen=int(row[8]),
            held_fen=int(row[9]),
            at=self._from_db_time(row[10]),
            actor=str(row[11]),
            note=str(row[12]),
        )

    def _request(self, row: Sequence[Any]) -> RequestRecord:
        return RequestRecord(
            request_id=str(row[0]),
            account_id=str(row[1]),
            basis=cast(Basis, row[2]),
            state=cast(RequestState, row[3]),
            digest=str(row[4]),
            quota_key=str(row[5]),
            period=str(row[6]),
            quota_limit=int(row[7]),
            # row[8], quota_units: read by SQL only (the quota counters).
            lines=load_lines(str(row[9])),
            delivered=load_lines(str(row[10])),
            reserved_fen=int(row[11]),
            charged_fen=int(row[12]),
            balance_fen=int(row[13]),
            free_remaining=int(row[14]),
            attempts=int(row[15]),
            created_at=self._from_db_time(row[16]),
            updated_at=self._from_db_time(row[17]),
        )

    # --- helpers inside a transaction ----------------------------------------------------

    def _get_account(self, db: Db, account_id: str, *, lock: bool = False) -> Acct | None:
        row = db.execute(
            "SELECT account_id, balance_fen, held_fen, credit_limit_fen FROM accounts"
            " WHERE account_id = ?" + (self.for_update if lock else ""),
            (account_id,),
        ).fetchone()
        return None if row is None else Acct(str(row[0]), int(row[1]), int(row[2]), int(row[3]))

    @staticmethod
    def _save_account(db: Db, acct: Acct) -> None:
        db.execute(
            "UPDATE accounts SET balance_fen = ?, held_fen = ?, credit_limit_fen = ?"
            " WHERE account_id = ?",
            (acct.balance_fen, acct.held_fen, acct.credit_limit_fen, acct.account_id),
        )

    @staticmethod
    def _post(
        db: Db,
        acct: Acct,
        kind: EntryKind,
        amount_fen: int,
        at: Any,
        *,
        request_id: str = "",
        reference: str = "",
        line: PricedLine | None = None,
        actor: str = "",
        note: str = "",
    ) -> int:
        """Append one entry and apply it to ``acct`` (saved by the caller); its seq."""
        d_balance, d_held = entry_effect(kind, amount_fen)
        acct.balance_fen += d_balance
        acct.held_fen += d_held
        if acct.held_fen < 0:
            # Never happens unless the requests table and the entries disagree.
            raise LedgerError(f"account {acct.account_id}: held amount would go negative")
        row = db.execute(
            "INSERT INTO entries (account_id, kind, amount_fen, request_id, reference, department,"
            " dataset, balance_fen, held_fen, at, actor, note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (
                acct.account_id,
                kind,
                amount_fen,
                request_id,
                reference,
                line.department if line else "",
                line.dataset if line else "",
                acct.balance_fen,
                acct.held_fen,
                at,
                actor,
                note,
            ),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _mark(db: Db, kind: UnauditedKind, ref: str, ts: Any) -> None:
        # In the movement's own transaction: no movement without its mark.
        db.execute(
            "INSERT INTO unaudited (kind, ref, since) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, ref) DO NOTHING",
            (kind, ref, ts),
        )

    def _get_request(self, db: Db, request_id: str, *, lock: bool = False) -> RequestRecord | None:
        row = db.execute(
            f"SELECT {_REQUEST_COLS} FROM requests WHERE request_id = ?"
            + (self.for_update if lock else ""),
            (request_id,),
        ).fetchone()
        return None if row is None else self._request(row)

    def _entry_by_seq(self, db: Db, seq: int) -> Entry:
        return self._entry(
            db.execute(f"SELECT {_ENTRY_COLS} FROM entries WHERE seq = ?", (seq,)).fetchone()
        )

    @staticmethod
    def _used(db: Db, basis: str, quota_key: str, period: str) -> int:
        row = db.execute(
            "SELECT used FROM quota_usage WHERE basis = ? AND quota_key = ? AND period = ?",
            (basis, quota_key, period),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _free_remaining(self, db: Db, rec: RequestRecord) -> int:
        if rec.basis not in QUOTA_BASES:
            return 0
        return max(rec.quota_limit - self._used(db, rec.basis, rec.quota_key, rec.period), 0)

    # --- metering ------------------------------------------------------------------------

    def reserve(self, spec: ReserveSpec) -> ReserveResult:
        """See :meth:`LedgerStore.reserve`."""
        at = self._ts(spec.at)
        return self._transaction(lambda db: self._reserve(db, spec, at), write=True)

    def _reserve(self, db: Db, spec: ReserveSpec, at: Any) -> ReserveResult:
        attempts = 1
        created_at = at
        # Claim the id first: a concurrent reservation of the same id waits here for
        # this transaction and then finds the row (the unique key decides, not a cache).
        claimed = db.execute(
            "INSERT INTO requests (request_id, account_id, basis, state, digest, lines,"
            " reserved_fen, created_at, updated_at) VALUES (?, ?, ?, 'reserved', ?, '[]', 0, ?, ?)"
            " ON CONFLICT (request_id) DO NOTHING",
            (spec.request_id, spec.account_id, spec.basis, spec.digest, at, at),
        ).rowcount
        if not claimed:
            old = self._get_request(db, spec.request_id, lock=True)
            assert old is not None
            if old.account_id != spec.account_id or old.digest != spec.digest:
                # Say nothing about the other request: it may be another agency's.
                raise InvalidArgumentError(
                    "request_id",
                    "already used for a different request; use a new request id",
                    reason="REQUEST_ID_REUSED",
                )
            if old.state != "released":
                acct = self._get_account(db, old.account_id)
                return ReserveResult(
                    old, True, acct.frozen() if acct else None, self._free_remaining(db, old)
                )
            # Released: nothing was charged or delivered, so a retry is a new attempt
            # under the same id.
            attempts = old.attempts + 1
            created_at = self._ts(old.created_at)

        basis: Basis = spec.basis
        lines = spec.lines
        units = 0
        free_remaining = 0
        if basis in QUOTA_BASES:
            self._lock_quota(db, basis, spec.quota_key, spec.period)
            used = self._used(db, basis, spec.quota_key, spec.period)
            if used < spec.quota_limit:
                units = 1
                free_remaining = spec.quota_limit - used - 1
                lines = free_lines(lines)
            elif basis == "self_allowance" and spec.paid_fallback:
                basis = "paid"
            else:
                raise quota_error(spec)
        total = sum(x.amount_fen for x in lines)

        acct = self._get_account(db, spec.account_id, lock=total > 0)
        if total > 0:
            available = acct.frozen().available_fen if acct else 0
            if acct is None or total > available:
                raise balance_error(spec.account_id, total, available, acct is None)
            for line in lines:
                if line.amount_fen:
                    self._post(
                        db, acct, "reserve", line.amount_fen, at,
                        request_id=spec.request_id, line=line,
                    )  # fmt: skip
            self._save_account(db, acct)

        self._mark(db, "request", spec.request_id, at)
        # RETURNING: the stored row without another statement.
        row = db.execute(
            "UPDATE requests SET account_id = ?, basis = ?, state = 'reserved', digest = ?,"
            " quota_key = ?, period = ?, quota_limit = ?, quota_units = ?, lines = ?,"
            " delivered = '[]', reserved_fen = ?, charged_fen = 0, balance_fen = ?,"
            " free_remaining = ?, attempts = ?, created_at = ?, updated_at = ?"
            f" WHERE request_id = ? RETURNING {_REQUEST_COLS}",
            (
                spec.account_id,
                basis,
                spec.digest,
                spec.quota_key,
                spec.period,
                spec.quota_limit,
                units,
                dump_lines(lines),
                total,
                acct.balance_fen if acct else 0,
                free_remaining,
                attempts,
                created_at,
                at,
                spec.request_id,
            ),
        ).fetchone()
        rec = self._request(row)
        return ReserveResult(rec, False, acct.frozen() if acct else None, free_remaining)

    def settle(
        self,
        request_id: str,
        delivered: frozenset[tuple[str, str]],
        at: datetime,
        *,
        attempt: int | None = None,
    ) -> SettleResult:
        """See :meth:`LedgerStore.settle`."""
        ts = self._ts(at)
        return self._transaction(
            lambda db: self._settle(db, request_id, delivered, ts, attempt), write=True
        )

    def _settle(
        self,
        db: Db,
        request_id: str,
        delivered: frozenset[tuple[str, str]],
        ts: Any,
        attempt: int | None,
    ) -> SettleResult:
        rec = self._get_request(db, request_id, lock=True)
        if rec is None:
            raise NotFoundError(f"no reservation for request {echo(request_id)}")
        # Only from ``reserved``: a settled or released request is never charged again.
        if rec.state != "reserved" or attempt not in (None, rec.attempts):
            return SettleResult(rec, True)
        charged = tuple(x for x in rec.lines if x.key in delivered)
        self._mark(db, "request", request_id, ts)
        if not charged:
            # Nothing delivered costs nothing, not even a free unit.
            self._release_reserved(db, rec, ts, "nothing delivered")
        else:
            # Locked only where money moves: a free settlement touches no account.
            acct = self._get_account(db, rec.account_id, lock=rec.reserved_fen > 0)
            if rec.reserved_fen:
                if acct is None:
                    raise LedgerError(f"request {echo(request_id)}: its account is gone")
                for line in rec.lines:
                    if line.amount_fen:
                        kind: EntryKind = "charge" if line in charged else "release"
                        self._post(
                            db, acct, kind, line.amount_fen, ts, request_id=request_id, line=line
                        )
                self._save_account(db, acct)
            balance = acct.balance_fen if acct else 0
            free_remaining = self._free_remaining(db, rec)
            row = db.execute(
                "UPDATE requests SET state = 'settled', delivered = ?, charged_fen = ?,"
                " balance_fen = ?, free_remaining = ?, updated_at = ?"
                f" WHERE request_id = ? AND state = 'reserved' RETURNING {_REQUEST_COLS}",
                (
                    dump_lines(charged),
                    sum(x.amount_fen for x in charged),
                    balance,
                    free_remaining,
                    ts,
                    request_id,
                ),
            ).fetchone()
            return SettleResult(self._request(row), False)
        out = self._get_request(db, request_id)
        assert out is not None
        return SettleResult(out, False)

    def book_recorded(
        self, request_ids: Sequence[str], settled: Sequence[RecordedSettlement], at: datetime
    ) -> list[str]:
        """See :meth:`LedgerStore.book_recorded`."""
        ts = self._ts(at)

        def run(db: Db) -> list[str]:
            booked: list[str] = []
            for s in settled:
                if not s.lines or any(x.amount_fen for x in s.lines):
                    continue  # never a release or a charge: those are booked before the record
                # One statement: the row is locked by the UPDATE itself, and its
                # conditions are the ones settle() checks (reserved, this attempt,
                # nothing held), so no read is needed first.
                changed = db.execute(
                    "UPDATE requests SET state = 'settled', delivered = ?, charged_fen = 0,"
                    " balance_fen = ?, free_remaining = ?, updated_at = ?"
                    " WHERE request_id = ? AND state = 'reserved' AND attempts = ?"
                    " AND reserved_fen = 0",
                    (
                        dump_lines(s.lines),
                        s.balance_fen,
                        s.free_remaining,
                        ts,
                        s.request_id,
                        s.attempt,
                    ),
                ).rowcount
                if changed:
                    booked.append(s.request_id)
            db.executemany(
                "DELETE FROM unaudited WHERE kind = 'request' AND ref = ?",
                [(ref,) for ref in request_ids],
            )
            return booked

        if not request_ids and not settled:
            return []
        return self._transaction(run, write=True)

    def _release_reserved(self, db: Db, rec: RequestRecord, ts: Any, note: str) -> int:
        released = 0
        if rec.reserved_fen:
            acct = self._get_account(db, rec.account_id, lock=True)
            if acct is None:
                raise LedgerError(f"request {echo(rec.request_id)}: its account is gone")
            for line in rec.lines:
                if line.amount_fen:
                    self._post(
                        db, acct, "release", line.amount_fen, ts,
                        request_id=rec.request_id, line=line, note=note,
                    )  # fmt: skip
                    released += line.amount_fen
            self._save_account(db, acct)
        self._mark_released(db, rec, ts)
        return released

    def _mark_released(self, db: Db, rec: RequestRecord, ts: Any) -> None:
        acct = self._get_account(db, rec.account_id)
        db.execute(
            "UPDATE requests SET state = 'released', quota_units = 0, delivered = '[]',"
            " charged_fen = 0, balance_fen = ?, updated_at = ? WHERE request_id = ?",
            (acct.balance_fen if acct else 0, ts, rec.request_id),
        )
        db.execute(
            "UPDATE requests SET free_remaining = ? WHERE request_id = ?",
            (self._free_remaining(db, rec), rec.request_id),
        )

    def release(
        self,
        request_id: str,
        at: datetime,
        *,
        refund: bool = False,
        note: str = "",
        attempt: int | None = None,
    ) -> ReleaseResult:
        """See :meth:`LedgerStore.release`."""
        ts = self._ts(at)
        return self._transaction(
            lambda db: self._release(db, request_id, ts, refund, note, attempt), write=True
        )

    def _release(
        self, db: Db, request_id: str, ts: Any, refund: bool, note: str, attempt: int | None
    ) -> ReleaseResult:
        rec = self._get_request(db, request_id, lock=True)
        if rec is None:
            raise NotFoundError(f"no reservation for request {echo(request_id)}")
        released = refunded = 0
        if attempt not in (None, rec.attempts):
            return ReleaseResult(rec, False, 0, 0)
        if rec.state == "reserved" or (rec.state == "settled" and refund):
            self._mark(db, "request", request_id, ts)
        if rec.state == "reserved":
            released = self._release_reserved(db, rec, ts, note)
        elif rec.state == "settled" and refund:
            if rec.charged_fen:
                acct = self._get_account(db, rec.account_id, lock=True)
                if acct is None:
                    raise LedgerError(f"request {echo(request_id)}: its account is gone")
                for line in rec.delivered:
                    if line.amount_fen:
                        self._post(
                            db, acct, "adjustment", line.amount_fen, ts,
                            request_id=request_id, line=line, note=note or "refund",
                        )  # fmt: skip
                        refunded += line.amount_fen
                self._save_account(db, acct)
            self._mark_released(db, rec, ts)
        else:
            return ReleaseResult(rec, False, 0, 0)
        out = self._get_request(db, request_id)
        assert out is not None
        return ReleaseResult(out, True, released, refunded)

    def request(self, request_id: str) -> RequestRecord | None:
        """See :meth:`LedgerStore.request`."""
        return self._transaction(lambda db: self._get_request(db, request_id), write=False)

    def interrupted(self, older_than: datetime | None = None) -> list[RequestRecord]:
        """See :meth:`LedgerStore.interrupted`."""
        sql = f"SELECT {_REQUEST_COLS} FROM requests WHERE state = 'reserved'"
        args: tuple[Any, ...] = ()
        if older_than is not None:
            sql += " AND updated_at < ?"
            args = (self._ts(older_than),)
        sql += " ORDER BY updated_at, request_id"
        return self._transaction(
            lambda db: [self._request(r) for r in db.execute(sql, args)], write=False
        )

    def unaudited(self, older_than: datetime | None = None) -> list[tuple[UnauditedKind, str]]:
        """See :meth:`LedgerStore.unaudited`."""
        sql = "SELECT kind, ref FROM unaudited"
        args: tuple[Any, ...] = ()
        if older_than is not None:
            sql += " WHERE since < ?"
            args = (self._ts(older_than),)
        sql += " ORDER BY since, kind, ref"
        return self._transaction(
            lambda db: [(cast(UnauditedKind, k), str(r)) for k, r in db.execute(sql, args)],
            write=False,
        )

    def top_up_entry(self, reference: str) -> Entry | None:
        """See :meth:`LedgerStore.top_up_entry`."""

        def run(db: Db) -> Entry | None:
            row = db.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE kind = 'top_up' AND reference = ?",
                (reference,),
            ).fetchone()
            return None if row is None else self._entry(row)

        return self._transaction(run, write=False)

    def mark_audited(self, kind: UnauditedKind, *refs: str) -> None:
        """See :meth:`LedgerStore.mark_audited`."""

        def run(db: Db) -> None:
            for ref in refs:
                db.execute("DELETE FROM unaudited WHERE kind = ? AND ref = ?", (kind, ref))

        if refs:
            self._transaction(run, write=True)

    # --- accounts ------------------------------------------------------------------------

    def set_credit_limit(self, account_id: str, credit_limit_fen: int) -> AccountState:
        """See :meth:`LedgerStore.set_credit_limit`; also InvalidArgumentError (reason
        OVERDRAWN) if the account would be left with less than 0 fen available."""
        if credit_limit_fen:
            check_amount(credit_limit_fen, "credit_limit_fen")

        def run(db: Db) -> AccountState:
            acct = self._get_account(db, account_id, lock=True)
            if acct is None:
                raise NotFoundError(f"no account {echo(account_id)}")
            acct.credit_limit_fen = credit_limit_fen
            check_available(acct, "credit_limit_fen")
            self._save_account(db, acct)
            return acct.frozen()

        return self._transaction(run, write=True)

    def account(self, account_id: str) -> AccountState | None:
        """See :meth:`LedgerStore.account`."""

        def run(db: Db) -> AccountState | None:
            acct = self._get_account(db, account_id)
            return acct.frozen() if acct else None

        return self._transaction(run, write=False)

    def accounts(self) -> list[AccountState]:
        """See :meth:`LedgerStore.accounts`."""
        rows = self._transaction(
            lambda db: db.execute(
                "SELECT account_id, balance_fen, held_fen, credit_limit_fen FROM accounts"
                " ORDER BY account_id"
            ).fetchall(),
            write=False,
        )
        return [AccountState(str(a), int(b), int(h), int(c)) for a, b, h, c in rows]

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
        """See :meth:`LedgerStore.top_up`."""
        check_text(account_id, "account_id")
        check_amount(amount_fen, "amount_fen")
        check_text(reference, "reference")
        ts = self._ts(at)

        def run(db: Db) -> TopUpResult:
            row = db.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE kind = 'top_up' AND reference = ?",
                (reference,),
            ).fetchone()
            if row is not None:
                old = self._entry(row)
                if old.account_id != account_id or old.amount_fen != amount_fen:
                    raise InvalidArgumentError(
                        "reference",
                        "already booked for a different top-up",
                        reason="REFERENCE_REUSED",
                    )
                acct = self._get_account(db, account_id)
                assert acct is not None
                return TopUpResult(old, acct.frozen(), True)
            if create:
                db.execute(
                    "INSERT INTO accounts (account_id, created_at) VALUES (?, ?)"
                    " ON CONFLICT (account_id) DO NOTHING",
                    (account_id, ts),
                )
            acct = self._get_account(db, account_id, lock=True)
            if acct is None:
                raise NotFoundError(f"no account {echo(account_id)}")
            seq = self._post(
                db, acct, "top_up", amount_fen, ts, reference=reference, actor=actor, note=note
            )
            self._mark(db, "top_up", reference, ts)
            self._save_account(db, acct)
            return TopUpResult(self._entry_by_seq(db, seq), acct.frozen(), False)

        return self._transaction(run, write=True)

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
        """See :meth:`LedgerStore.adjust`; also InvalidArgumentError (reason OVERDRAWN)
        if the account would be left with less than 0 fen available."""
        check_amount(amount_fen, "amount_fen", signed=True)
        check_text(reference, "reference")
        ts = self._ts(at)

        def run(db: Db) -> Entry:
            if db.execute(
                "SELECT 1 FROM entries WHERE kind = 'adjustment' AND reference = ?", (reference,)
            ).fetchone():
                raise InvalidArgumentError("reference", "already booked", reason="REFERENCE_REUSED")
            acct = self._get_account(db, account_id, lock=True)
            if acct is None:
                raise NotFoundError(f"no account {echo(account_id)}")
            seq = self._post(
                db, acct, "adjustment", amount_fen, ts, reference=reference, actor=actor, note=note
            )
            if amount_fen < 0:
                check_available(acct, "amount_fen")
            self._save_account(db, acct)
            return self._entry_by_seq(db, seq)

        return self._transaction(run, write=True)

    # --- reading -------------------------------------------------------------------------

    def entries(self, account_id: str | None = None, request_id: str | None = None) -> list[Entry]:
        """See :meth:`LedgerStore.entries`."""
        sql = f"SELECT {_ENTRY_COLS} FROM entries WHERE 1 = 1"
        args: list[str] = []
        if account_id is not None:
            sql += " AND account_id = ?"
            args.append(account_id)
        if request_id is not None:
            sql += " AND request_id = ?"
            args.append(request_id)
        sql += " ORDER BY seq"
        return self._transaction(
            lambda db: [self._entry(r) for r in db.execute(sql, args)], write=False
        )

    def statement(
        self,
        account_id: str,
        start: datetime,
        end: datetime,
        *,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> StatementPage:
        """See :meth:`LedgerStore.statement`."""
        lo, hi = self._ts(start), self._ts(end)

        def run(db: Db) -> StatementPage:
            if self._get_account(db, account_id) is None:
                raise NotFoundError(f"no account {echo(account_id)}")

            def balance_before(ts: Any) -> int:
                row = db.execute(
                    "SELECT balance_fen FROM entries WHERE account_id = ? AND at < ?"
                    " ORDER BY seq DESC LIMIT 1",
                    (account_id, ts),
                ).fetchone()
                return int(row[0]) if row else 0

            rows = db.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE account_id = ? AND at >= ? AND at < ?"
                " AND seq > ? ORDER BY seq LIMIT ?",
                (account_id, lo, hi, after_seq, limit + 1),
            ).fetchall()
            page = tuple(self._entry(r) for r in rows[:limit])
            more = len(rows) > limit
            return StatementPage(
                account_id=account_id,
                opening_balance_fen=balance_before(lo),
                closing_balance_fen=balance_before(hi),
                entries=page,
                next_after_seq=page[-1].seq if more and page else 0,
            )

        return self._transaction(run, write=False)

    def recompute_balances(self) -> dict[str, Balances]:
        """See :meth:`LedgerStore.recompute_balances`."""

        def run(db: Db) -> dict[str, Balances]:
            ids = [str(r[0]) for r in db.execute("SELECT account_id FROM accounts")]
            rows: Iterable[tuple[str, str, int]] = (
                (str(a), str(k), int(n))
                for a, k, n in db.execute(
                    "SELECT account_id, kind, amount_fen FROM entries ORDER BY seq"
                )
            )
            return fold_balances(ids, rows)

        return self._transaction(run, write=False)

    def check(self) -> list[Discrepancy]:
        """See :meth:`LedgerStore.check`."""

        def run(db: Db) -> list[Discrepancy]:
            stored = {
                str(a): (int(b), int(h))
                for a, b, h in db.execute("SELECT account_id, balance_fen, held_fen FROM accounts")
            }
            entries = [
                self._entry(r)
                for r in db.execute(f"SELECT {_ENTRY_COLS} FROM entries ORDER BY seq")
            ]
            held_open = {
                str(a): int(h)
                for a, h in db.execute(
                    "SELECT account_id, SUM(reserved_fen) FROM requests WHERE state = 'reserved'"
                    " GROUP BY account_id"
                )
            }
            # The kept quota counters against a recount of the requests.
            counted = {
                (str(b), str(k), str(p)): int(n)
                for b, k, p, n in db.execute(
                    "SELECT basis, quota_key, period, COUNT(*) FROM requests"
                    " WHERE quota_units > 0 GROUP BY basis, quota_key, period"
                )
            }
            kept = {
                (str(b), str(k), str(p)): int(n)
                for b, k, p, n in db.execute(
                    "SELECT basis, quota_key, period, used FROM quota_usage WHERE used != 0"
                )
            }
            return find_discrepancies(stored, entries, held_open, counted, kept)

        return self._transaction(run, write=False)
