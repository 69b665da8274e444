"""The ledger: accounts, append-only money entries, and the metered requests.

Three tables, all in one SQLite file (WAL, ``synchronous=FULL``):

* ``accounts``: one per paying agency: ``balance_fen`` (money posted),
  ``held_fen`` (reserved for queries in flight) and ``credit_limit_fen``
  (how far below zero the balance may go). What a new query may reserve is
  ``available = balance - held + credit_limit``.
* ``entries``: append-only (triggers refuse UPDATE and DELETE). Each entry
  carries the request id (or a top-up reference), the amount, the time and
  the account's balance and held amount after it. The effect of each kind:

  ==========  ============  ==============
  kind        balance       held
  ==========  ============  ==============
  reserve                   + amount
  charge      - amount      - amount
  release                   - amount
  top_up      + amount
  adjustment  + amount (signed; a refund is a positive adjustment)
  ==========  ============  ==============

  so every balance can be recomputed from the entries alone
  (:meth:`LedgerStore.recompute_balances`, :meth:`LedgerStore.check`).
* ``requests``: one row per request id, its state
  (``reserved`` -> ``settled`` | ``released``), what was reserved and what was
  charged, and the outcome handed back, so a retried request id returns the
  original outcome instead of charging again, across restarts too.
* ``unaudited``: which requests and top-ups have ledger movements that may
  not be on the audit log yet. Every movement sets the mark in its own
  transaction; the gateway clears it once the audit record carrying the
  movement is durable, so after a crash start-up recovery knows exactly which
  few bookings to look up in the audit log (:meth:`LedgerStore.unaudited`).

:class:`SQLiteLedger` implements :class:`LedgerStore` in one SQLite file;
``BEGIN IMMEDIATE`` serializes writers across processes (the offline
``credit-gateway billing`` tool beside a running gateway).

Why one module (some 1,100 lines): it is one
class whose methods are each one transaction over the tables above, plus the
schema and the row mapping they share; splitting the transactions apart would
scatter the invariants (held amounts, quota counts, the unaudited marks) that
every method must keep together.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from gateway.billing.ledger._types import (
    MAX_AMOUNT_FEN,
    AccountState,
    Balances,
    Basis,
    Discrepancy,
    Entry,
    EntryKind,
    LedgerStore,
    PricedLine,
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
from gateway.errors import (
    InsufficientBalanceError,
    InvalidArgumentError,
    LedgerError,
    NotFoundError,
    QuotaExhaustedError,
)
from gateway.pipeline.freetext import echo
from gateway.stores.sqlite import SQLiteSetupError, ensure_format, open_durable

__all__ = ["SQLiteLedger"]

_FORMAT = "credit-gateway-ledger/1"
_QUOTA_BASES = ("free_quota", "self_allowance")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    balance_fen INTEGER NOT NULL DEFAULT 0,
    held_fen INTEGER NOT NULL DEFAULT 0 CHECK (held_fen >= 0),
    credit_limit_fen INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit_fen >= 0),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    kind TEXT NOT NULL
        CHECK (kind IN ('reserve', 'charge', 'release', 'top_up', 'adjustment')),
    amount_fen INTEGER NOT NULL,
    request_id TEXT NOT NULL DEFAULT '',
    reference TEXT NOT NULL DEFAULT '',
    department TEXT NOT NULL DEFAULT '',
    dataset TEXT NOT NULL DEFAULT '',
    balance_fen INTEGER NOT NULL,
    held_fen INTEGER NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    CHECK (kind = 'adjustment' OR amount_fen > 0)
);
-- Bookings (a request id, a top-up reference) whose movements may not be on
-- the audit log yet: set in the movement's transaction, cleared once its
-- audit record is durable. Added by CREATE IF NOT EXISTS: older ledgers gain
-- it on open, empty.
CREATE TABLE IF NOT EXISTS unaudited (
    kind TEXT NOT NULL CHECK (kind IN ('request', 'top_up')),
    ref TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (kind, ref)
);
-- A top-up or adjustment reference is booked once: the idempotency key.
CREATE UNIQUE INDEX IF NOT EXISTS entries_reference
    ON entries (kind, reference) WHERE reference != '';
CREATE INDEX IF NOT EXISTS entries_account_at ON entries (account_id, at);
CREATE INDEX IF NOT EXISTS entries_request ON entries (request_id) WHERE request_id != '';
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    basis TEXT NOT NULL CHECK (basis IN ('paid', 'free_quota', 'self_allowance')),
    state TEXT NOT NULL CHECK (state IN ('reserved', 'settled', 'released')),
    digest TEXT NOT NULL,
    quota_key TEXT NOT NULL DEFAULT '',
    period TEXT NOT NULL DEFAULT '',
    quota_limit INTEGER NOT NULL DEFAULT 0,
    quota_units INTEGER NOT NULL DEFAULT 0,
    lines TEXT NOT NULL,
    delivered TEXT NOT NULL DEFAULT '[]',
    reserved_fen INTEGER NOT NULL,
    charged_fen INTEGER NOT NULL DEFAULT 0,
    balance_fen INTEGER NOT NULL DEFAULT 0,
    free_remaining INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_quota
    ON requests (basis, quota_key, period) WHERE quota_units > 0;
CREATE INDEX IF NOT EXISTS requests_open ON requests (updated_at) WHERE state = 'reserved';
-- Quota use per (basis, key, period), kept by triggers in the same transaction
-- as the request rows: reading it is one lookup, where counting the day's
-- requests grew with every query.
CREATE TABLE IF NOT EXISTS quota_usage (
    basis TEXT NOT NULL,
    quota_key TEXT NOT NULL,
    period TEXT NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (basis, quota_key, period)
);
CREATE TRIGGER IF NOT EXISTS quota_usage_insert AFTER INSERT ON requests
    WHEN NEW.quota_units > 0
BEGIN
    INSERT INTO quota_usage (basis, quota_key, period, used)
        VALUES (NEW.basis, NEW.quota_key, NEW.period, 1)
        ON CONFLICT (basis, quota_key, period) DO UPDATE SET used = used + 1;
END;
CREATE TRIGGER IF NOT EXISTS quota_usage_update AFTER UPDATE ON requests
    WHEN (OLD.quota_units > 0) != (NEW.quota_units > 0) OR OLD.basis != NEW.basis
        OR OLD.quota_key != NEW.quota_key OR OLD.period != NEW.period
BEGIN
    UPDATE quota_usage SET used = used - 1
        WHERE OLD.quota_units > 0 AND basis = OLD.basis AND quota_key = OLD.quota_key
          AND period = OLD.period;
    INSERT INTO quota_usage (basis, quota_key, period, used)
        SELECT NEW.basis, NEW.quota_key, NEW.period, 1 WHERE NEW.quota_units > 0
        ON CONFLICT (basis, quota_key, period) DO UPDATE SET used = used + 1;
END;
"""

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _ts(when: datetime) -> str:
    # Fixed-width UTC text sorts like the instants it names, so period
    # queries are plain string comparisons on an index.
    if when.tzinfo is None:
        raise LedgerError("ledger times must be timezone-aware")
    return when.astimezone(UTC).strftime(_TS_FORMAT)


