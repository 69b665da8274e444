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

from gateway.billing.ledger import SqlLedger
from gateway.billing.ledger._engine import Db
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


def _to_pg(sql: str) -> str:
    return _TABLES.sub(r"ledger.\1", sql).replace("?", "%s")


class _PgDb:
    """A psycopg connection that speaks the portable SQL (see the module docstring)."""

    __slots__ = ("_conn", "_sql")

    def __init__(self, conn: psycopg.Connection[Any], cache: dict[str, str]) -> None:
        self._conn = conn
        self._sql = cache

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Any:
        pg = self._sql.get(sql)
        if pg is None:
            pg = self._sql[sql] = _to_pg(sql)
        return self._conn.execute(pg.encode(), tuple(args))


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
        self._sql: dict[str, str] = {}
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

    def _transaction(self, fn: Callable[[Db], _T], *, write: bool) -> _T:
        what = "write" if write else "read"
        if self._closed.is_set():
            raise LedgerError("the ledger is closed")
        for attempt in range(1, RETRIES + 1):
            try:
                with self._pool.connection() as conn, conn.transaction():
                    if not write:
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    return fn(_PgDb(conn, self._sql))
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
