"""The ``jti`` store on PostgreSQL: replay protection shared by every process on every host.

    store = PostgresJtiStore(open_pool(target, max_size=2), max_entries=1_000_000)
    store.claim("iss", "jti-1", sha256_of_token, expires_at=exp + 60, now=time.time())

Implements :class:`gateway.stores.replay.JtiStore` over the table ``replay_jti``
(migrations/0003_replay.sql). :meth:`PostgresJtiStore.claim` is one READ COMMITTED
transaction: purge at most :data:`~gateway.stores.replay.PURGE_BATCH` expired rows
(``FOR UPDATE SKIP LOCKED``: two purgers never wait for each other), then one upsert
that inserts the row, keeps it for the same token string, or takes over an expired one,
and otherwise changes nothing (no row returned: a replay). Of two processes claiming one
``jti`` with different tokens at once, the second's upsert waits for the first's commit
and then finds the row: one is ACCEPTED, the other REPLAYED. A row count kept by
statement triggers enforces ``max_entries`` exactly: a new row beyond it is rolled back
(:attr:`~gateway.stores.replay.Claim.FULL`); an unexpired row is never evicted.

A claim returns after COMMIT (keep the server's ``synchronous_commit`` on: a crash must
not forget the last ``jti``s). Storage failures raise
:class:`~gateway.stores.replay.JtiStoreError` with the SQLSTATE, never row values.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.stores.replay import PURGE_BATCH, Claim, JtiStore, JtiStoreError

__all__ = ["PostgresJtiStore"]

_PURGE = """
DELETE FROM replay_jti WHERE (issuer, jti) IN (
    SELECT issuer, jti FROM replay_jti WHERE expires_at <= %s
    ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED
)
"""

# Inserted (xmax = 0), or the same token string again, or an expired row taken over;
# a live row of another token string is left alone (no row returned: a replay).
_UPSERT = """
INSERT INTO replay_jti AS t (issuer, jti, token_sha256, expires_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (issuer, jti) DO UPDATE
    SET token_sha256 = excluded.token_sha256,
        expires_at = greatest(t.expires_at, excluded.expires_at)
    WHERE t.token_sha256 = excluded.token_sha256 OR t.expires_at <= %s
RETURNING (xmax = 0) AS inserted
"""


class PostgresJtiStore(JtiStore):
    """Seen ``(issuer, jti)`` pairs in PostgreSQL (see the module docstring).
    Thread-safe; ``owns_pool``: :meth:`close` closes the pool too.

    Raises ValueError when ``max_entries`` is not positive."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        *,
        max_entries: int = 1_000_000,
        owns_pool: bool = True,
    ) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._pool = pool
        self._owns_pool = owns_pool
        self._closed = False

    def claim(
        self, issuer: str, jti: str, token_sha256: bytes, *, expires_at: float, now: float
    ) -> Claim:
        """See :meth:`JtiStore.claim`. Raises JtiStoreError (the claim is undone)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(_PURGE, (now, PURGE_BATCH))
                row = conn.execute(_UPSERT, (issuer, jti, token_sha256, expires_at, now)).fetchone()
                if row is None:
                    return Claim.REPLAYED  # the purge commits
                if row[0] and self._count(conn) > self.max_entries:
                    raise _Full
                return Claim.ACCEPTED
        except _Full:
            return Claim.FULL
        except (psycopg.Error, PoolTimeout) as exc:
            raise JtiStoreError(_describe("claim", exc)) from None

    def purge(self, now: float, *, batch: int = PURGE_BATCH) -> int:
        """See :meth:`JtiStore.purge`. Raises JtiStoreError."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                return conn.execute(_PURGE, (now, batch)).rowcount
        except (psycopg.Error, PoolTimeout) as exc:
            raise JtiStoreError(_describe("purge", exc)) from None

    def __len__(self) -> int:
        """See :meth:`JtiStore.__len__`. Raises JtiStoreError."""
        try:
            with self._pool.connection() as conn:
                return self._count(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise JtiStoreError(_describe("count", exc)) from None

    def next_expiry(self) -> float | None:
        """See :meth:`JtiStore.next_expiry`. Raises JtiStoreError."""
        try:
            with self._pool.connection() as conn:
                row = conn.execute("SELECT min(expires_at) FROM replay_jti").fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise JtiStoreError(_describe("read", exc)) from None
        return None if row is None or row[0] is None else float(row[0])

    def close(self) -> None:
        """Close the pool if this store owns it (idempotent)."""
        if not self._closed:
            self._closed = True
            if self._owns_pool:
                self._pool.close()

    @staticmethod
    def _count(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT n FROM replay_jti_count WHERE one = 1").fetchone()
        return 0 if row is None else int(row[0])


class _Full(Exception):
    """Raised inside the claim's transaction block to roll the new row back."""


def _describe(what: str, exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return f"replay store {what} failed ({exc.sqlstate or type(exc).__name__})"
    return f"replay store {what}: no connection in time"
