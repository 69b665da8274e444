"""Storage of the audit log behind a small interface.

:class:`AuditStore` is what :class:`gateway.audit.log.AuditLog` needs: append a
batch of entries together with any checkpoints in one durable transaction,
and read entries and checkpoints back. :class:`SQLiteStore` is the embedded
default (WAL, ``synchronous=FULL``); :class:`MemoryStore` is a fake with the
same behaviour minus durability, for tests. :class:`SharedAuditStore` is the
interface of a log many processes append to at once (PostgreSQL:
:mod:`gateway.stores.postgres.audit`; the log over it is
:mod:`gateway.audit.shared`).
:class:`LogReader` is the read-only half, which the auditors' tool uses and
which :class:`ExportReader` implements over an exported folder.

>>> store = MemoryStore()
>>> store.append(0, [(b'{"seq":0,"v":1}', bytes(32))], [(1, "note")])
>>> store.size(), store.checkpoints()[0].size
(1, 1)

Methods are synchronous: the log calls them from a worker thread so that
the event loop never waits for the disk.

One writer per log: a writable :class:`SQLiteStore` holds an exclusive lock
(``flock``) on ``<log>.lock`` beside the file, and on the log file itself (so a
hard link under another name is the same log), for as long as it is open, so a
second writer, in this process or another, is refused at its start with
:class:`LogInUseError` instead of colliding with the first one's indexes. The
lock goes with the process, however it ends. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.errors import StorageError
from gateway.stores.sqlite import SQLiteSetupError, open_durable, open_read_only

__all__ = [
    "AuditStore",
    "ExportReader",
    "Integration",
    "LogInUseError",
    "LogReader",
    "LogState",
    "MemoryStore",
    "NotLeaderError",
    "PendingLeaf",
    "SQLiteStore",
    "SharedAuditStore",
    "StoredCheckpoint",
    "StoredEntry",
    "open_reader",
]


class LogInUseError(StorageError):
    """Another writer holds the log; ``holder`` is its process id as it wrote it
    (empty if unknown)."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        who = f"process {holder}" if holder else "another process"
        super().__init__(f"the audit log is already open for writing by {who}")


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


@dataclass(slots=True)  # not frozen: frozen __init__ is slow, and verify makes one per entry
class StoredEntry:
    """One log entry as stored; ``leaf_hash`` is None where the store keeps none."""

    index: int
    leaf: bytes
    leaf_hash: bytes | None


@dataclass(frozen=True)
class StoredCheckpoint:
    """One signed checkpoint note as stored, in the order it was written."""

    seq: int
    size: int
    note: str


class LogReader(ABC):
    """Read access to a stored log."""

    @abstractmethod
    def size(self) -> int:
        """One more than the highest stored index (0 when empty)."""

    @abstractmethod
    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        """Entries from index ``start`` upwards, in index order, as stored (gaps included)."""

    @abstractmethod
    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, oldest first."""

    @abstractmethod
    def origin(self) -> str | None:
        """The origin recorded when the log was created, if any."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release resources."""


