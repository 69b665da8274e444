"""The subject index on PostgreSQL: :class:`PgQueryIndex`, the shared backend of
:class:`~gateway.subject.index.QueryIndex` ("who looked at me", Decree 631 Art. 22).

    index = PgQueryIndex(open_pool(target), target=target)   # target: may follow
    sync_index(index, PostgresAuditStore(audit_target))   # catch up with the shared log
    index.for_subject(pseudonym, today="2026-11-30", before=None, limit=50)

Tables ``subject_queries`` and ``subject_index_state`` (migration ``0031_subject_index``).
With the audit log on PostgreSQL every host answers queries into one log; the index over
it is one too, so a subject listing on any host lists the queries every host answered.

**One follower, any reader.** One process follows the log in the background: the holder
of a session advisory lock (:data:`FOLLOWER_LOCK`) on a connection of its own, never a
pooled one, with TCP keepalives and ``idle_session_timeout``, so the lock is freed when its
process dies (at once for a killed one; within about 15 s for a vanished host) and another
process takes over at its next round (:meth:`PgQueryIndex.follows`; the lock is a
:class:`~gateway.stores.postgres.election.SessionLock`). The others try the
lock each round (about once a second) on one session of their own kept open between rounds,
not on a new connection each time: a connection costs the server a process and an
authentication, and a host holding one idle session is what the follower does anyway. They
only read, and catch up the tail before a listing (so a caller sees its own latest query without
waiting for the follower). Correctness does not rest on the election: every write
compares and moves the one watermark row in the transaction that adds the rows
(:meth:`PgQueryIndex.add`), so two writers never add a range twice nor move the watermark
back, and a rebuild (:meth:`PgQueryIndex.reset`) happens only against the watermark that
called for it.

The index is derived data: ``synchronous_commit`` is the server's, and a commit lost in a
crash is read again from the log. Errors are
:class:`~gateway.subject.errors.SubjectStoreError` naming the SQLSTATE only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.stores.postgres.connect import pooled_transaction
from gateway.stores.postgres.election import SessionLock
from gateway.stores.postgres.url import PgTarget
from gateway.subject.errors import SubjectStoreError
from gateway.subject.index import (
    INDEX_COLUMNS,
    IndexedQuery,
    QueryIndex,
    before_bound,
    index_row,
    indexed_query,
    listing_sql,
    subject_key,
)

__all__ = ["FOLLOWER_LOCK", "FOLLOWER_SESSION_TIMEOUT_S", "PgQueryIndex"]

_FOR_SUBJECT, _FOR_BASIS = listing_sql("subject_queries", "%s")

#: pg_try_advisory_lock(classid, objid) of the index's follower ("cgsi", 1).
FOLLOWER_LOCK = (0x6367_7369, 1)
#: The server ends a follower's session idle this long (seconds; the follower speaks
#: about once a second), freeing the lock if its process hangs.
FOLLOWER_SESSION_TIMEOUT_S = 15
_TYPES = [
    "bigint",
    "bytea",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "text",
    "text",
    "text",
]
#: Batches larger than this many rows go by COPY (a rebuild), smaller ones by one statement.
_COPY_ABOVE = 500
_INSERT = (
    f"INSERT INTO subject_queries ({INDEX_COLUMNS}) SELECT * FROM unnest("
    "%s::bigint[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
    " ON CONFLICT (subject, log_index) DO NOTHING"
)


class PgQueryIndex(QueryIndex):
    """See the module docstring. ``pool``: connections to a migrated database (closed by
    :meth:`close` when ``owns_pool``); ``target``: where the follower's own connection goes
    (None: this process never follows in the background, it only catches up on demand).
    Thread-safe."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        *,
        target: PgTarget | None = None,
        owns_pool: bool = True,
    ) -> None:
        self._pool = pool
        self._target = target
        self._owns_pool = owns_pool
        #: The follower's lock and the session it is tried on (None: never follows).
        self._election = (
            None
            if target is None
            else SessionLock(
                target,
                FOLLOWER_LOCK,
                idle_timeout_s=FOLLOWER_SESSION_TIMEOUT_S,
                fail=lambda what, code: SubjectStoreError(
                    f"subject index follower election: {what} ({code})"
                ),
            )
        )

    def _tx(self, what: str) -> AbstractContextManager[psycopg.Connection[Any]]:
        return pooled_transaction(self._pool, SubjectStoreError, f"subject index {what}")

    # --- the watermark ---------------------------------------------------------------------

    def watermark(self) -> tuple[int, str]:
        """See :meth:`QueryIndex.watermark`: the one state row, as committed now."""
        with self._tx("read") as conn:
            row = conn.execute(
                "SELECT scanned_to, origin FROM subject_index_state WHERE one = 1"
            ).fetchone()
        if row is None:
            raise SubjectStoreError("the subject index's schema is not migrated")
        return int(row[0]), str(row[1])

    @property
    def scanned_to(self) -> int:
        """See :attr:`QueryIndex.scanned_to` (read from the database)."""
        return self.watermark()[0]

    @property
    def origin(self) -> str:
        """See :attr:`QueryIndex.origin` (read from the database)."""
        return self.watermark()[1]

    @staticmethod
    def _locked_state(conn: psycopg.Connection[Any]) -> tuple[int, str]:
        row = conn.execute(
            "SELECT scanned_to, origin FROM subject_index_state WHERE one = 1 FOR UPDATE"
        ).fetchone()
        if row is None:
            raise SubjectStoreError("the subject index's schema is not migrated")
        return int(row[0]), str(row[1])

    # --- writing ---------------------------------------------------------------------------

    def add(
        self,
        rows: Iterable[IndexedQuery],
        *,
        scanned_to: int,
        origin: str,
        since: int | None = None,
    ) -> bool:
        """See :meth:`QueryIndex.add`: one statement for the whole batch; the state row is
        locked first, so concurrent writers take turns and the loser finds it moved."""
        data = [index_row(q) for q in rows]
        with self._tx("write") as conn:
            stored, _ = self._locked_state(conn)
            if since is not None and stored != since:
                return False
            if len(data) > _COPY_ABOVE:
                # A rebuild's batches: COPY (binary) into a scratch table, then one insert
                # that skips what is there; about three times the unnest statement's rate.
                conn.execute(
                    "CREATE TEMP TABLE subject_batch (LIKE subject_queries) ON COMMIT DROP"
                )
                with conn.cursor().copy(
                    f"COPY subject_batch ({INDEX_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(_TYPES)
                    for values in data:
                        copy.write_row(values)
                conn.execute(
                    f"INSERT INTO subject_queries ({INDEX_COLUMNS}) SELECT {INDEX_COLUMNS}"
                    " FROM subject_batch ON CONFLICT (subject, log_index) DO NOTHING"
                )
            elif data:
                conn.execute(_INSERT, [list(column) for column in zip(*data, strict=True)])
            conn.execute(
                "UPDATE subject_index_state SET scanned_to = %s, origin = %s, updated_at = now()"
                " WHERE one = 1",
                (scanned_to, origin),
            )
        return True

    def reset(self, *, expect: tuple[int, str] | None = None) -> bool:
        """See :meth:`QueryIndex.reset`."""
        with self._tx("reset") as conn:
            if expect is not None and self._locked_state(conn) != expect:
                return False
            conn.execute("TRUNCATE subject_queries")
            conn.execute(
                "UPDATE subject_index_state SET scanned_to = 0, origin = '', updated_at = now()"
                " WHERE one = 1"
            )
        return True

    # --- reading ---------------------------------------------------------------------------

    def _select(self, sql: str, args: Sequence[object]) -> list[IndexedQuery]:
        with self._tx("read") as conn:
            rows = conn.execute(sql, args).fetchall()
        return [indexed_query(r) for r in rows]

    def for_subject(
        self, subject: str, *, today: str, before: int | None, limit: int
    ) -> list[IndexedQuery]:
        """See :meth:`QueryIndex.for_subject`: one range read of the primary key."""
        return self._select(
            _FOR_SUBJECT, (subject_key(subject), before_bound(before), today, limit)
        )

    def for_basis(self, basis: str, *, before: int | None, limit: int) -> list[IndexedQuery]:
        """See :meth:`QueryIndex.for_basis`."""
        return self._select(_FOR_BASIS, (basis, before_bound(before), limit))

    def count(self) -> int:
        """How many queries are indexed (tests, the benchmark)."""
        with self._tx("read") as conn:
            row = conn.execute("SELECT count(*) FROM subject_queries").fetchone()
        return 0 if row is None else int(row[0])

    # --- the follower ----------------------------------------------------------------------

    def follows(self) -> bool:
        """See :meth:`QueryIndex.follows`: True while this process holds the follower's
        lock. The lock is tried (and, once held, checked alive) on one session connection
        of this index's own, kept between calls (a
        :class:`~gateway.stores.postgres.election.SessionLock`): a host that does not follow
        asks again on the same session rather than connecting once a second, and takes over
        on the call after the holder's session ends. A session found dead is replaced once
        per call. Raises SubjectStoreError when the database cannot be reached."""
        if self._election is None:
            return False
        return self._election.try_acquire()

    def close(self) -> None:
        """Give up the follower's lock (unlocked before its session closes: the lock is
        free when this returns, so another host takes over on its very next try) and close
        the pool when this index owns it."""
        if self._election is not None:
            self._election.close()
        if self._owns_pool:
            self._pool.close()
