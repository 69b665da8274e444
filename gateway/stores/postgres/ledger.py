"""The ledger on PostgreSQL: one database shared by every gateway process on every host.

    pool = open_pool(config.storage.target_for("ledger"))
    ledger = PostgresLedger(pool)          # after migrate.require_current
    ledger.reserve(spec)

The operations are :class:`gateway.billing.ledger.SqlLedger`'s, the same as SQLite's
(tables in migrations/0002_ledger.sql, schema ``ledger``). What PostgreSQL changes:

* **Locking.** Each write is one READ COMMITTED transaction; the rows it changes are
  read ``FOR UPDATE`` (request row, then its free-unit counter, then the account), so two
  processes never both spend the same balance or the same free unit. A reservation
  claims its id with ``INSERT ... ON CONFLICT (request_id) DO NOTHING``: of two
  processes reserving one id at once, the second waits for the first's commit and then
  returns the stored reservation. ``accounts`` has a CHECK that the available amount
  never goes below zero, whichever code writes.
* **Retries.** A transaction that loses a race (unique violation on a top-up reference,
  deadlock, serialization failure) is rolled back and run again, at most
  :data:`RETRIES` times: every operation is a function of the database alone, so a
  rerun decides afresh from what the winner committed.
* **Reads** run in REPEATABLE READ, READ ONLY: ``check`` and statements see one snapshot.
* **Durability.** A call returns after COMMIT, with the server's ``synchronous_commit``
  (keep it ``on``); there is no per-process batch (see :mod:`gateway.billing.ledger._worker`):
  :attr:`workers` threads run transactions side by side and the server shares WAL flushes.
* **Round trips.** The two hot transactions, a reservation and a settlement, run first
  as one statement each, autocommitted (``ledger.reserve_fast`` and
  ``ledger.settle_fast``, migrations/0005_ledger_fast_path.sql: one round trip instead
  of about nine). They cover the common path only (a new request id that is covered;
  an open reservation of which something was delivered) and raise SQLSTATE ``CGL01``
  for anything else, which rolls the statement back whole; the portable transaction
  then decides, with its exact refusals and replays. The contract and meter suites run
  the same tests on both backends, so the two paths cannot drift apart unseen.
* **Names.** The portable SQL names tables bare; each statement is rewritten once (and
  cached) to the ``ledger.`` schema and ``%s`` placeholders, so no session state
  (``search_path``) is needed and a transaction-pooling PgBouncer is fine.

Storage failures raise LedgerError with the SQLSTATE and the server's primary message,
never its DETAIL (which can quote row values). Pool acquisition waits at most the pool's
timeout (then LedgerError).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.billing.ledger import (
    AccountState,
    ReserveResult,
    ReserveSpec,
    SettleResult,
    SqlLedger,
)
from gateway.billing.ledger._engine import _REQUEST_COLS, Db
from gateway.billing.ledger._rules import QUOTA_BASES, dump_lines, free_lines
from gateway.errors import LedgerError

__all__ = ["RETRIES", "PostgresLedger"]

_T = TypeVar("_T")

#: Attempts of one operation that keeps losing races before LedgerError.
RETRIES = 5
_TABLES = re.compile(r"\b(accounts|entries|requests|unaudited|quota_usage)\b")
_RETRYABLE = (
    pgerrors.UniqueViolation,
    pgerrors.DeadlockDetected,
    pgerrors.SerializationFailure,
)


#: SQLSTATE a fast-path function raises where the portable transaction must decide.
_SLOW_PATH = "CGL01"
_ROW = ", ".join(f"(f.o_request).{c.strip()}" for c in _REQUEST_COLS.split(","))
#: How many columns of a fast-path row are the request's (the account's follow).
_NCOLS = len(_REQUEST_COLS.split(","))
_RESERVE_FAST = (
    f"SELECT {_ROW}, f.o_has_account, f.o_balance_fen, f.o_held_fen, f.o_credit_limit_fen,"
    " f.o_free_remaining FROM ledger.reserve_fast("
    "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) AS f"
).encode()
# A function with one composite OUT parameter returns that row itself.
_SETTLE_FAST = (
    "SELECT "
    + ", ".join(f"f.{c.strip()}" for c in _REQUEST_COLS.split(","))
    + " FROM ledger.settle_fast(%s, %s, %s, %s, %s) AS f"
).encode()


def _to_pg(sql: str) -> str:
    return _TABLES.sub(r"ledger.\1", sql).replace("?", "%s")


class _PgDb:
    """A psycopg connection that speaks the portable SQL (see the module docstring)."""

    __slots__ = ("_conn", "_sql")

    def __init__(self, conn: psycopg.Connection[Any], cache: dict[str, bytes]) -> None:
        self._conn = conn
        self._sql = cache

    def _pg(self, sql: str) -> bytes:
        pg = self._sql.get(sql)
        if pg is None:
            pg = self._sql[sql] = _to_pg(sql).encode()
        return pg

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Any:
        return self._conn.execute(self._pg(sql), tuple(args))

    def executemany(self, sql: str, args: Sequence[Sequence[Any]], /) -> Any:
        with self._conn.cursor() as cur:
            cur.executemany(self._pg(sql), [tuple(a) for a in args])


def _describe(exc: psycopg.Error) -> str:
    diag = exc.diag
    return f"{exc.sqlstate or 'no SQLSTATE'} {diag.message_primary or type(exc).__name__}"


class PostgresLedger(SqlLedger):
    """:class:`~gateway.billing.ledger.LedgerStore` over a psycopg pool (see the module
    docstring). Thread-safe: every operation borrows a connection for its transaction.
    ``owns_pool``: :meth:`close` closes the pool too."""

    for_update = " FOR UPDATE"

    def __init__(
        self, pool: ConnectionPool[psycopg.Connection[Any]], *, owns_pool: bool = True
    ) -> None:
        self._pool = pool
        self._owns_pool = owns_pool
        self._sql: dict[str, bytes] = {}
        self._closed = threading.Event()

    @property
    def workers(self) -> int:
        """Threads :class:`~gateway.billing.ledger.AsyncLedger` may run at once: the
        pool's size, so no worker waits for a connection another worker holds."""
        return int(self._pool.max_size)

    def _to_db_time(self, when: datetime) -> datetime:
        return when.astimezone(UTC)

    def _from_db_time(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise LedgerError(f"ledger time column holds {type(value).__name__}")
        return value.astimezone(UTC)

    def _lock_quota(self, db: Db, basis: str, quota_key: str, period: str) -> None:
        # Make the counter row exist, then lock it: two processes taking the last free
        # unit wait for each other instead of both reading "one left".
        db.execute(
            "INSERT INTO quota_usage (basis, quota_key, period, used) VALUES (?, ?, ?, 0)"
            " ON CONFLICT (basis, quota_key, period) DO NOTHING",
            (basis, quota_key, period),
        )
        db.execute(
            "SELECT used FROM quota_usage WHERE basis = ? AND quota_key = ? AND period = ?"
            " FOR UPDATE",
            (basis, quota_key, period),
        )

    # --- the fast path (one statement per booking) -------------------------------------

    def reserve(self, spec: ReserveSpec) -> ReserveResult:
        """See :meth:`LedgerStore.reserve`: one statement on the common path."""
        free = spec.basis in QUOTA_BASES
        args = (
            spec.request_id,
            spec.account_id,
            spec.basis,
            spec.digest,
            spec.quota_key,
            spec.period,
            spec.quota_limit,
            [x.department for x in spec.lines],
            [x.dataset for x in spec.lines],
            [x.amount_fen for x in spec.lines],
            dump_lines(spec.lines),
            dump_lines(free_lines(spec.lines)) if free else "[]",
            self._ts(spec.at),
        )
        row = self._fast(_RESERVE_FAST, args)
        if row is None:
            return super().reserve(spec)
        rec = self._request(row[:_NCOLS])
        has_account, balance, held, credit, free_remaining = row[_NCOLS:]
        account = AccountState(spec.account_id, balance, held, credit) if has_account else None
        return ReserveResult(rec, False, account, int(free_remaining))

    def settle(
        self,
        request_id: str,
        delivered: frozenset[tuple[str, str]],
        at: datetime,
        *,
        attempt: int | None = None,
    ) -> SettleResult:
        """See :meth:`LedgerStore.settle`: one statement on the common path."""
        keys = sorted(delivered)
        args = (
            request_id,
            [d for d, _ in keys],
            [s for _, s in keys],
            attempt,
            self._ts(at),
        )
        row = self._fast(_SETTLE_FAST, args)
        if row is None:
            return super().settle(request_id, delivered, at, attempt=attempt)
        return SettleResult(self._request(row), False)

    def _fast(self, sql: bytes, args: Sequence[Any]) -> Any:
        """Run one fast-path statement in its own (autocommitted) transaction: its row,
        or None where the portable transaction must decide. Raises LedgerError."""

        def run(conn: psycopg.Connection[Any]) -> Any:
            conn.autocommit = True
            try:
                return conn.execute(sql, args).fetchone()
            except psycopg.Error as exc:
                if exc.sqlstate == _SLOW_PATH:
                    return None
                raise
            finally:
                conn.autocommit = False

        return self._retrying("write", run)

    def _transaction(self, fn: Callable[[Db], _T], *, write: bool) -> _T:
        def run(conn: psycopg.Connection[Any]) -> _T:
            with conn.transaction():
                if not write:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return fn(_PgDb(conn, self._sql))

        return self._retrying("write" if write else "read", run)

    def _retrying(self, what: str, run: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``run(conn)`` on a pooled connection, run again after a serialization failure
        or a deadlock (:data:`RETRIES` tries in all). Raises LedgerError."""
        if self._closed.is_set():
            raise LedgerError("the ledger is closed")
        for attempt in range(1, RETRIES + 1):
            try:
                with self._pool.connection() as conn:
                    return run(conn)
            except _RETRYABLE as exc:
                if attempt == RETRIES:
                    raise LedgerError(
                        f"ledger database: {what} kept conflicting ({_describe(exc)})"
                    ) from None
            except PoolTimeout:
                raise LedgerError(
                    f"ledger database: no connection within {self._pool.timeout:g} s"
                ) from None
            except psycopg.Error as exc:
                raise LedgerError(f"ledger database: {what} failed ({_describe(exc)})") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the pool if this store owns it (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._owns_pool:
            self._pool.close()