class AuditStore(LogReader):
    """A writable log store."""

    def recover(self) -> None:
        """Drop any state a failed write may have left (a connection, a handle) and
        reconnect, keeping the writer lock. Raises StorageError if still failing.

        The log calls it before re-reading the store after a write failed.
        """

    @abstractmethod
    def create(self, origin: str, checkpoint_note: str) -> None:
        """Record the origin and the first (size 0) checkpoint of a new log."""

    @abstractmethod
    def append(
        self,
        first_index: int,
        entries: Sequence[tuple[bytes, bytes]],
        checkpoints: Sequence[tuple[int, str]],
    ) -> None:
        """Store ``(leaf, leaf_hash)`` pairs from ``first_index`` and checkpoint
        ``(size, note)`` pairs in one transaction, durable when this returns.

        Raises StorageError; on error nothing of the batch is stored.
        """

    def entry(self, index: int) -> StoredEntry | None:
        """The entry at ``index``, or None."""
        for entry in self.iter_entries(index):
            return entry if entry.index == index else None
        return None

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The most recently stored checkpoint, or None."""
        cps = self.checkpoints()
        return cps[-1] if cps else None


@dataclass(frozen=True, slots=True)
class PendingLeaf:
    """One record waiting for its index in a shared log: ``append_id`` (16 random
    bytes, the append's own identity: a retried batch is looked up by it, never
    numbered twice) and the leaf without its index
    (:func:`gateway.audit.records.leaf_template`): the stored leaf is
    ``head + str(index) + tail``."""

    append_id: bytes
    head: bytes
    tail: bytes

    def leaf(self, index: int) -> bytes:
        """The leaf bytes at ``index``."""
        return b"%b%d%b" % (self.head, index, self.tail)


@dataclass(frozen=True, slots=True)
class LogState:
    """Where a shared log stands: ``head`` (entries stored: the next index to hand
    out), ``tree_size`` and ``tree_root`` (what the latest checkpoint signs) and
    ``integrator`` (who signed it, ``host:pid``)."""

    head: int
    tree_size: int
    tree_root: bytes
    integrator: str


@dataclass(frozen=True, slots=True)
class Integration:
    """What an integrator stores in one transaction: the new tree ``size`` and
    ``root`` and the signed checkpoints ``(size, root, note)``, ascending."""

    size: int
    root: bytes
    checkpoints: Sequence[tuple[int, bytes, str]]


class NotLeaderError(StorageError):
    """This process does not (or no longer) hold the integrator's lock, or another
    integrator moved the tree meanwhile: nothing was written."""


class SharedAuditStore(LogReader):
    """A log that many processes append to at once (one origin, one key).

    The store, not the process, numbers entries: :meth:`append_leaves` assigns the
    indices in the transaction that stores them. One integrator at a time
    (:meth:`try_lead`) extends the tree and stores checkpoints
    (:meth:`integrate`); every process follows the integrated tree through
    :meth:`state` and :meth:`leaf_hashes`. Implemented by
    :class:`gateway.stores.postgres.audit.PostgresAuditStore`. Methods are
    synchronous (the log calls them from worker threads) and thread-safe; they
    raise StorageError when the database cannot be reached.
    """

    @abstractmethod
    def recover(self) -> None:
        """Drop and reopen every connection (after a failure). Raises StorageError."""

    @abstractmethod
    def init_log(self, origin: str, empty_note: str) -> str:
        """Record ``origin`` and the size-0 checkpoint ``empty_note`` unless the log
        exists already; returns the log's stored origin."""

    @abstractmethod
    def append_leaves(
        self, batch: Sequence[PendingLeaf], *, uncertain: bool = False
    ) -> list[tuple[int, bytes]]:
        """Store ``batch`` durably under consecutive fresh indices; returns each
        one's ``(index, leaf_hash)`` in order. A batch whose outcome was lost with
        its connection is looked up by ``append_id`` and never stored twice: the
        store does so itself after a lost connection, and first of all when
        ``uncertain`` (the caller retries a batch it may have stored)."""

    @abstractmethod
    def entry(self, index: int) -> StoredEntry | None:
        """The entry at ``index``, or None."""

    @abstractmethod
    def state(self) -> LogState:
        """The head and the integrated tree, as committed now."""

    @abstractmethod
    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes of entries ``[start, end)`` in index order. Raises StorageError
        if one is missing (the range must be below the head)."""

    @abstractmethod
    def checkpoint_for(self, size: int) -> StoredCheckpoint | None:
        """The most recent checkpoint of tree size ``size``, or None."""

    @abstractmethod
    def try_lead(self) -> bool:
        """Try (without waiting) to become the integrator; True while this store
        holds the integrator's lock."""

    @abstractmethod
    def resign(self) -> None:
        """Give up the integrator's lock (closing its connection)."""

    @abstractmethod
    def integrate(
        self, step: Callable[[LogState, list[bytes], str], Integration | None], limit: int
    ) -> Integration | None:
        """One integration, in one transaction that re-checks leadership: call
        ``step(state, new_leaf_hashes, latest_note)`` with the entries past the tree
        (at most ``limit``) and store what it returns (None: nothing).
        Raises NotLeaderError if this store is not the integrator."""

    @abstractmethod
    def find_leaves(self, needles: Collection[bytes], below: int) -> list[bytes]:
        """Leaves below index ``below`` containing one of ``needles``, in index order."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL
);
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
        """Close the connection and open a fresh one; the writer lock is kept."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = self._connect()

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
    ) -> None:
        """See :meth:`AuditStore.append`."""
        self._transaction((), first_index, entries, checkpoints)

    def close(self) -> None:
        """Close the connection and release the writer lock (idempotent)."""
        with self._lock:
            try:
                self._conn.close()
            finally:
                self._release_lock()