def _parse_ts(text: str) -> datetime:
    # fromisoformat reads the fixed-width form directly (trailing Z included,
    # Python 3.11+) and is an order of magnitude faster than strptime, which
    # ran for every request row read.
    return datetime.fromisoformat(text)


def _dump_lines(lines: Sequence[PricedLine]) -> str:
    return json.dumps(
        [[x.department, x.dataset, x.amount_fen] for x in lines], separators=(",", ":")
    )


def _load_lines(text: str) -> tuple[PricedLine, ...]:
    return tuple(PricedLine(str(d), str(s), int(a)) for d, s, a in json.loads(text))


@dataclass(slots=True)
class _Acct:
    """An account row being changed inside one transaction."""

    account_id: str
    balance_fen: int
    held_fen: int
    credit_limit_fen: int

    def frozen(self) -> AccountState:
        return AccountState(self.account_id, self.balance_fen, self.held_fen, self.credit_limit_fen)


_ENTRY_COLS = (
    "seq, account_id, kind, amount_fen, request_id, reference, department, dataset,"
    " balance_fen, held_fen, at, actor, note"
)
_REQUEST_COLS = (
    "request_id, account_id, basis, state, digest, quota_key, period, quota_limit, quota_units,"
    " lines, delivered, reserved_fen, charged_fen, balance_fen, free_remaining, attempts,"
    " created_at, updated_at"
)


