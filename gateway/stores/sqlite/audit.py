"""The audit log in one SQLite file: the embedded default (:class:`SQLiteStore`,
behind :class:`gateway.audit.store.AuditStore`), beside the shared PostgreSQL log
(:mod:`gateway.stores.postgres.audit`).

WAL and ``synchronous=FULL``: a returned append survives power loss. One writer per
log: a writable :class:`SQLiteStore` holds an exclusive lock (``flock``) on
``<log>.lock`` beside the file, and on the log file itself (so a hard link under
another name is the same log), for as long as it is open, so a second writer, in this
process or another, is refused at its start with
:class:`~gateway.audit.store.LogInUseError` instead of colliding with the first one's
indexes. The lock goes with the process, however it ends. Readers take no lock.

Standard library only: ``credit-audit`` reads logs through :func:`open_reader`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gateway.audit.errors import StorageError
from gateway.audit.store import (
    AuditStore,
    ExportReader,
    LogInUseError,
    LogReader,
    StoredCheckpoint,
    StoredEntry,
    dense_run,
)
from gateway.stores.sqlite import SQLiteSetupError, open_durable, open_read_only

__all__ = ["SQLiteStore", "open_reader"]


def _take_writer_lock(path: Path) -> tuple[int, int]:
    """Lock ``<path>.lock`` and the log file itself exclusively without waiting;
    returns both descriptors (closing them releases the locks).

    Raises LogInUseError if another open file description holds it, and
    StorageError if the lock file cannot be made.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise StorageError(f"{lock_path}: cannot create the writer lock ({err.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise LogInUseError(holder if holder.isdigit() else "") from None
    # The holder's pid, for the message a second writer gets: not the lock itself.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    # The log file itself too: a hard link (or a bind mount) reaches the same file
    # under another name, whose "<name>.lock" is another file, and two writers
    # would then number entries twice. flock is on the inode, whatever the name,
    # and independent of SQLite's own POSIX record locks on Linux.
    try:
        data_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        os.close(fd)
        raise StorageError(f"{path}: cannot open the log ({err.strerror})") from None
    try:
        fcntl.flock(data_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(data_fd)
        os.close(fd)
        raise LogInUseError("") from None
    return fd, data_fd


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
);
-- The tree's hashes above the leaves, C2SP tlog-tiles levels 1, 2...: hash idx of
-- level L is the root of leaves [idx * 256**L, (idx + 1) * 256**L). Level 0 (the leaf
-- hashes) is entries.leaf_hash. Written in the transaction of the entry completing it.
CREATE TABLE IF NOT EXISTS tile_hashes (
    level INTEGER NOT NULL CHECK (level >= 1),
    idx INTEGER NOT NULL CHECK (idx >= 0),
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    note TEXT NOT NULL
);
-- Append-only by construction. This stops mistakes, not an attacker with the
-- file (who can drop triggers): that is what signed checkpoints are for.
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS tile_hashes_no_update BEFORE UPDATE ON tile_hashes
    BEGIN SELECT RAISE(ABORT, 'audit tile hashes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS tile_hashes_no_delete BEFORE DELETE ON tile_hashes
    BEGIN SELECT RAISE(ABORT, 'audit tile hashes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
"""


class SQLiteStore(AuditStore):
    """An audit log in one SQLite file (WAL mode, fsync on every commit).

    ``read_only=True`` opens the file without ever writing to it (the
    auditors' tool). Otherwise the store is the log's one writer and holds its
    lock until :meth:`close`. Raises LogInUseError if another writer holds the
    log, and StorageError if the file cannot be opened or is not an audit log.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._read_only = read_only
        self._lock_fds: tuple[int, int] | None = None
        # Tile reads (proofs, on worker threads) go through a connection of their own,
        # so that they never wait for the writer's fsync: WAL readers see the last commit.
        # One at a time (the lock): a SQLite connection is not used by two threads at once.
        self._tile_lock = threading.Lock()
        self._tile_conn: sqlite3.Connection | None = None
        if read_only and not self.path.is_file():
            raise StorageError(f"{self.path}: no such file")
        if not read_only:
            self._lock_fds = _take_writer_lock(self.path)
        try:
            self._conn = self._connect()
        except BaseException:
            self._release_lock()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            if self._read_only:
                conn = open_read_only(self.path)
            else:
                # WAL, and synchronous=FULL: the WAL is fsynced at every commit, so a
                # returned append survives power loss, not only a process crash.
                conn = open_durable(self.path, schema=_SCHEMA)
            conn.execute("SELECT count(*) FROM entries, checkpoints LIMIT 1").fetchone()
        except SQLiteSetupError as err:
            raise StorageError(f"{self.path}: {err}") from None
        except sqlite3.Error as err:
            raise StorageError(f"{self.path}: not a readable audit log ({err})") from None
        return conn

    def _release_lock(self) -> None:
        if self._lock_fds is not None:
            for fd in self._lock_fds:
                os.close(fd)  # closing the descriptor releases the flock
            self._lock_fds = None

    def recover(self) -> None:
        """Close the connections and open a fresh one; the writer lock is kept."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = self._connect()
        self._drop_tile_conn()

    def _drop_tile_conn(self) -> None:
        with self._tile_lock:
            if self._tile_conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._tile_conn.close()
                self._tile_conn = None

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise StorageError(f"{self.path}: {err}") from None

    def size(self) -> int:
        """See :meth:`LogReader.size`."""
        row = self._query("SELECT COALESCE(MAX(idx), -1) + 1 FROM entries")[0]
        return int(row[0])

    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        """See :meth:`LogReader.iter_entries`."""
        # Read in chunks: a steady memory footprint for logs of any length,
        # and no lock held between chunks.
        chunk = 10_000
        while True:
            rows = self._query(
                "SELECT idx, leaf, leaf_hash FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?",
                (start, chunk),
            )
            for idx, leaf, lh in rows:
                yield StoredEntry(int(idx), bytes(leaf), bytes(lh))
            if len(rows) < chunk:
                return
            start = int(rows[-1][0]) + 1

    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """See :meth:`AuditStore.tile_hashes`."""
        if level == 0:
            sql = "SELECT idx, leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx"
            args: tuple[int, ...] = (start, end)
        else:
            sql = (
                "SELECT idx, hash FROM tile_hashes WHERE level = ? AND idx >= ? AND idx < ? "
                "ORDER BY idx"
            )
            args = (level, start, end)
        try:
            with self._tile_lock:
                if self._tile_conn is None:
                    self._tile_conn = open_read_only(self.path)
                rows = self._tile_conn.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            self._drop_tile_conn()
            raise StorageError(f"{self.path}: {err}") from None
        return dense_run(rows, start)

    def tile_count(self, level: int) -> int:
        """See :meth:`AuditStore.tile_count`."""
        if level == 0:
            return self.size()
        sql = "SELECT COALESCE(MAX(idx), -1) + 1 FROM tile_hashes WHERE level = ?"
        return int(self._query(sql, (level,))[0][0])

    def add_tiles(self, tiles: Sequence[tuple[int, int, bytes]]) -> None:
        """See :meth:`AuditStore.add_tiles`."""
        self._transaction((), 0, [], [], tiles)

    def checkpoints(self) -> list[StoredCheckpoint]:
        """See :meth:`LogReader.checkpoints`."""
        rows = self._query("SELECT seq, size, note FROM checkpoints ORDER BY seq")
        return [StoredCheckpoint(int(s), int(z), str(n)) for s, z, n in rows]

    def origin(self) -> str | None:
        """See :meth:`LogReader.origin`."""
        rows = self._query("SELECT value FROM meta WHERE key = 'origin'")
        return str(rows[0][0]) if rows else None

    def _transaction(
        self,
        meta: Sequence[tuple[str, str]],
        first_index: int,
        entries: Sequence[tuple[bytes, bytes]],
        checkpoints: Sequence[tuple[int, str]],
        tiles: Sequence[tuple[int, int, bytes]] = (),
    ) -> None:
        conn = self._conn
        with self._lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                if meta:
                    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta)
                conn.executemany(
                    "INSERT INTO entries (idx, leaf, leaf_hash) VALUES (?, ?, ?)",
                    [(first_index + i, leaf, lh) for i, (leaf, lh) in enumerate(entries)],
                )
                if tiles:
                    conn.executemany(
                        "INSERT INTO tile_hashes (level, idx, hash) VALUES (?, ?, ?)", tiles
                    )
                conn.executemany("INSERT INTO checkpoints (size, note) VALUES (?, ?)", checkpoints)
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                if conn.in_transaction:
                    # The original error is the one to report.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise StorageError(f"{self.path}: write failed: {err}") from None

    def create(self, origin: str, checkpoint_note: str) -> None:
        """See :meth:`AuditStore.create`."""
        self._transaction(
            [("origin", origin), ("format", "credit-gateway-audit/1")],
            0,
            [],
            [(0, checkpoint_note)],
        )

    def append(
        self,
        first_index: int,
        entries: Sequence[tuple[bytes, bytes]],
        checkpoints: Sequence[tuple[int, str]],
        tiles: Sequence[tuple[int, int, bytes]] = (),
    ) -> None:
        """See :meth:`AuditStore.append`."""
        self._transaction((), first_index, entries, checkpoints, tiles)

    def close(self) -> None:
        """Close the connections and release the writer lock (idempotent)."""
        self._drop_tile_conn()
        with self._lock:
            try:
                self._conn.close()
            finally:
                self._release_lock()


def open_reader(location: str | os.PathLike[str]) -> LogReader:
    """A read-only view of a log: an export folder or a SQLite file.

    Raises StorageError if it is neither.
    """
    if Path(location).is_dir():
        return ExportReader(location)
    return SQLiteStore(location, read_only=True)