class MemoryStore(AuditStore):
    """An in-memory store with the same semantics as :class:`SQLiteStore`, for tests.

    ``fail_writes`` makes every later write raise StorageError, to exercise the
    fail-closed path of callers.
    """

    def __init__(self) -> None:
        self._entries: list[StoredEntry] = []
        self._checkpoints: list[StoredCheckpoint] = []
        self._origin: str | None = None
        self._lock = threading.Lock()
        self.fail_writes = False

    def size(self) -> int:
        """See :meth:`LogReader.size`."""
        return len(self._entries)

    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        """See :meth:`LogReader.iter_entries`."""
        yield from list(self._entries[start:])

    def checkpoints(self) -> list[StoredCheckpoint]:
        """See :meth:`LogReader.checkpoints`."""
        return list(self._checkpoints)

    def origin(self) -> str | None:
        """See :meth:`LogReader.origin`."""
        return self._origin

    def create(self, origin: str, checkpoint_note: str) -> None:
        """See :meth:`AuditStore.create`."""
        with self._lock:
            if self._origin is not None:
                raise StorageError("log already created")
            self._origin = origin
        self.append(0, [], [(0, checkpoint_note)])

    def append(
        self,
        first_index: int,
        entries: Sequence[tuple[bytes, bytes]],
        checkpoints: Sequence[tuple[int, str]],
    ) -> None:
        """See :meth:`AuditStore.append`."""
        with self._lock:
            if self.fail_writes:
                raise StorageError("memory store: writes are failing (fail_writes=True)")
            if first_index != len(self._entries):
                raise StorageError(f"append at {first_index}, but the log has {len(self._entries)}")
            for i, (leaf, lh) in enumerate(entries):
                self._entries.append(StoredEntry(first_index + i, leaf, lh))
            for size, note in checkpoints:
                self._checkpoints.append(StoredCheckpoint(len(self._checkpoints) + 1, size, note))


class ExportReader(LogReader):
    """Read an exported log folder (``credit-audit export``) for verification.

    Layout: ``records.jsonl`` (exact leaf bytes, one per line),
    ``checkpoints/NNNNNNNN.note`` and ``origin``. Raises StorageError if the
    folder is not an export.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._records = self.folder / "records.jsonl"
        if not self._records.is_file() or not (self.folder / "checkpoints").is_dir():
            raise StorageError(f"{self.folder}: not an exported audit log")

    def size(self) -> int:
        """See :meth:`LogReader.size`."""
        return sum(1 for _ in self.iter_entries())

    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        """See :meth:`LogReader.iter_entries`."""
        try:
            with self._records.open("rb") as f:
                for i, line in enumerate(f):
                    if i >= start:
                        yield StoredEntry(i, line.removesuffix(b"\n"), None)
        except OSError as err:
            raise StorageError(f"{self._records}: {err}") from None

    def checkpoints(self) -> list[StoredCheckpoint]:
        """See :meth:`LogReader.checkpoints`."""
        out = []
        try:
            for path in sorted((self.folder / "checkpoints").glob("*.note")):
                note = path.read_text(encoding="utf-8")
                size_line = note.split("\n")[1] if note.count("\n") > 1 else ""
                size = int(size_line) if size_line.isdigit() else -1
                out.append(StoredCheckpoint(int(path.stem), size, note))
        except (OSError, ValueError) as err:
            raise StorageError(f"{self.folder}: bad checkpoint file ({err})") from None
        return out

    def origin(self) -> str | None:
        """See :meth:`LogReader.origin`."""
        path = self.folder / "origin"
        try:
            return path.read_text(encoding="utf-8").strip() if path.exists() else None
        except OSError as err:
            raise StorageError(f"{path}: {err}") from None


def open_reader(location: str | os.PathLike[str]) -> LogReader:
    """A read-only view of a log: an export folder or a SQLite file.

    Raises StorageError if it is neither.
    """
    if Path(location).is_dir():
        return ExportReader(location)
    return SQLiteStore(location, read_only=True)
