"""Storage of the audit log behind a small interface.

:class:`AuditStore` is what :class:`gateway.audit.log.AuditLog` needs: append a
batch of entries together with any checkpoints in one durable transaction,
and read entries and checkpoints back. The embedded default is the SQLite file
of :class:`gateway.stores.sqlite.audit.SQLiteStore` (WAL, ``synchronous=FULL``),
beside the PostgreSQL backend; :class:`MemoryStore` is a fake with the same
behaviour minus durability, for tests. :class:`SharedAuditStore` is the
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

One writer per :class:`AuditStore`: a second writer of the same SQLite file, in
this process or another, is refused at its start with :class:`LogInUseError`
(see :mod:`gateway.stores.sqlite.audit`); many writers share a
:class:`SharedAuditStore`.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.errors import StorageError

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
    "SharedAuditStore",
    "StoredCheckpoint",
    "StoredEntry",
    "dense_run",
]


def dense_run(rows: Iterable[Sequence[Any]], start: int) -> list[bytes]:
    """The hashes of ``(index, hash)`` rows (index order) from ``start`` up to the first
    gap: what :meth:`AuditStore.tile_hashes` answers, read from either backend's rows."""
    out: list[bytes] = []
    for idx, h in rows:
        if int(idx) != start + len(out):
            break
        out.append(bytes(h))
    return out


class LogInUseError(StorageError):
    """Another writer holds the log; ``holder`` is its process id as it wrote it
    (empty if unknown)."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        who = f"process {holder}" if holder else "another process"
        super().__init__(f"the audit log is already open for writing by {who}")


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
        tiles: Sequence[tuple[int, int, bytes]] = (),
    ) -> None:
        """Store ``(leaf, leaf_hash)`` pairs from ``first_index``, checkpoint
        ``(size, note)`` pairs and the tree's tile hashes ``(level >= 1, index,
        hash)`` these entries complete (:data:`gateway.audit.merkle.TileHash`) in one
        transaction, durable when this returns.

        Raises StorageError; on error nothing of the batch is stored.
        """

    @abstractmethod
    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Stored hashes of tile level ``level`` (0: the leaf hashes; L >= 1: roots of
        ``256**L`` leaves) with indices ``[start, end)``: the dense run from ``start``,
        shorter where the rest is not stored (a :data:`gateway.audit.merkle.HashReader`).
        Committed data only, and safe to call while a write is in progress.
        Raises StorageError."""

    @abstractmethod
    def tile_count(self, level: int) -> int:
        """One more than the highest stored index of tile level ``level``."""

    @abstractmethod
    def add_tiles(self, tiles: Sequence[tuple[int, int, bytes]]) -> None:
        """Store tile hashes alone, durably (filling in a log written before the store
        kept them). Raises StorageError."""

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
    ``root``, the signed checkpoints ``(size, root, note)``, ascending, and the tile
    hashes ``(level >= 1, index, hash)`` the new entries complete."""

    size: int
    root: bytes
    checkpoints: Sequence[tuple[int, bytes, str]]
    tiles: Sequence[tuple[int, int, bytes]] = ()


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
    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """As :meth:`AuditStore.tile_hashes`: level 0 from the entries, levels >= 1
        as the integrator stored them. Raises StorageError."""

    @abstractmethod
    def tile_count(self, level: int) -> int:
        """One more than the highest stored index of tile level ``level``."""

    @abstractmethod
    def add_tiles(self, tiles: Sequence[tuple[int, int, bytes]]) -> None:
        """Store tile hashes below the integrated size that are missing (a log made
        before the store kept them); idempotent. Raises StorageError."""

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


class MemoryStore(AuditStore):
    """An in-memory store with the same semantics as :class:`SQLiteStore`, for tests.

    ``fail_writes`` makes every later write raise StorageError, to exercise the
    fail-closed path of callers.
    """

    def __init__(self) -> None:
        self._entries: list[StoredEntry] = []
        self._checkpoints: list[StoredCheckpoint] = []
        self._tiles: dict[int, list[bytes]] = {}
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
        tiles: Sequence[tuple[int, int, bytes]] = (),
    ) -> None:
        """See :meth:`AuditStore.append`."""
        with self._lock:
            if self.fail_writes:
                raise StorageError("memory store: writes are failing (fail_writes=True)")
            if first_index != len(self._entries):
                raise StorageError(f"append at {first_index}, but the log has {len(self._entries)}")
            counts = {level: len(row) for level, row in self._tiles.items()}
            for level, index, _ in tiles:
                if index != counts.get(level, 0):
                    raise StorageError(f"tile hash {index} of level {level} out of order")
                counts[level] = index + 1
            for i, (leaf, lh) in enumerate(entries):
                self._entries.append(StoredEntry(first_index + i, leaf, lh))
            for level, _, h in tiles:
                self._tiles.setdefault(level, []).append(h)
            for size, note in checkpoints:
                self._checkpoints.append(StoredCheckpoint(len(self._checkpoints) + 1, size, note))

    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """See :meth:`AuditStore.tile_hashes`."""
        if level == 0:
            return [e.leaf_hash or b"" for e in self._entries[start:end]]
        return list(self._tiles.get(level, [])[start:end])

    def tile_count(self, level: int) -> int:
        """See :meth:`AuditStore.tile_count`."""
        return len(self._entries) if level == 0 else len(self._tiles.get(level, []))

    def add_tiles(self, tiles: Sequence[tuple[int, int, bytes]]) -> None:
        """See :meth:`AuditStore.add_tiles`."""
        self.append(len(self._entries), [], [], tiles)


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
