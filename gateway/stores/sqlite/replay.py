"""The ``jti`` table behind replay protection, in one SQLite file (standard library only).

Implements :class:`gateway.stores.replay.JtiStore` (the row's meaning is there). Every
gateway process that opens the same file shares the rows, so a ``jti`` seen by one
process is known to the others on the host and survives a restart.

    store = SQLiteJtiStore("replay.sqlite", max_entries=1_000_000)
    store.claim("iss", "jti-1", sha256_of_token, expires_at=exp + 60, now=time.time())

:meth:`SQLiteJtiStore.claim` is one ``BEGIN IMMEDIATE`` transaction (the write lock is
taken first, so two processes claiming one ``jti`` are serialized): purge at most
:data:`PURGE_BATCH` expired rows, then one upsert that inserts the row, or keeps it when the
same token string comes back, or takes it over when the old row has expired, and otherwise
changes nothing: ``rowcount`` 0 means a replay. A row count kept by triggers (exact, read
in O(1)) enforces ``max_entries``: a *new* row beyond it is rolled back and reported
:attr:`Claim.FULL`; an unexpired row is never evicted to make room, because forgetting an
unexpired ``jti`` is exactly the replay this table exists to stop.

The file is opened by :func:`gateway.stores.sqlite.open_durable` (WAL, ``synchronous=FULL``):
a claim that returned is on disk, so a crash does not let the last tokens be replayed.
Every method raises :class:`~gateway.stores.replay.JtiStoreError`, the interface's one
error, as the PostgreSQL store does (never :class:`sqlite3.Error`: a caller of the interface
need not know the backend); opening raises it too, or
:class:`~gateway.stores.sqlite.SQLiteSetupError` when the file cannot be made durable.
:mod:`gateway.auth.replay` maps them to the gateway's errors. Messages name the operation and
SQLite's error, never a token, ``jti`` or issuer (SQLite's messages never quote bound values).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

from gateway.stores.replay import PURGE_BATCH, Claim, JtiStore, JtiStoreError
from gateway.stores.sqlite import ensure_format, open_durable

__all__ = ["FORMAT", "SQLiteJtiStore"]

_T = TypeVar("_T")

#: The file format this module writes (``meta.format``).
FORMAT = "credit-gateway replay-store 1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_jti (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    token_sha256 BLOB NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (issuer, jti)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_jti_expiry ON seen_jti (expires_at);
CREATE TABLE IF NOT EXISTS seen_jti_count (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO seen_jti_count (one, n) VALUES (1, (SELECT count(*) FROM seen_jti));
CREATE TRIGGER IF NOT EXISTS seen_jti_added AFTER INSERT ON seen_jti
BEGIN UPDATE seen_jti_count SET n = n + 1 WHERE one = 1; END;
CREATE TRIGGER IF NOT EXISTS seen_jti_removed AFTER DELETE ON seen_jti
BEGIN UPDATE seen_jti_count SET n = n - 1 WHERE one = 1; END;
"""

# Inserted, or the same token string again (a no-op update), or an expired row taken
# over; a live row of another token string is left alone (rowcount 0: a replay).
_UPSERT = """
INSERT INTO seen_jti (issuer, jti, token_sha256, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (issuer, jti) DO UPDATE
    SET token_sha256 = excluded.token_sha256,
        expires_at = max(expires_at, excluded.expires_at)
    WHERE token_sha256 = excluded.token_sha256 OR expires_at <= ?
"""

_PURGE = """
DELETE FROM seen_jti WHERE (issuer, jti) IN (
    SELECT issuer, jti FROM seen_jti WHERE expires_at <= ? ORDER BY expires_at LIMIT ?
)
"""


class SQLiteJtiStore(JtiStore):
    """Seen ``(issuer, jti)`` pairs in an SQLite file shared by processes.

    Thread-safe (one connection behind a lock); every method is one transaction.
    Closed by :meth:`close`, or when garbage-collected.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_entries: int = 1_000_000) -> None:
        """Open or create ``path``.

        Raises:
            ValueError: ``max_entries`` is not positive.
            SQLiteSetupError: the file cannot be put in WAL mode.
            JtiStoreError: the file cannot be opened or is not this store's format.
        """
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        try:
            self._conn = open_durable(path, schema=_SCHEMA)
        except sqlite3.Error as exc:
            raise JtiStoreError(_describe("open", exc)) from None
        self._close = weakref.finalize(self, self._conn.close)
        try:
            found = ensure_format(self._conn, FORMAT)
        except sqlite3.Error as exc:
            self._close()
            raise JtiStoreError(_describe("open", exc)) from None
        except BaseException:
            self._close()
            raise
        if found != FORMAT:
            self._close()
            raise JtiStoreError(f"open: file format {found!r}, expected {FORMAT!r}")
        self._lock = threading.Lock()

    def _locked(self, op: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` on the connection under the lock; sqlite3.Error -> JtiStoreError."""
        with self._lock:
            try:
                return body(self._conn)
            except sqlite3.Error as exc:
                raise JtiStoreError(_describe(op, exc)) from None

    def claim(
        self, issuer: str, jti: str, token_sha256: bytes, *, expires_at: float, now: float
    ) -> Claim:
        """Record that the token hashing to ``token_sha256`` uses ``(issuer, jti)`` until
        ``expires_at``; first purge up to :data:`PURGE_BATCH` rows expired at ``now``.

        Raises JtiStoreError (the transaction is rolled back).
        """

        def run(conn: sqlite3.Connection) -> Claim:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_PURGE, (now, PURGE_BATCH))
                before = self._count(conn)
                cur = conn.execute(_UPSERT, (issuer, jti, token_sha256, expires_at, now))
                if cur.rowcount == 0:
                    conn.execute("COMMIT")  # the purge
                    return Claim.REPLAYED
                if before >= self.max_entries and self._count(conn) > before:
                    conn.execute("ROLLBACK")
                    return Claim.FULL
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return Claim.ACCEPTED

        return self._locked("claim", run)

    def purge(self, now: float, *, batch: int = PURGE_BATCH) -> int:
        """Delete up to ``batch`` rows expired at ``now``; returns how many.

        Raises JtiStoreError."""
        return self._locked("purge", lambda conn: conn.execute(_PURGE, (now, batch)).rowcount)

    def __len__(self) -> int:
        """Rows held (expired ones not yet purged included). Raises JtiStoreError."""
        return self._locked("count", self._count)

    def next_expiry(self) -> float | None:
        """When the earliest row expires (Unix seconds), or None if empty. Raises
        JtiStoreError."""
        row = self._locked(
            "read", lambda conn: conn.execute("SELECT min(expires_at) FROM seen_jti").fetchone()
        )
        return None if row[0] is None else float(row[0])

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._close()

    @staticmethod
    def _count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT n FROM seen_jti_count WHERE one = 1").fetchone()[0])


def _describe(op: str, exc: sqlite3.Error) -> str:
    """``op`` and SQLite's error (its name and message), for the operator's log."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return f"{op}: {name} ({exc})"