def _entry(row: Sequence[Any]) -> Entry:
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
        at=_parse_ts(str(row[10])),
        actor=str(row[11]),
        note=str(row[12]),
    )


def _request(row: Sequence[Any]) -> RequestRecord:
    return RequestRecord(
        request_id=str(row[0]),
        account_id=str(row[1]),
        basis=cast(Basis, row[2]),
        state=cast(RequestState, row[3]),
        digest=str(row[4]),
        quota_key=str(row[5]),
        period=str(row[6]),
        quota_limit=int(row[7]),
        # row[8], quota_units: read by SQL only (the quota-count triggers).
        lines=_load_lines(str(row[9])),
        delivered=_load_lines(str(row[10])),
        reserved_fen=int(row[11]),
        charged_fen=int(row[12]),
        balance_fen=int(row[13]),
        free_remaining=int(row[14]),
        attempts=int(row[15]),
        created_at=_parse_ts(str(row[16])),
        updated_at=_parse_ts(str(row[17])),
    )


def _check_amount(amount_fen: object, field: str, *, signed: bool = False) -> int:
    # bool is an int subclass and float is not money: refuse both.
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int):
        raise InvalidArgumentError(field, "must be an integer number of fen")
    if signed:
        if amount_fen == 0 or abs(amount_fen) > MAX_AMOUNT_FEN:
            raise InvalidArgumentError(field, f"must be non-zero and within ±{MAX_AMOUNT_FEN} fen")
    elif not 0 < amount_fen <= MAX_AMOUNT_FEN:
        raise InvalidArgumentError(field, f"must be between 1 and {MAX_AMOUNT_FEN} fen")
    return amount_fen


def _check_text(value: str, field: str, *, max_len: int = 128) -> str:
    if not value or len(value) > max_len or not value.isprintable():
        raise InvalidArgumentError(field, f"must be 1 to {max_len} printable characters")
    return value


