"""The objection store on PostgreSQL: :class:`PgObjectionStore`, the shared backend of
:class:`~gateway.objections.store.ObjectionStore` (every gateway process on every host).

    store = PgObjectionStore(open_pool(config.storage.target_for("objections")))
    listener.subscribe("objections", store.refresh)
    store.follow(listener)
    store.marks().by_record        # what every query shows (Decree 631 Art. 25)

Table ``objections`` (migration ``0030_objections``), the SQLite store's columns. With
several hosts this is what makes an objection filed on one host mark the answers of all
the others: each host reading its own file would answer unmarked.

**Marks on the query path.** Every change a query shows (a filing, an answer, a
statement) calls ``live_bump('objections')`` in its own transaction and stamps the row with
the version it got; ``live_versions``' row lock holds the next bump until that transaction
commits, so versions follow commit order. Followed by a
:class:`~gateway.stores.postgres.notify.LiveListener`, :meth:`PgObjectionStore.marks` costs
the query path no database round trip at all: the listener's thread reloads the snapshot
when the version moves (by NOTIFY, or its poll as the backstop), reading only the records
whose rows changed since (the same folding as SQLite:
:func:`~gateway.objections.store.updated_marks`).
Once the listener is stale past its bound, :meth:`~PgObjectionStore.marks` raises
:class:`~gateway.objections.store.ObjectionStoreError` (UNAVAILABLE): an answer that could
miss a mark set elsewhere is not given. Without a listener (tools, tests) each call reads
the version, one primary-key lookup, as the SQLite store does. A process sees its own
writes at once (it reloads after each).

**Filing across hosts.** ``INSERT ... ON CONFLICT DO NOTHING`` against the request key and
the one-open-objection-per-record index (``objections_one_open``): two hosts filing the
same request get one row; two filing against the same record get one open objection, the
other the existing one's id (:class:`~gateway.objections.store.OpenObjectionExists`).
Commits are durable before the caller is answered (``synchronous_commit`` on).

**One poller.** Every host runs the desk's poller, but only the holder of a session advisory
lock (:data:`POLLER_LOCK`, a :class:`~gateway.stores.postgres.election.SessionLock` on a
session of its own, never pooled) routes, asks departments and notes overdue objections
(:meth:`PgObjectionStore.polls`): one host sends each department one round of calls, not
one per host. The others try the lock each round on the session they keep.

Errors: :class:`~gateway.objections.store.ObjectionStoreError` (UNAVAILABLE) naming the
SQLSTATE only, never the server's text (it can name hosts).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.objections.store import (
    ALL_MARKS_SQL,
    OBJECTION_COLUMNS,
    Marks,
    ObjectionFilter,
    ObjectionRow,
    ObjectionStoreError,
    OpenObjectionExists,
    SQLObjectionStore,
    changed_marks_sql,
    find_sql,
    full_marks,
    objection_row,
    updated_marks,
)
from gateway.stores.postgres.connect import pooled_transaction
from gateway.stores.postgres.election import SessionLock
from gateway.stores.postgres.notify import LiveListener, LiveStateStaleError
from gateway.stores.postgres.url import PgTarget

__all__ = ["POLLER_LOCK", "POLLER_SESSION_TIMEOUT_S", "PgObjectionStore"]

#: pg_try_advisory_lock(classid, objid) of the objection desk's poller ("cgob", 1).
POLLER_LOCK = (0x6367_6F62, 1)
#: The server ends the poller's session idle this long (seconds), freeing the lock if its
#: process hangs. The poller speaks once a round (``poll_interval_s``, 60 s by default, and
#: soon after each filing), so this is five default rounds: short enough that a hung poller
#: costs minutes, not the 20-day clock; long enough that a round slow on departments does
#: not lose the lock midway. With a longer interval the session is simply replaced each
#: round (still one poller at a time).
POLLER_SESSION_TIMEOUT_S = 300

_NAMES = [n.strip() for n in OBJECTION_COLUMNS.split(",")]
_INSERT = (
    f"INSERT INTO objections ({OBJECTION_COLUMNS}) VALUES ({', '.join(['%s'] * len(_NAMES))})"
    " ON CONFLICT DO NOTHING RETURNING objection_id"
)
_CHANGED_MARKS = changed_marks_sql("%s")
#: Attempts of one filing whose conflicting row vanished before it could be read (it was
#: answered in between): the insert is simply tried again.
_CREATE_ATTEMPTS = 3


class PgObjectionStore(SQLObjectionStore):
    """See the module docstring. ``pool``: connections to a migrated database (closed by
    :meth:`close` when ``owns_pool``). Thread-safe.

    Raises:
        ObjectionStoreError: the database cannot be reached or read (the first load of the
            marks happens here).
    """

    placeholder = "%s"

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        *,
        target: PgTarget | None = None,
        owns_pool: bool = True,
    ) -> None:
        self._pool = pool
        self._owns_pool = owns_pool
        #: The poller's lock (None: no election, this handle always polls).
        self._election = (
            None
            if target is None
            else SessionLock(
                target,
                POLLER_LOCK,
                idle_timeout_s=POLLER_SESSION_TIMEOUT_S,
                fail=lambda what, code: ObjectionStoreError(
                    f"the objection poller's election: {what} ({code})"
                ),
            )
        )
        self._live: LiveListener | None = None
        self._reload_lock = threading.Lock()
        self._marks = Marks(version=-1)
        self.refresh()

    def _tx(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return pooled_transaction(self._pool, ObjectionStoreError, "the objection store")

    # --- the marks -------------------------------------------------------------------------

    def follow(self, listener: LiveListener) -> None:
        """From now on :meth:`marks` serves the snapshot the listener keeps current, and fails
        closed when it is stale. Subscribe :meth:`refresh` to the listener too."""
        self._live = listener

    def refresh(self, version: int | None = None) -> Marks:
        """Reload the marks if their version moved (``version``: the one announced, unused
        but for the listener's signature): the records changed since, or everything the
        first time. Raises ObjectionStoreError."""
        with self._reload_lock:
            old = self._marks
            with self._tx() as conn:
                # One snapshot: the version and the rows agree.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute(
                    "SELECT version FROM live_versions WHERE name = 'objections'"
                ).fetchone()
                if row is None:
                    raise ObjectionStoreError("the objection store's schema is not migrated")
                now = int(row[0])
                if now == old.version:
                    return old
                if old.version < 0 or now < old.version:  # first load, or a restored database
                    new = full_marks(now, conn.execute(ALL_MARKS_SQL).fetchall())
                else:
                    rows = conn.execute(_CHANGED_MARKS, (old.version,))
                    new = updated_marks(old, now, rows.fetchall())
            self._marks = new
            return new

    def marks(self) -> Marks:
        """See :meth:`ObjectionStore.marks`: nothing read when followed by a listener (the
        snapshot it keeps), else one version read. Raises ObjectionStoreError, also when the
        listener is stale past its bound."""
        if self._live is not None:
            try:
                self._live.check()
            except LiveStateStaleError:
                raise ObjectionStoreError(
                    "the objection marks cannot be confirmed: the shared store is unreachable"
                ) from None
            return self._marks
        return self.refresh()

    # --- reading ---------------------------------------------------------------------------

    def _select(self, sql: str, args: Sequence[object]) -> list[ObjectionRow]:
        with self._tx() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [objection_row(r) for r in rows]

    def get(self, objection_id: str) -> ObjectionRow | None:
        """See :meth:`ObjectionStore.get`."""
        rows = self._select(
            f"SELECT {OBJECTION_COLUMNS} FROM objections WHERE objection_id = %s",
            (objection_id,),
        )
        return rows[0] if rows else None

    def find(self, where: ObjectionFilter) -> list[ObjectionRow]:
        """See :meth:`ObjectionStore.find`."""
        sql, args = find_sql(where, "%s")
        return self._select(sql, args)

    def unfinished(self) -> list[ObjectionRow]:
        """See :meth:`ObjectionStore.unfinished`."""
        return self._select(
            f"SELECT {OBJECTION_COLUMNS} FROM objections WHERE outcome = 'pending'"
            " OR routed_at IS NULL ORDER BY filed_at",
            (),
        )

    # --- writing ---------------------------------------------------------------------------

    @staticmethod
    def _bump(conn: psycopg.Connection[Any], objection_id: str) -> None:
        """In the writer's transaction: a new version (NOTIFY on commit), the row stamped."""
        row = conn.execute("SELECT live_bump('objections')").fetchone()
        assert row is not None
        conn.execute(
            "UPDATE objections SET changed = %s WHERE objection_id = %s", (row[0], objection_id)
        )

    def create(self, row: ObjectionRow) -> tuple[ObjectionRow, bool]:
        """See :meth:`ObjectionStore.create`."""
        values = [getattr(row, n) for n in _NAMES]
        values[_NAMES.index("evidence_sha256")] = json.dumps(list(row.evidence_sha256))
        with self._tx() as conn:
            for _ in range(_CREATE_ATTEMPTS):
                if conn.execute(_INSERT, values).fetchone() is not None:
                    self._bump(conn, row.objection_id)
                    break
                # A conflict: the insert waited for the other writer's commit, so what it
                # conflicted with is visible to these reads (READ COMMITTED).
                old = conn.execute(
                    f"SELECT {OBJECTION_COLUMNS} FROM objections WHERE request_key = %s",
                    (row.request_key,),
                ).fetchone()
                if old is not None:
                    return objection_row(old), False
                clash = conn.execute(
                    "SELECT objection_id FROM objections WHERE outcome = 'pending' AND"
                    " kind = %s AND department = %s AND dataset = %s AND record_id = %s AND"
                    " subject_key = %s",
                    (row.kind, row.department, row.dataset, row.record_id, row.subject_key),
                ).fetchone()
                if clash is not None:
                    raise OpenObjectionExists(str(clash[0]))
                taken = conn.execute(
                    "SELECT 1 FROM objections WHERE objection_id = %s", (row.objection_id,)
                ).fetchone()
                if taken is not None:
                    raise ObjectionStoreError("an objection id was issued twice")
            else:
                raise ObjectionStoreError("the objection could not be filed; retry")
        self.refresh()  # this process shows its own filing at once
        return row, True

    def _write(self, sql: str, args: Sequence[object], *, bump: str | None) -> int:
        """See :meth:`SQLObjectionStore._write` (with ``bump``, this process's marks are
        reloaded too)."""
        with self._tx() as conn:
            n = conn.execute(sql, args).rowcount
            if n and bump is not None:
                self._bump(conn, bump)
        if n and bump is not None:
            self.refresh()
        return int(n)

    def polls(self) -> bool:
        """See :meth:`ObjectionStore.polls`: True while this process holds the poller's
        lock (:data:`POLLER_LOCK`), tried (and, once held, checked alive) on one session of
        this store's own kept between rounds (a
        :class:`~gateway.stores.postgres.election.SessionLock`); when the holder's session
        ends (its process died, or it closed) another takes over at its next round. A store
        opened without a ``target`` (tools, tests) always polls, as every host did before
        the election: duplicates are harmless, a round nobody runs is not. Raises
        ObjectionStoreError when the database cannot be reached."""
        if self._election is None:
            return True
        return self._election.try_acquire()

    def close(self) -> None:
        """Give up the poller's lock (free when this returns) and close the pool when this
        store owns it (idempotent)."""
        if self._election is not None:
            self._election.close()
        if self._owns_pool:
            self._pool.close()
