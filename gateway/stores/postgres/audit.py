"""The audit log on PostgreSQL: one log, one origin, one key, many writers
(:class:`PostgresAuditStore`; the log over it is :mod:`gateway.audit.shared`).

Tables (``migrations/0010_audit_log.sql``): ``audit_head`` (the next index),
``audit_entries`` (index, leaf, leaf hash, append id), ``audit_tree`` (the integrated
size and root), ``audit_checkpoints`` (the signed history) and ``audit_meta`` (origin);
``audit_tiles`` (``0011_audit_tiles.sql``): the tree's hashes above the leaves, C2SP
tlog-tiles levels 1, 2..., written by the integrator with the tree state.

Numbering. One statement per batch advances the head row by the batch size, splices
each index into its leaf (``head || index || tail``, :class:`~gateway.audit.store.PendingLeaf`),
hashes it (``sha256(0x00 || leaf)``, RFC 6962 section 2.1) and inserts the batch; the
connection is in autocommit, so that statement is the transaction and the head row's
lock is held for one statement and its commit, never across a network round trip
(ARCHITECTURE.md, "Scale-out on PostgreSQL"). A rollback undoes the head too: no gap. The
caller is answered only once COMMIT has returned (``synchronous_commit`` is the server's:
``on`` in production).

Lost COMMIT. When the connection drops during the statement its outcome is unknown:
the store reconnects and looks the batch's append ids up first; what is there is
returned as stored, only the rest is numbered (duplicates are removed before
numbering). The unique append id is the backstop if the old statement was still in
flight: one of the two fails and the lookup finds the other.

Integration. The integrator holds a session advisory lock (:data:`LEADER_LOCK`) on a
dedicated connection (never a pooled one) with TCP keepalives and ``idle_session_timeout``
set, so the lock is freed when its process dies (at once for a killed process, within
about 15 s for a vanished host, see :data:`LEADER_SESSION_TIMEOUT_S`): a
:class:`~gateway.stores.postgres.election.SessionLock`, whose session the other processes
keep too and try the lock on every ``lead_interval``, never connecting anew each time.
Every integration re-checks, in its writing transaction, that this session still holds
the lock and takes the tree row with ``FOR UPDATE NOWAIT``; the checkpoint table refuses
a smaller size or a second root for a size (a trigger).

Reads go through a third connection; ``snapshot=True`` (``credit-audit``) reads
everything in one REPEATABLE READ READ ONLY transaction, so checkpoints and entries
agree however busy the log is. Errors surface as
:class:`~gateway.audit.errors.StorageError` whose text names no password.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from gateway.audit.errors import StorageError
from gateway.audit.merkle import EMPTY_ROOT
from gateway.audit.store import (
    Integration,
    LogState,
    NotLeaderError,
    PendingLeaf,
    SharedAuditStore,
    StoredCheckpoint,
    StoredEntry,
    dense_run,
)
from gateway.stores.postgres.election import LockNotHeld, SessionLock
from gateway.stores.postgres.migrate import SchemaMismatch, require_current
from gateway.stores.postgres.url import PgConfigError, PgTarget

__all__ = ["LEADER_LOCK", "LEADER_SESSION_TIMEOUT_S", "PostgresAuditStore"]

log = logging.getLogger(__name__)

#: pg_try_advisory_lock(classid, objid) of the integrator ("cgau", 1).
LEADER_LOCK = (0x6367_6175, 1)
#: The server ends an integrator session idle this long (seconds; the integrator
#: speaks every 50 ms), freeing its lock if its process hangs.
LEADER_SESSION_TIMEOUT_S = 10
#: Attempts of one batch across lost connections before the log fails closed.
_APPEND_ATTEMPTS = 3
_CHUNK = 10_000

_INSERT = """
WITH h AS (
    UPDATE audit_head SET next_index = next_index + %(n)s WHERE id = 1
    RETURNING next_index - %(n)s AS first
), t AS (
    SELECT h.first + t.ord - 1 AS idx,
           t.head || convert_to((h.first + t.ord - 1)::text, 'UTF8') || t.tail AS leaf,
           t.aid
    FROM h, unnest(%(heads)s::bytea[], %(tails)s::bytea[], %(aids)s::bytea[])
            WITH ORDINALITY AS t(head, tail, aid, ord)
)
INSERT INTO audit_entries (idx, leaf, leaf_hash, append_id)
SELECT idx, leaf, sha256('\\x00'::bytea || leaf), aid FROM t
RETURNING append_id, idx, leaf_hash
"""

_ADD_TILES = (
    "INSERT INTO audit_tiles (level, idx, hash) VALUES (%s, %s, %s) "
    "ON CONFLICT (level, idx) DO NOTHING"
)

_STATE = """
SELECT h.next_index, t.size, t.root, t.integrator
FROM audit_head h, audit_tree t WHERE h.id = 1 AND t.id = 1
"""


def _fail(what: str, err: BaseException) -> StorageError:
    # The SQLSTATE or the error's class only, as the other PostgreSQL stores say it: the
    # server's message can name hosts and addresses, and this text reaches the logs.
    code = getattr(err, "sqlstate", None) or type(err).__name__
    return StorageError(f"audit log on PostgreSQL: {what}: {code}")


class PostgresAuditStore(SharedAuditStore):
    """The shared audit log in the database ``target`` names.

    Checks at opening that the schema is this build's (``credit-gateway db
    migrate`` applies it; a serving process never does). ``snapshot=True`` opens a
    read-only view in one REPEATABLE READ transaction (the auditors' tool): writes
    then raise StorageError. ``identity`` (``host:pid``) is written beside each
    integration. Raises StorageError when the database cannot be reached or its
    schema is not current.
    """

    def __init__(self, target: PgTarget, *, snapshot: bool = False, identity: str = "") -> None:
        self._target = target
        self._snapshot = snapshot
        self.identity = identity
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None
        #: The integrator's lock, on a session of its own (none is opened until tried).
        self._leader = SessionLock(
            target,
            LEADER_LOCK,
            idle_timeout_s=LEADER_SESSION_TIMEOUT_S,
            fail=lambda what, code: StorageError(
                f"audit log on PostgreSQL: integrator's lock: {what}: {code}"
            ),
        )
        with self._rlock:
            conn = self._read_conn()
            try:
                if snapshot:
                    row = conn.execute("SELECT to_regclass('audit_entries') IS NOT NULL").fetchone()
                    if row is None or not row[0]:
                        raise StorageError("the database holds no audit log (run `db migrate`)")
                else:
                    require_current(conn)
            except SchemaMismatch as err:
                self._close_all()
                raise StorageError(f"audit log on PostgreSQL: {err}") from None
            except psycopg.Error as err:
                self._close_all()
                raise _fail("cannot read the schema", err) from None

    # --- connections -----------------------------------------------------------------

    def _open(self, **extra: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self._target.url, autocommit=True, **self._target.kwargs(), **extra
            )
        except PgConfigError as err:
            raise StorageError(f"audit log on PostgreSQL: {err}") from None
        except psycopg.Error as err:
            raise _fail("cannot connect", err) from None

    def _read_conn(self) -> psycopg.Connection[Any]:
        if self._reader is None or self._reader.closed:
            if self._snapshot:
                conn = self._open()
                conn.autocommit = False
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                self._reader = conn
            else:
                self._reader = self._open()
        return self._reader

    def _write_conn(self) -> psycopg.Connection[Any]:
        if self._snapshot:
            raise StorageError("audit log on PostgreSQL: opened read-only")
        if self._writer is None or self._writer.closed:
            self._writer = self._open()
        return self._writer

    @staticmethod
    def _drop(conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # a broken one: nothing more to do
                conn.close()

    def _close_all(self) -> None:
        for conn in (self._writer, self._reader):
            self._drop(conn)
        self._writer = self._reader = None
        self._leader.close()

    def recover(self) -> None:
        """See :meth:`SharedAuditStore.recover`; the integrator's lock is given up."""
        with self._wlock, self._rlock:
            self._close_all()
        with self._rlock:
            try:
                self._read_conn().execute("SELECT 1")
            except psycopg.Error as err:
                self._drop(self._reader)
                self._reader = None
                raise _fail("still unreachable", err) from None

    def close(self) -> None:
        """Close every connection (idempotent); the integrator's lock goes with them."""
        with self._wlock, self._rlock:
            self._close_all()

    def _read(
        self, sql: str, args: Sequence[object] | dict[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        with self._rlock:
            try:
                return self._read_conn().execute(sql, args).fetchall()
            except psycopg.Error as err:
                if not self._snapshot:  # a snapshot must not silently move on
                    self._drop(self._reader)
                    self._reader = None
                raise _fail("read failed", err) from None

    # --- LogReader ---------------------------------------------------------------------

    def size(self) -> int:
        """One more than the highest stored index (the head: indices are dense)."""
        rows = self._read("SELECT COALESCE(max(idx), -1) + 1 FROM audit_entries")
        return int(rows[0][0])

    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        """See :meth:`LogReader.iter_entries` (chunks of 10,000)."""
        while True:
            rows = self._read(
                "SELECT idx, leaf, leaf_hash FROM audit_entries WHERE idx >= %s "
                "ORDER BY idx LIMIT %s",
                (start, _CHUNK),
            )
            for idx, leaf, lh in rows:
                yield StoredEntry(int(idx), bytes(leaf), bytes(lh))
            if len(rows) < _CHUNK:
                return
            start = int(rows[-1][0]) + 1

    def entry(self, index: int) -> StoredEntry | None:
        """The entry at ``index``, or None."""
        rows = self._read("SELECT idx, leaf, leaf_hash FROM audit_entries WHERE idx = %s", (index,))
        return StoredEntry(int(rows[0][0]), bytes(rows[0][1]), bytes(rows[0][2])) if rows else None

    def checkpoints(self) -> list[StoredCheckpoint]:
        """See :meth:`LogReader.checkpoints`."""
        rows = self._read("SELECT seq, size, note FROM audit_checkpoints ORDER BY seq")
        return [StoredCheckpoint(int(s), int(z), str(n)) for s, z, n in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The most recently stored checkpoint, or None."""
        rows = self._read("SELECT seq, size, note FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        return StoredCheckpoint(int(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None

    def checkpoint_for(self, size: int) -> StoredCheckpoint | None:
        """See :meth:`SharedAuditStore.checkpoint_for`."""
        rows = self._read(
            "SELECT seq, size, note FROM audit_checkpoints WHERE size = %s "
            "ORDER BY seq DESC LIMIT 1",
            (size,),
        )
        return StoredCheckpoint(int(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None

    def origin(self) -> str | None:
        """See :meth:`LogReader.origin`."""
        rows = self._read("SELECT value FROM audit_meta WHERE key = 'origin'")
        return str(rows[0][0]) if rows else None

    def state(self) -> LogState:
        """See :meth:`SharedAuditStore.state`."""
        head, size, root, who = self._read(_STATE)[0]
        return LogState(int(head), int(size), bytes(root), str(who))

    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """See :meth:`SharedAuditStore.tile_hashes`."""
        if level == 0:
            rows = self._read(
                "SELECT idx, leaf_hash FROM audit_entries WHERE idx >= %s AND idx < %s "
                "ORDER BY idx",
                (start, end),
            )
        else:
            rows = self._read(
                "SELECT idx, hash FROM audit_tiles WHERE level = %s AND idx >= %s AND idx < %s "
                "ORDER BY idx",
                (level, start, end),
            )
        return dense_run(rows, start)

    def tile_count(self, level: int) -> int:
        """See :meth:`SharedAuditStore.tile_count`."""
        if level == 0:
            return self.size()
        rows = self._read(
            "SELECT COALESCE(max(idx), -1) + 1 FROM audit_tiles WHERE level = %s", (level,)
        )
        return int(rows[0][0])

    def add_tiles(self, tiles: Sequence[tuple[int, int, bytes]]) -> None:
        """See :meth:`SharedAuditStore.add_tiles` (idempotent: another process may be
        filling in the same hashes)."""
        if not tiles:
            return
        with self._wlock:
            conn = self._write_conn()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(_ADD_TILES, list(tiles))
            except psycopg.Error as err:
                self._drop(self._writer)
                self._writer = None
                raise _fail("cannot store tile hashes", err) from None

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """See :meth:`SharedAuditStore.leaf_hashes`."""
        out: list[bytes] = []
        while start < end:
            stop = min(end, start + 10 * _CHUNK)
            rows = self._read(
                "SELECT leaf_hash FROM audit_entries WHERE idx >= %s AND idx < %s ORDER BY idx",
                (start, stop),
            )
            if len(rows) != stop - start:
                raise StorageError(f"audit log on PostgreSQL: entries missing in [{start}, {stop})")
            out.extend(bytes(r[0]) for r in rows)
            start = stop
        return out

    def find_leaves(self, needles: Collection[bytes], below: int) -> list[bytes]:
        """See :meth:`SharedAuditStore.find_leaves`: the database scans, only matches
        travel."""
        if not needles:
            return []
        rows = self._read(
            "SELECT leaf FROM audit_entries WHERE idx < %s AND EXISTS "
            "(SELECT 1 FROM unnest(%s::bytea[]) n WHERE position(n IN leaf) > 0) ORDER BY idx",
            (below, list(needles)),
        )
        return [bytes(r[0]) for r in rows]

    # --- writing -----------------------------------------------------------------------

    def init_log(self, origin: str, empty_note: str) -> str:
        """See :meth:`SharedAuditStore.init_log` (serialised on the tree row)."""
        with self._wlock:
            conn = self._write_conn()
            try:
                with conn.transaction():
                    conn.execute("SELECT 1 FROM audit_tree WHERE id = 1 FOR UPDATE")
                    conn.execute(
                        "INSERT INTO audit_meta (key, value) VALUES ('origin', %s), "
                        "('format', 'credit-gateway-audit/1') ON CONFLICT (key) DO NOTHING",
                        (origin,),
                    )
                    row = conn.execute(
                        "SELECT value FROM audit_meta WHERE key = 'origin'"
                    ).fetchone()
                    stored = str(row[0]) if row else origin
                    if (
                        stored == origin
                        and not conn.execute("SELECT 1 FROM audit_checkpoints LIMIT 1").fetchone()
                    ):
                        conn.execute(
                            "INSERT INTO audit_checkpoints (size, root, note) VALUES (0, %s, %s)",
                            (EMPTY_ROOT, empty_note),
                        )
            except psycopg.Error as err:
                self._drop(self._writer)
                self._writer = None
                raise _fail("cannot create the log", err) from None
        return stored

    def append_leaves(
        self, batch: Sequence[PendingLeaf], *, uncertain: bool = False
    ) -> list[tuple[int, bytes]]:
        """See :meth:`SharedAuditStore.append_leaves`. Raises StorageError after
        :data:`_APPEND_ATTEMPTS` lost connections (the log then fails closed)."""
        found: dict[bytes, tuple[int, bytes]] = {}
        with self._wlock:
            for attempt in range(_APPEND_ATTEMPTS):
                try:
                    conn = self._write_conn()
                    if uncertain:
                        found.update(self._lookup(conn, [p.append_id for p in batch]))
                    rest = [p for p in batch if p.append_id not in found]
                    if rest:
                        found.update(self._insert(conn, rest))
                    return [found[p.append_id] for p in batch]
                except pg_errors.UniqueViolation:
                    # The lost attempt was still running and committed first.
                    uncertain = True
                except (psycopg.OperationalError, psycopg.InterfaceError) as err:
                    self._drop(self._writer)
                    self._writer = None
                    uncertain = True
                    log.warning(
                        "audit append lost its connection; looking the batch up",
                        extra={"attempt": attempt + 1, "reason": type(err).__name__},
                    )
                except StorageError:
                    raise
                except psycopg.Error as err:
                    raise _fail("append failed", err) from None
        raise StorageError("audit log on PostgreSQL: append failed: the connection keeps dropping")

    @staticmethod
    def _lookup(conn: psycopg.Connection[Any], ids: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
        rows = conn.execute(
            "SELECT append_id, idx, leaf_hash FROM audit_entries WHERE append_id = ANY(%s)",
            (ids,),
        ).fetchall()
        return {bytes(a): (int(i), bytes(h)) for a, i, h in rows}

    @staticmethod
    def _insert(
        conn: psycopg.Connection[Any], batch: Sequence[PendingLeaf]
    ) -> dict[bytes, tuple[int, bytes]]:
        rows = conn.execute(
            _INSERT,
            {
                "n": len(batch),
                "heads": [p.head for p in batch],
                "tails": [p.tail for p in batch],
                "aids": [p.append_id for p in batch],
            },
        ).fetchall()
        if len(rows) != len(batch):  # cannot happen: the statement is all or nothing
            raise StorageError("audit log on PostgreSQL: the batch was stored in part")
        return {bytes(a): (int(i), bytes(h)) for a, i, h in rows}

    # --- integration -------------------------------------------------------------------

    def try_lead(self) -> bool:
        """See :meth:`SharedAuditStore.try_lead`: the integrator's lock, tried (or, once
        held, checked alive) on one session of this store's own kept between tries (a
        process that does not integrate asks every ``lead_interval`` on that session, not
        on a new connection). Raises StorageError when the database cannot be reached."""
        if self._snapshot:
            return False
        return self._leader.try_acquire()

    def resign(self) -> None:
        """See :meth:`SharedAuditStore.resign`: the lock is free when this returns (the
        session is kept for the next try, or closed if it cannot unlock)."""
        self._leader.release()

    @property
    def leading(self) -> bool:
        """Whether this store holds the integrator's lock (as far as it knows)."""
        return self._leader.held

    def integrate(
        self, step: Callable[[LogState, list[bytes], str], Integration | None], limit: int
    ) -> Integration | None:
        """See :meth:`SharedAuditStore.integrate`; None as well when the tree row is
        busy for a moment (a process creating the log)."""
        try:
            with self._leader.holding() as conn, conn.transaction():
                row = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND classid = %s AND objid = %s "
                    "AND objsubid = 2 AND granted)",
                    LEADER_LOCK,
                ).fetchone()
                if row is None or not row[0]:
                    raise NotLeaderError("the integrator's lock was lost")
                conn.execute("SELECT 1 FROM audit_tree WHERE id = 1 FOR UPDATE NOWAIT")
                head, size, root, who = conn.execute(_STATE).fetchone() or (0, 0, b"", "")
                state = LogState(int(head), int(size), bytes(root), str(who))
                end = min(state.head, state.tree_size + limit)
                hashes = [
                    bytes(r[0])
                    for r in conn.execute(
                        "SELECT leaf_hash FROM audit_entries WHERE idx >= %s AND idx < %s "
                        "ORDER BY idx",
                        (state.tree_size, end),
                    ).fetchall()
                ]
                if len(hashes) != end - state.tree_size:
                    raise StorageError("audit log on PostgreSQL: entries missing below head")
                latest = conn.execute(
                    "SELECT note FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                result = step(state, hashes, str(latest[0]) if latest else "")
                if result is None:
                    return None
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO audit_checkpoints (size, root, note) VALUES (%s, %s, %s)",
                        list(result.checkpoints),
                    )
                    if result.tiles:
                        cur.executemany(_ADD_TILES, list(result.tiles))
                conn.execute(
                    "UPDATE audit_tree SET size = %s, root = %s, integrator = %s, "
                    "updated_at = now() WHERE id = 1",
                    (result.size, result.root, self.identity),
                )
            return result
        except LockNotHeld:
            raise NotLeaderError("not the integrator") from None
        except pg_errors.LockNotAvailable:
            # A process creating the log holds the row for a moment: try again
            # next tick, still the integrator.
            return None
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            # holding() dropped the session, and the lock with it.
            reason = type(err).__name__
            raise NotLeaderError(f"the integrator's connection failed ({reason})") from None
        except psycopg.Error as err:
            raise _fail("integration failed", err) from None