class SQLiteLedger(LedgerStore):
    """The ledger in one SQLite file: WAL, ``synchronous=FULL`` (a returned
    write survives power loss), ``BEGIN IMMEDIATE`` for every write so that
    two writers, even in two processes, never both read the same balance.

    ``create=False`` refuses to create a missing file (the offline tool must
    not make an empty ledger out of a typo). Raises LedgerError if the file
    cannot be opened or is not a ledger.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = True, busy_timeout_s: float = 10.0
    ) -> None:
        self.path = Path(path)
        # Re-entrant: a group-commit batch holds it while each operation takes it too.
        self._lock = threading.RLock()
        self._in_batch = False
        if not create and not self.path.is_file():
            raise LedgerError(f"{self.path}: no such ledger file")
        try:
            # BEGIN/COMMIT are ours, so each operation is exactly one transaction.
            self._conn = open_durable(self.path, schema=_SCHEMA, busy_timeout_s=busy_timeout_s)
            fmt = ensure_format(self._conn, _FORMAT)
        except SQLiteSetupError as err:
            raise LedgerError(f"{self.path}: {err}") from None
        except sqlite3.Error as err:
            raise LedgerError(f"{self.path}: not a usable ledger ({err})") from None
        if fmt != _FORMAT:
            raise LedgerError(f"{self.path}: unknown ledger format {fmt!r}")

    # --- transactions ----------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: every operation inside runs in one transaction (each in
        its own savepoint, so one refusal undoes only itself), and a single
        COMMIT, one fsync, makes them all durable together. Raises LedgerError
        if the commit fails; then none of them happened."""
        conn = self._conn
        with self._lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._in_batch = True
                yield
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (disk full, I/O
                    # error): none of the batch happened, so none may succeed.
                    raise LedgerError(f"{self.path}: the batch transaction was aborted")
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise LedgerError(f"{self.path}: write failed: {err}") from None
            except BaseException:
                self._rollback()
                raise
            finally:
                self._in_batch = False

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("SAVEPOINT op")
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            if isinstance(exc, sqlite3.Error):
                raise LedgerError(f"{self.path}: write failed: {exc}") from None
            raise
        conn.execute("RELEASE op")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        with self._lock:
            if self._in_batch:
                if not conn.in_transaction:
                    # Outside the batch transaction a SAVEPOINT would commit on its own.
                    raise LedgerError(f"{self.path}: the batch transaction was aborted")
                with self._savepoint() as c:
                    yield c
                return
            try:
                # IMMEDIATE takes the write lock before the first read, so the
                # balance we check is the balance we update.
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise LedgerError(f"{self.path}: write failed: {err}") from None
            except BaseException:
                self._rollback()
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        with self._lock:
            if self._in_batch:  # already inside one consistent transaction
                yield conn
                return
            try:
                conn.execute("BEGIN")  # one snapshot for every SELECT of the operation
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise LedgerError(f"{self.path}: read failed: {err}") from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            # The original error is the one to report.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    # --- helpers inside a transaction ------------------------------------------

    @staticmethod
    def _get_account(conn: sqlite3.Connection, account_id: str) -> _Acct | None:
        row = conn.execute(
            "SELECT account_id, balance_fen, held_fen, credit_limit_fen FROM accounts"
            " WHERE account_id = ?",
            (account_id,),
        ).fetchone()
        return None if row is None else _Acct(str(row[0]), int(row[1]), int(row[2]), int(row[3]))

    @staticmethod
    def _save_account(conn: sqlite3.Connection, acct: _Acct) -> None:
        conn.execute(
            "UPDATE accounts SET balance_fen = ?, held_fen = ?, credit_limit_fen = ?"
            " WHERE account_id = ?",
            (acct.balance_fen, acct.held_fen, acct.credit_limit_fen, acct.account_id),
        )

    @staticmethod
    def _post(
        conn: sqlite3.Connection,
        acct: _Acct,
        kind: EntryKind,
        amount_fen: int,
        at: str,
        *,
        request_id: str = "",
        reference: str = "",
        line: PricedLine | None = None,
        actor: str = "",
        note: str = "",
    ) -> int:
        """Append one entry and apply it to ``acct`` (saved by the caller)."""
        d_balance, d_held = entry_effect(kind, amount_fen)
        acct.balance_fen += d_balance
        acct.held_fen += d_held
        if acct.held_fen < 0:
            # Never happens unless the requests table and the entries disagree.
            raise LedgerError(f"account {acct.account_id}: held amount would go negative")
        cur = conn.execute(
            "INSERT INTO entries (account_id, kind, amount_fen, request_id, reference, department,"
            " dataset, balance_fen, held_fen, at, actor, note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        )
        return int(cur.lastrowid or 0)

    @staticmethod
    def _mark(conn: sqlite3.Connection, kind: UnauditedKind, ref: str, ts: str) -> None:
        # In the movement's own transaction: no movement without its mark.
        conn.execute(
            "INSERT OR IGNORE INTO unaudited (kind, ref, since) VALUES (?, ?, ?)", (kind, ref, ts)
        )

    @staticmethod
    def _get_request(conn: sqlite3.Connection, request_id: str) -> RequestRecord | None:
        row = conn.execute(
            f"SELECT {_REQUEST_COLS} FROM requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        return None if row is None else _request(row)

    @staticmethod
    def _used(conn: sqlite3.Connection, basis: str, quota_key: str, period: str) -> int:
        row = conn.execute(
            "SELECT used FROM quota_usage WHERE basis = ? AND quota_key = ? AND period = ?",
            (basis, quota_key, period),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _free_remaining(self, conn: sqlite3.Connection, rec: RequestRecord) -> int:
        if rec.basis not in _QUOTA_BASES:
            return 0
        return max(rec.quota_limit - self._used(conn, rec.basis, rec.quota_key, rec.period), 0)

    # --- metering -------------------------------------------------------------

    def reserve(self, spec: ReserveSpec) -> ReserveResult:
        """See :meth:`LedgerStore.reserve`."""
        at = _ts(spec.at)
        with self._write() as conn:
            attempts = 1
            created_at = at
            old = self._get_request(conn, spec.request_id)
            if old is not None:
                if old.account_id != spec.account_id or old.digest != spec.digest:
                    # Say nothing about the other request: it may be another agency's.
                    raise InvalidArgumentError(
                        "request_id",
                        "already used for a different request; use a new request id",
                        reason="REQUEST_ID_REUSED",
                    )
                if old.state != "released":
                    acct = self._get_account(conn, old.account_id)
                    return ReserveResult(
                        old, True, acct.frozen() if acct else None, self._free_remaining(conn, old)
                    )
                # Released: nothing was charged or delivered, so a retry is a
                # new attempt under the same id.
                attempts = old.attempts + 1
                created_at = _ts(old.created_at)

            basis: Basis = spec.basis
            lines = spec.lines
            units = 0
            free_remaining = 0
            if basis in _QUOTA_BASES:
                used = self._used(conn, basis, spec.quota_key, spec.period)
                if used < spec.quota_limit:
                    units = 1
                    free_remaining = spec.quota_limit - used - 1
                    lines = tuple(PricedLine(x.department, x.dataset, 0) for x in lines)
                elif basis == "self_allowance" and spec.paid_fallback:
                    basis = "paid"
                else:
                    raise _quota_error(spec)
            total = sum(x.amount_fen for x in lines)

            acct = self._get_account(conn, spec.account_id)
            if total > 0:
                available = acct.frozen().available_fen if acct else 0
                if acct is None or total > available:
                    raise _balance_error(spec.account_id, total, available, acct is None)
                for line in lines:
                    if line.amount_fen:
                        self._post(
                            conn,
                            acct,
                            "reserve",
                            line.amount_fen,
                            at,
                            request_id=spec.request_id,
                            line=line,
                        )
                self._save_account(conn, acct)

            self._mark(conn, "request", spec.request_id, at)
            conn.execute(
                f"INSERT OR REPLACE INTO requests ({_REQUEST_COLS})"
                " VALUES (?, ?, ?, 'reserved', ?, ?, ?, ?, ?, ?, '[]', ?, 0, ?, ?, ?, ?, ?)",
                (
                    spec.request_id,
                    spec.account_id,
                    basis,
                    spec.digest,
                    spec.quota_key,
                    spec.period,
                    spec.quota_limit,
                    units,
                    _dump_lines(lines),
                    total,
                    acct.balance_fen if acct else 0,
                    free_remaining,
                    attempts,
                    created_at,
                    at,
                ),
            )
            rec = self._get_request(conn, spec.request_id)
            assert rec is not None
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
        ts = _ts(at)
        with self._write() as conn:
            rec = self._get_request(conn, request_id)
            if rec is None:
                raise NotFoundError(f"no reservation for request {echo(request_id)}")
            if rec.state != "reserved" or attempt not in (None, rec.attempts):
                return SettleResult(rec, True)
            charged = tuple(x for x in rec.lines if x.key in delivered)
            self._mark(conn, "request", request_id, ts)
            if not charged:
                # Nothing delivered costs nothing, not even a free unit.
                self._release_reserved(conn, rec, ts, "nothing delivered")
            else:
                acct = self._get_account(conn, rec.account_id)
                if rec.reserved_fen:
                    if acct is None:
                        raise LedgerError(f"request {echo(request_id)}: its account is gone")
                    for line in rec.lines:
                        if line.amount_fen:
                            kind: EntryKind = "charge" if line in charged else "release"
                            self._post(
                                conn,
                                acct,
                                kind,
                                line.amount_fen,
                                ts,
                                request_id=request_id,
                                line=line,
                            )
                    self._save_account(conn, acct)
                amount = sum(x.amount_fen for x in charged)
                conn.execute(
                    "UPDATE requests SET state = 'settled', delivered = ?, charged_fen = ?,"
                    " balance_fen = ?, free_remaining = ?, updated_at = ? WHERE request_id = ?",
                    (
                        _dump_lines(charged),
                        amount,
                        acct.balance_fen if acct else 0,
                        self._free_remaining(conn, rec),
                        ts,
                        request_id,
                    ),
                )
            out = self._get_request(conn, request_id)
            assert out is not None
            return SettleResult(out, False)

    def _release_reserved(
        self, conn: sqlite3.Connection, rec: RequestRecord, ts: str, note: str
    ) -> int:
        released = 0
        if rec.reserved_fen:
            acct = self._get_account(conn, rec.account_id)
            if acct is None:
                raise LedgerError(f"request {rec.request_id!r}: its account is gone")
            for line in rec.lines:
                if line.amount_fen:
                    self._post(
                        conn,
                        acct,
                        "release",
                        line.amount_fen,
                        ts,
                        request_id=rec.request_id,
                        line=line,
                        note=note,
                    )
                    released += line.amount_fen
            self._save_account(conn, acct)
        self._mark_released(conn, rec, ts)
        return released

    def _mark_released(self, conn: sqlite3.Connection, rec: RequestRecord, ts: str) -> None:
        acct = self._get_account(conn, rec.account_id)
        conn.execute(
            "UPDATE requests SET state = 'released', quota_units = 0, delivered = '[]',"
            " charged_fen = 0, balance_fen = ?, updated_at = ? WHERE request_id = ?",
            (acct.balance_fen if acct else 0, ts, rec.request_id),
        )
        conn.execute(
            "UPDATE requests SET free_remaining = ? WHERE request_id = ?",
            (self._free_remaining(conn, rec), rec.request_id),
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
        ts = _ts(at)
        with self._write() as conn:
            rec = self._get_request(conn, request_id)
            if rec is None:
                raise NotFoundError(f"no reservation for request {echo(request_id)}")
            released = refunded = 0
            if attempt not in (None, rec.attempts):
                return ReleaseResult(rec, False, 0, 0)
            if rec.state == "reserved" or (rec.state == "settled" and refund):
                self._mark(conn, "request", request_id, ts)
            if rec.state == "reserved":
                released = self._release_reserved(conn, rec, ts, note)
            elif rec.state == "settled" and refund:
                if rec.charged_fen:
                    acct = self._get_account(conn, rec.account_id)
                    if acct is None:
                        raise LedgerError(f"request {echo(request_id)}: its account is gone")
                    for line in rec.delivered:
                        if line.amount_fen:
                            self._post(
                                conn,
                                acct,
                                "adjustment",
                                line.amount_fen,
                                ts,
                                request_id=request_id,
                                line=line,
                                note=note or "refund",
                            )
                            refunded += line.amount_fen
                    self._save_account(conn, acct)
                self._mark_released(conn, rec, ts)
            else:
                return ReleaseResult(rec, False, 0, 0)
            out = self._get_request(conn, request_id)
            assert out is not None
            return ReleaseResult(out, True, released, refunded)

    def request(self, request_id: str) -> RequestRecord | None:
        """See :meth:`LedgerStore.request`."""
        with self._read() as conn:
            return self._get_request(conn, request_id)

    def interrupted(self, older_than: datetime | None = None) -> list[RequestRecord]:
        """See :meth:`LedgerStore.interrupted`."""
        sql = f"SELECT {_REQUEST_COLS} FROM requests WHERE state = 'reserved'"
        args: tuple[str, ...] = ()
        if older_than is not None:
            sql += " AND updated_at < ?"
            args = (_ts(older_than),)
        with self._read() as conn:
            return [_request(r) for r in conn.execute(sql + " ORDER BY updated_at", args)]

    def unaudited(self, older_than: datetime | None = None) -> list[tuple[UnauditedKind, str]]:
        """See :meth:`LedgerStore.unaudited`."""
        sql = "SELECT kind, ref FROM unaudited"
        args: tuple[str, ...] = ()
        if older_than is not None:
            sql += " WHERE since < ?"
            args = (_ts(older_than),)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY since, kind, ref", args).fetchall()
            return [(cast(UnauditedKind, k), str(r)) for k, r in rows]

    def top_up_entry(self, reference: str) -> Entry | None:
        """See :meth:`LedgerStore.top_up_entry`."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE kind = 'top_up' AND reference = ?",
                (reference,),
            ).fetchone()
            return None if row is None else _entry(row)

    def mark_audited(self, kind: UnauditedKind, *refs: str) -> None:
        """See :meth:`LedgerStore.mark_audited`."""
        with self._write() as conn:
            conn.executemany(
                "DELETE FROM unaudited WHERE kind = ? AND ref = ?", [(kind, r) for r in refs]
            )

    # --- accounts ---------------------------------------------------------------

    def set_credit_limit(self, account_id: str, credit_limit_fen: int) -> AccountState:
        """See :meth:`LedgerStore.set_credit_limit`."""
        if credit_limit_fen:
            _check_amount(credit_limit_fen, "credit_limit_fen")
        with self._write() as conn:
            acct = self._get_account(conn, account_id)
            if acct is None:
                raise NotFoundError(f"no account {echo(account_id)}")
            acct.credit_limit_fen = credit_limit_fen
            self._save_account(conn, acct)
            return acct.frozen()

    def account(self, account_id: str) -> AccountState | None:
        """See :meth:`LedgerStore.account`."""
        with self._read() as conn:
            acct = self._get_account(conn, account_id)
            return acct.frozen() if acct else None

    def accounts(self) -> list[AccountState]:
        """See :meth:`LedgerStore.accounts`."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT account_id, balance_fen, held_fen, credit_limit_fen FROM accounts"
                " ORDER BY account_id"
            ).fetchall()
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
        _check_text(account_id, "account_id")
        _check_amount(amount_fen, "amount_fen")
        _check_text(reference, "reference")
        ts = _ts(at)
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE kind = 'top_up' AND reference = ?",
                (reference,),
            ).fetchone()
            if row is not None:
                old = _entry(row)
                if old.account_id != account_id or old.amount_fen != amount_fen:
                    raise InvalidArgumentError(
                        "reference",
                        "already booked for a different top-up",
                        reason="REFERENCE_REUSED",
                    )
                acct = self._get_account(conn, account_id)
                assert acct is not None
                return TopUpResult(old, acct.frozen(), True)
            acct = self._get_account(conn, account_id)
            if acct is None:
                if not create:
                    raise NotFoundError(f"no account {echo(account_id)}")
                conn.execute(
                    "INSERT INTO accounts (account_id, created_at) VALUES (?, ?)", (account_id, ts)
                )
                acct = _Acct(account_id, 0, 0, 0)
            seq = self._post(
                conn, acct, "top_up", amount_fen, ts, reference=reference, actor=actor, note=note
            )
            self._mark(conn, "top_up", reference, ts)
            self._save_account(conn, acct)
            entry = _entry(
                conn.execute(f"SELECT {_ENTRY_COLS} FROM entries WHERE seq = ?", (seq,)).fetchone()
            )
            return TopUpResult(entry, acct.frozen(), False)

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
        """See :meth:`LedgerStore.adjust`."""
        _check_amount(amount_fen, "amount_fen", signed=True)
        _check_text(reference, "reference")
        ts = _ts(at)
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM entries WHERE kind = 'adjustment' AND reference = ?", (reference,)
            ).fetchone():
                raise InvalidArgumentError("reference", "already booked", reason="REFERENCE_REUSED")
            acct = self._get_account(conn, account_id)
            if acct is None:
                raise NotFoundError(f"no account {echo(account_id)}")
            seq = self._post(
                conn,
                acct,
                "adjustment",
                amount_fen,
                ts,
                reference=reference,
                actor=actor,
                note=note,
            )
            self._save_account(conn, acct)
            return _entry(
                conn.execute(f"SELECT {_ENTRY_COLS} FROM entries WHERE seq = ?", (seq,)).fetchone()
            )

    # --- reading ---------------------------------------------------------------

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
        with self._read() as conn:
            return [_entry(r) for r in conn.execute(sql + " ORDER BY seq", args)]

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
        lo, hi = _ts(start), _ts(end)
        with self._read() as conn:
            if self._get_account(conn, account_id) is None:
                raise NotFoundError(f"no account {echo(account_id)}")

            def balance_before(ts: str) -> int:
                row = conn.execute(
                    "SELECT balance_fen FROM entries WHERE account_id = ? AND at < ?"
                    " ORDER BY seq DESC LIMIT 1",
                    (account_id, ts),
                ).fetchone()
                return int(row[0]) if row else 0

            rows = conn.execute(
                f"SELECT {_ENTRY_COLS} FROM entries WHERE account_id = ? AND at >= ? AND at < ?"
                " AND seq > ? ORDER BY seq LIMIT ?",
                (account_id, lo, hi, after_seq, limit + 1),
            ).fetchall()
            page = tuple(_entry(r) for r in rows[:limit])
            more = len(rows) > limit
            return StatementPage(
                account_id=account_id,
                opening_balance_fen=balance_before(lo),
                closing_balance_fen=balance_before(hi),
                entries=page,
                next_after_seq=page[-1].seq if more and page else 0,
            )

    def recompute_balances(self) -> dict[str, Balances]:
        """See :meth:`LedgerStore.recompute_balances`."""
        folded: dict[str, list[int]] = {}
        with self._read() as conn:
            for acct_id in conn.execute("SELECT account_id FROM accounts"):
                folded[str(acct_id[0])] = [0, 0]
            for acct_id, kind, amount in conn.execute(
                "SELECT account_id, kind, amount_fen FROM entries ORDER BY seq"
            ):
                d_balance, d_held = entry_effect(str(kind), int(amount))
                totals = folded.setdefault(str(acct_id), [0, 0])
                totals[0] += d_balance
                totals[1] += d_held
        return {a: Balances(b, h) for a, (b, h) in sorted(folded.items())}

    def check(self) -> list[Discrepancy]:
        """See :meth:`LedgerStore.check`."""
        problems: list[Discrepancy] = []
        running: dict[str, list[int]] = {}
        with self._read() as conn:
            stored = {
                str(a): (int(b), int(h))
                for a, b, h in conn.execute(
                    "SELECT account_id, balance_fen, held_fen FROM accounts"
                )
            }
            for row in conn.execute(f"SELECT {_ENTRY_COLS} FROM entries ORDER BY seq"):
                e = _entry(row)
                totals = running.setdefault(e.account_id, [0, 0])
                d_balance, d_held = entry_effect(e.kind, e.amount_fen)
                totals[0] += d_balance
                totals[1] += d_held
                if (e.balance_fen, e.held_fen) != tuple(totals):
                    problems.append(
                        Discrepancy(
                            e.account_id,
                            f"entry {e.seq}: records balance {e.balance_fen}/held {e.held_fen},"
                            f" entries sum to {totals[0]}/{totals[1]}",
                        )
                    )
                if totals[1] < 0:
                    problems.append(
                        Discrepancy(e.account_id, f"entry {e.seq}: held amount below zero")
                    )
            held_open = {
                str(a): int(h)
                for a, h in conn.execute(
                    "SELECT account_id, SUM(reserved_fen) FROM requests WHERE state = 'reserved'"
                    " GROUP BY account_id"
                )
            }
            # The trigger-kept quota counters against a recount of the requests.
            counted = {
                (str(b), str(k), str(p)): int(n)
                for b, k, p, n in conn.execute(
                    "SELECT basis, quota_key, period, COUNT(*) FROM requests"
                    " WHERE quota_units > 0 GROUP BY basis, quota_key, period"
                )
            }
            kept = {
                (str(b), str(k), str(p)): int(n)
                for b, k, p, n in conn.execute(
                    "SELECT basis, quota_key, period, used FROM quota_usage WHERE used != 0"
                )
            }
            if counted != kept:
                problems.append(Discrepancy("", "quota counters disagree with the requests"))
        for acct_id in sorted(stored.keys() | running.keys()):
            have = stored.get(acct_id)
            want = tuple(running.get(acct_id, [0, 0]))
            if have is None:
                problems.append(Discrepancy(acct_id, "entries for an account that does not exist"))
            elif have != want:
                problems.append(
                    Discrepancy(
                        acct_id,
                        f"stored balance {have[0]}/held {have[1]},"
                        f" entries sum to {want[0]}/{want[1]}",
                    )
                )
            if have is not None and have[1] != held_open.get(acct_id, 0):
                problems.append(
                    Discrepancy(
                        acct_id,
                        f"held {have[1]} but open reservations total {held_open.get(acct_id, 0)}",
                    )
                )
        return problems

    def close(self) -> None:
        """Close the connection (idempotent for SQLite; no call may follow)."""
        with self._lock:
            self._conn.close()


def _quota_error(spec: ReserveSpec) -> QuotaExhaustedError:
    if spec.basis == "self_allowance":
        message = (
            f"the {spec.quota_limit} free self-queries of {spec.period} are used"
            f" (Art. 17); query in paid mode, or again after {spec.resets_at}"
        )
    else:
        message = (
            f"the free-mode quota of {spec.quota_limit} queries a day is used up;"
            f" it resets at {spec.resets_at}"
        )
    return QuotaExhaustedError(
        message,
        metadata={"resets_at": spec.resets_at, "quota": str(spec.quota_limit), "basis": spec.basis},
    )


def _balance_error(
    account_id: str, needed: int, available: int, missing: bool
) -> InsufficientBalanceError:
    what = (
        f"no account for {echo(account_id)}"
        if missing
        else f"account {echo(account_id)} has {available} fen available"
    )
    return InsufficientBalanceError(
        f"this query costs {needed} fen; {what}",
        metadata={
            "needed_fen": str(needed),
            "available_fen": str(available),
            "account": account_id,
        },
    )
