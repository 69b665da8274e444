"""The gateway's durable, signed, append-only audit log (asyncio, group commit).

>>> import asyncio, tempfile, pathlib
>>> from gateway.audit.note import Ed25519Signer, generate_key
>>> async def demo(path):
...     skey, vkey = generate_key("gateway.example/audit")
...     log = await AuditLog.open(path, Ed25519Signer.from_key_string(skey))
...     receipt = await log.append({"kind": "query", "agency_id": "a1"})
...     await log.close()
...     return receipt.index
>>> asyncio.run(demo(pathlib.Path(tempfile.mkdtemp()) / "audit.db"))
0

How it works. :meth:`AuditLog.append` encodes the record (canonical JSON with
``"v"`` and ``"seq"``), gives it the next index and queues it. One writer
task drains the queue and hands the whole batch to a worker thread, which
hashes the leaves, extends the Merkle tree's right edge, signs any checkpoint
that is due and writes entries, the tree's tile hashes they complete and
checkpoints in ONE SQLite transaction with ``synchronous=FULL``; only then
are all the batch's callers released together (group commit: one fsync for
many requests, and the event loop never waits for the disk). A checkpoint is
written at least every ``checkpoint_every`` (256) entries and, while entries
are waiting for one, at least every ``checkpoint_interval`` (1 s).

Fail closed, then heal: if a batch cannot be written, every waiter of that
batch, every queued append and every later append raises
:class:`~gateway.errors.AuditUnavailableError`, and :attr:`AuditLog.available`
turns False (listeners added with :meth:`AuditLog.add_listener` hear it: the
gateway's health turns NOT_SERVING). After an I/O error the store's state is
unknown, so a background task retries, with backoff from ``retry_interval``
up to 30 s: it reconnects the store, reopens the tree and checks it
against the last signed checkpoint exactly as :meth:`AuditLog.open` does
(signing a fresh checkpoint over any tail) and, once that succeeds, takes
appends again and tells the listeners; no restart is needed. A store that no
longer matches its checkpoint stays failed.

One writer per log: a second :meth:`AuditLog.open` of the same file, in any
process, is refused with :class:`~gateway.errors.ConfigError` while the first
is open (see :mod:`gateway.audit.store`).

Memory is flat however long the log grows: the tree is a
:class:`~gateway.audit.tiles.TiledTree` (C2SP tlog-tiles), of which memory holds
the right edge and at most :data:`TILE_CACHE` tiles; proofs and roots of past sizes
read tiles from the store (a separate read connection: never behind the writer's
fsync). They are coroutines that compute on a worker thread: a tile read (a SQLite
read, a PostgreSQL round trip) never stalls the event loop, and the writer thread
extending the tree meanwhile never changes a size already committed.

This module imports :mod:`gateway.errors` (and so gRPC); the auditors' tool
never imports it.

Why one module (some 640 lines): opening, the writer, failing closed and healing
share one state (durable size, latest checkpoint, failure) that only they change;
:class:`~gateway.audit.shared.SharedAuditLog` extends it, and the tree's own logic is
in :mod:`gateway.audit.tiles`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from gateway.audit.errors import AuditError, LogIntegrityError, ProofError, RecordError
from gateway.audit.merkle import EMPTY_ROOT, TileHash, leaf_hash
from gateway.audit.note import Signer, Verifier, open_note
from gateway.audit.records import encode_record
from gateway.audit.store import AuditStore, LogInUseError, PendingLeaf
from gateway.audit.tiles import TiledTree, fill_tiles
from gateway.errors import AuditUnavailableError, ConfigError, InternalError, NotFoundError
from gateway.stores.sqlite.audit import SQLiteStore

__all__ = ["AuditLog", "Receipt"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Longest wait between two attempts to heal a failed log, in seconds.
MAX_RETRY_INTERVAL = 30.0
#: Full tiles of the Merkle tree a log keeps in memory for proofs (about 16 KiB each).
TILE_CACHE = 64


@dataclass(frozen=True)
class Receipt:
    """Proof of logging handed back to the caller (``AuditReceipt`` in query.proto)."""

    index: int
    leaf_hash: bytes
    origin: str


@dataclass
class _Pending:
    index: int  # -1 in a shared log until the store numbers it
    leaf: bytes
    future: asyncio.Future[Receipt]
    template: PendingLeaf | None = None  # a shared log's record, index not yet spliced in


_CLOSE = object()


class AuditLog:
    """A signed append-only log; create with :meth:`open`, never directly."""

    def __init__(
        self,
        store: AuditStore,
        signers: list[Signer],
        origin: str,
        tree: TiledTree,
        latest: tuple[int, str],
        *,
        verifiers: list[Verifier],
        checkpoint_interval: float,
        checkpoint_every: int,
        max_batch: int,
        retry_interval: float,
    ) -> None:
        self._store = store
        self._init_state(
            signers,
            origin,
            tree,
            latest,
            verifiers,
            (checkpoint_interval, checkpoint_every, max_batch, retry_interval),
        )
        self._size = tree.size  # committed and durable
        self._next_index = tree.size  # handed out to appends
        self._writer = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    def _init_state(
        self,
        signers: list[Signer],
        origin: str,
        tree: TiledTree,
        latest: tuple[int, str],
        verifiers: list[Verifier],
        numbers: tuple[float, int, int, float],
    ) -> None:
        """The state every log has (this one and :class:`~gateway.audit.shared.SharedAuditLog`):
        keys, tree, latest checkpoint, options (see :func:`_check_options`), queue and
        failure state. Call on the event loop."""
        self._signers = signers
        self._verifiers = verifiers
        self.origin = origin
        self._tree = tree
        self._cp_size, self._cp_note = latest
        self._cp_time = time.monotonic()
        self._interval, self._every, self._max_batch, self._retry = numbers
        self._queue: asyncio.Queue[_Pending | object] = asyncio.Queue()
        self._failure: str | None = None
        self._closing = False
        self._listeners: list[Callable[[bool], None]] = []
        self._healer: asyncio.Task[None] | None = None
        self._stop_healing = asyncio.Event()
        # Proofs and roots reading the tree on worker threads: close waits for them
        # before closing the store (a read after it would reopen a connection).
        self._reads: set[asyncio.Task[Any]] = set()

    # --- opening ---------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str] | None,
        signer: Signer,
        origin: str | None = None,
        *,
        trusted_keys: Sequence[str] = (),
        co_signers: Sequence[Signer] = (),
        store: AuditStore | None = None,
        checkpoint_interval: float = 1.0,
        checkpoint_every: int = 256,
        max_batch: int = 2048,
        retry_interval: float = 1.0,
    ) -> AuditLog:
        """Open (or create) the log at ``path`` and start its writer task.

        ``origin`` defaults to, and must equal, ``signer.key_name``.
        ``trusted_keys`` are verifier key strings besides the signer's own that
        may have signed the last checkpoint (the previous key, after a key
        rotation). ``co_signers`` also sign every new checkpoint: during a key
        rotation the old key co-signs with the new one, so verifiers that know
        only the old key keep verifying until they have the new one.
        ``store`` replaces the SQLite file at ``path`` (e.g. a
        :class:`~gateway.audit.store.MemoryStore` in tests).
        ``retry_interval`` (seconds) is the first wait before trying to heal
        a failed log; it doubles up to :data:`MAX_RETRY_INTERVAL`.

        The tree's right edge is read from the store and must make the last
        checkpoint's root (entries written after it, after a crash, are
        re-hashed and checked); if entries follow it or it was signed by
        another key, a fresh checkpoint is signed at once.

        Raises ConfigError for a bad origin or options, a weak or malformed
        key, or a log another writer holds open; AuditUnavailableError if the
        log cannot be opened or does not match its last checkpoint.
        """
        origin, verifiers = _check_options(
            signer,
            origin,
            trusted_keys,
            co_signers,
            (checkpoint_interval, checkpoint_every, max_batch, retry_interval),
        )
        if store is None and path is None:
            raise ConfigError("audit.path", "a path or a store is needed")
        try:
            if store is None:
                assert path is not None
                store = await asyncio.to_thread(SQLiteStore, path)
            signers = [signer, *co_signers]
            tree, latest = await asyncio.to_thread(cls._load, store, signers, origin, verifiers)
        except LogInUseError as err:
            raise ConfigError(
                "audit.path",
                f"{err}: a log has exactly one writer; stop the other gateway, or give this "
                "one a log of its own",
            ) from None
        except AuditError as err:
            if store is not None:
                store.close()
            raise AuditUnavailableError(f"audit log refused to open: {err}") from err
        return cls(
            store,
            signers,
            origin,
            tree,
            latest,
            verifiers=verifiers,
            checkpoint_interval=checkpoint_interval,
            checkpoint_every=checkpoint_every,
            max_batch=max_batch,
            retry_interval=retry_interval,
        )

    @staticmethod
    def _load(
        store: AuditStore, signers: list[Signer], origin: str, verifiers: list[Verifier]
    ) -> tuple[TiledTree, tuple[int, str]]:
        """Open the stored tree and check it against the last checkpoint (worker thread).

        Reads the right edge of the tree at the checkpoint's size (a few hundred hashes,
        however long the log) and checks that it makes the signed root; then re-hashes
        the entries written after that checkpoint (a crash's tail: at most about one
        checkpoint interval of them) and checks them and their tile hashes. Entries
        the checkpoint covers are not re-hashed here: ``credit-audit verify`` does
        that, offline. A log written before the store kept tile hashes gets them
        filled in first (one pass over its leaf hashes, once).
        """
        stored_origin = store.origin()
        if stored_origin is None:
            if store.size() or store.checkpoints():
                raise LogIntegrityError("the store has entries but no origin")
            note = sign_checkpoint(Checkpoint(origin, 0, EMPTY_ROOT), signers)
            store.create(origin, note)
            return TiledTree(store.tile_hashes, cache_tiles=TILE_CACHE), (0, note)
        if stored_origin != origin:
            raise LogIntegrityError(f"the log's origin is {stored_origin!r}, not {origin!r}")
        last = store.latest_checkpoint()
        if last is None:
            raise LogIntegrityError("the log has no checkpoint")
        cp = open_checkpoint(last.note, verifiers, origin=origin)
        size = store.size()
        if cp.size > size:
            raise LogIntegrityError(
                f"the last checkpoint covers {cp.size} entries but only {size} are stored"
            )
        fill_tiles(store, size)
        tree = TiledTree.load(store.tile_hashes, cp.size, cache_tiles=TILE_CACHE)
        if tree.root() != cp.root_hash:
            raise LogIntegrityError(f"the entries do not match the checkpoint of size {cp.size}")
        tiles: list[TileHash] = []
        for entry in store.iter_entries(cp.size):
            if entry.index != tree.size:
                raise LogIntegrityError(f"entry {tree.size} is missing")
            h = leaf_hash(entry.leaf)
            if entry.leaf_hash is not None and h != entry.leaf_hash:
                raise LogIntegrityError(f"entry {entry.index} does not match its leaf hash")
            tiles += tree.extend([h])
        for level, index, h in tiles:
            if store.tile_hashes(level, index, index + 1) != [h]:
                raise LogIntegrityError(
                    f"tile hash {index} of level {level} does not match the entries"
                )
        # A tail written after the last checkpoint (a crash), or a checkpoint
        # by the previous key (a rotation): vouch for the log with our key now.
        if tree.size > cp.size or not _signs(last.note, verifiers[0]):
            note = sign_checkpoint(Checkpoint(origin, tree.size, tree.root()), signers)
            store.append(tree.size, [], [(tree.size, note)])
            return tree, (tree.size, note)
        return tree, (cp.size, last.note)

    # --- the public API -----------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of committed (durable) entries."""
        return self._size

    @property
    def available(self) -> bool:
        """Whether appends are taken now: False while failed (healing) and once closed."""
        return self._failure is None and not self._closing

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(available)`` on the event loop each time the log fails
        (False) or heals (True). A listener must not raise or block."""
        self._listeners.append(listener)

    def _notify(self, available: bool) -> None:
        for listener in self._listeners:
            try:
                listener(available)
            except Exception:  # one broken listener must not stop the others
                log.exception("audit log listener failed")

    async def append(self, record: Mapping[str, Any]) -> Receipt:
        """Append ``record`` and return once it is committed and fsynced.

        Raises InternalError if the record cannot be encoded (a float, a
        reserved field "v"/"seq"...) and AuditUnavailableError if the log is
        closed or the write failed. Cancelling the caller does not withdraw a
        queued record: it is logged all the same.
        """
        if self._failure is not None:
            # The reason (a path, an OS error) is for the operator's log, not the caller.
            raise AuditUnavailableError("audit log unavailable: its storage is failing")
        if self._closing:
            raise AuditUnavailableError("audit log is closed")
        index = self._next_index
        try:
            leaf = encode_record(record, seq=index)
        except RecordError as err:
            raise InternalError(f"audit record rejected: {err}") from err
        self._next_index = index + 1
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(index, leaf, future))
        # shield: a cancelled caller must not cancel the shared future.
        return await asyncio.shield(future)

    async def find_leaves(self, needles: Collection[bytes]) -> list[bytes]:
        """Every durable entry's bytes containing one of ``needles``, in index
        order: a scan of the whole store on a worker thread (start-up
        recovery's look-up of a few bookings; never on the query path)."""
        size = self._size
        if not needles:
            return []

        def scan() -> list[bytes]:
            return [
                e.leaf
                for e in self._store.iter_entries()
                if e.index < size and any(n in e.leaf for n in needles)
            ]

        return await asyncio.to_thread(scan)

    async def read_leaf(self, index: int) -> bytes | None:
        """The stored record bytes at ``index`` (durable entries only), or None.

        Raises AuditUnavailableError if they no longer match their stored leaf hash.
        """
        if not 0 <= index < self._size:
            return None
        entry = await asyncio.to_thread(self._store.entry, index)
        if entry is None:
            return None
        if entry.leaf_hash is not None and leaf_hash(entry.leaf) != entry.leaf_hash:
            # The tree (checked against the signed root) holds the stored hash: bytes
            # that differ from it were changed behind the log's back. Never serve them.
            raise _unreadable(LogIntegrityError(f"entry {index} does not match its leaf hash"))
        return entry.leaf

    @property
    def checkpoint_size(self) -> int:
        """Tree size of the latest signed checkpoint."""
        return self._cp_size

    @property
    def checkpoint_age_s(self) -> float:
        """Seconds since the latest checkpoint was signed (or the log opened)."""
        return time.monotonic() - self._cp_time

    @property
    def checkpoint_due_in_s(self) -> float:
        """Seconds until the writer signs a checkpoint over the entries committed
        past the latest one (at most ``checkpoint_interval``; 0 when overdue)."""
        return max(0.0, self._cp_time + self._interval - time.monotonic())

    @property
    def signer(self) -> Signer:
        """The log's own signing key (its checkpoints' first signature). Anything else it
        signs must be domain-separated from note texts (see gateway.audit.reportcheck)."""
        return self._signers[0]

    def latest_checkpoint(self) -> str:
        """The latest signed checkpoint note (C2SP tlog-checkpoint)."""
        return self._cp_note

    async def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """RFC 6962 inclusion proof of entry ``index`` in the tree of ``tree_size``.

        Computed on a worker thread: a past size reads tiles from the store (an LRU
        miss is a SQLite read or a PostgreSQL round trip), which must not stall the
        event loop. Raises NotFoundError unless ``0 <= index < tree_size <= size``,
        AuditUnavailableError if the tree's hashes cannot be read.
        """
        self._provable(tree_size, index)
        return await self._off_loop(lambda tree: tree.inclusion_proof(index, tree_size))

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 6962 consistency proof from tree size ``old`` to ``new``, computed on a
        worker thread as :meth:`inclusion_proof` is.

        Raises NotFoundError unless ``0 < old <= new <= size``, AuditUnavailableError if
        the tree's hashes cannot be read.
        """
        self._provable(new, old)
        return await self._off_loop(lambda tree: tree.consistency_proof(old, new))

    async def root(self, tree_size: int | None = None) -> bytes:
        """Root hash at ``tree_size`` (default: all committed entries), computed on a
        worker thread (a past size reads tiles).

        Raises NotFoundError for a size beyond the log, AuditUnavailableError if the
        tree's hashes cannot be read.
        """
        size = self._size if tree_size is None else tree_size
        if size < 0:
            raise NotFoundError(f"tree size {size} is not a size")
        # A root of ``size`` needs its last entry integrated: that is the one to name.
        self._provable(size, max(size - 1, 0))
        return await self._off_loop(lambda tree: tree.root(size))

    def _provable(self, size: int, index: int) -> None:
        """Raise NotFoundError unless a tree of ``size`` is committed (``index``: the
        entry asked about, for a shared log's not-yet-integrated error)."""
        if size > self._size:
            raise NotFoundError(f"tree size {size} is beyond the log ({self._size})")

    async def _off_loop(self, read: Callable[[TiledTree], _T]) -> _T:
        """``read(tree)`` on a worker thread, its errors as the caller's.

        Safe beside the writer thread: a size already committed is never changed by
        a later append (:class:`~gateway.audit.tiles.TiledTree` locks its right edge
        and LRU; the stores read tiles on a read connection, not the writer's, one read
        at a time under a lock).
        The tree is taken now: a heal that replaces it meanwhile leaves this read on
        the tree it began with, whose committed sizes are the same. Raises
        AuditUnavailableError once the log is closing.
        """
        if self._closing:
            raise AuditUnavailableError("audit log is closed")
        # A task of its own, shielded: a caller that goes away does not leave a read
        # running that close() would not wait for.
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(read, self._tree))
        self._reads.add(task)
        task.add_done_callback(self._read_done)
        try:
            return await asyncio.shield(task)
        except ProofError as err:
            raise NotFoundError(str(err)) from None
        except AuditError as err:
            raise _unreadable(err) from None

    def _read_done(self, task: asyncio.Task[Any]) -> None:
        self._reads.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its caller may have gone away

    async def _reads_done(self) -> None:
        """Wait for the proofs and roots under way (close: before the store closes)."""
        if self._reads:
            await asyncio.wait(list(self._reads))

    async def close(self) -> None:
        """Write everything queued, sign a final checkpoint and close the store.

        Raises AuditUnavailableError if the log had failed or the final writes
        fail (the store is closed regardless). Closing twice is harmless.
        """
        if self._closing:
            return
        self._closing = True
        self._stop_healing.set()
        if self._healer is not None:
            await self._healer  # finishes its attempt in progress, then stops
        self._queue.put_nowait(_CLOSE)
        await self._writer
        await self._reads_done()
        await asyncio.to_thread(self._store.close)
        if self._failure is not None:
            raise AuditUnavailableError("audit log closed after a failure it had not healed")

    # --- the writer ---------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        while True:
            timeout = None
            if self._size > self._cp_size:
                timeout = max(0.0, self._cp_time + self._interval - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    first = await queue.get()
            except TimeoutError:
                if not await self._write([]):
                    return
                continue
            batch: list[_Pending] = []
            closing = first is _CLOSE
            if isinstance(first, _Pending):
                batch.append(first)
            while not closing and len(batch) < self._max_batch and not queue.empty():
                item = queue.get_nowait()
                if item is _CLOSE:
                    closing = True
                elif isinstance(item, _Pending):
                    batch.append(item)
            if (batch or closing) and not await self._write(batch, final=closing):
                return
            if closing:
                return

    async def _write(self, batch: list[_Pending], *, final: bool = False) -> bool:
        """Commit one batch; False (and the log failed) if it could not be written."""
        try:
            hashes, cp = await asyncio.to_thread(
                self._commit, [p.leaf for p in batch], time.monotonic(), final
            )
        except Exception as err:  # any failure at all must fail closed
            self._fail(batch, f"{type(err).__name__}: {err}")
            return False
        self._size += len(batch)
        if cp is not None:
            self._cp_size, self._cp_note = cp
            self._cp_time = time.monotonic()
        for p, h in zip(batch, hashes, strict=True):
            if not p.future.done():
                p.future.set_result(Receipt(p.index, h, self.origin))
        return True

    def _commit(
        self, leaves: list[bytes], now: float, final: bool
    ) -> tuple[list[bytes], tuple[int, str] | None]:
        """Hash, extend the tree, sign due checkpoints, write entries, tile hashes and
        checkpoints in one transaction (worker thread)."""
        tree = self._tree
        start = tree.size
        end = start + len(leaves)
        hashes = [leaf_hash(leaf) for leaf in leaves]
        sizes = []
        last = self._cp_size
        # At most checkpoint_every entries between two checkpoints, even
        # inside one large batch.
        while end - last >= self._every:
            last += self._every
            sizes.append(last)
        if end > last and (final or now - self._cp_time >= self._interval):
            sizes.append(end)
        tiles: list[TileHash] = []
        notes = []
        for s in sizes:  # the roots of sizes inside the batch, from the right edge
            tiles += tree.extend(hashes[tree.size - start : s - start])
            notes.append(
                (s, sign_checkpoint(Checkpoint(self.origin, s, tree.root()), self._signers))
            )
        tiles += tree.extend(hashes[tree.size - start :])
        if leaves or notes:
            self._store.append(start, list(zip(leaves, hashes, strict=True)), notes, tiles)
        return hashes, (notes[-1] if notes else None)

    def _fail(self, batch: list[_Pending], reason: str) -> None:
        self._failure = reason
        log.error("audit log write failed; refusing appends until healed", extra={"reason": reason})
        err = AuditUnavailableError("audit log write failed: its storage is failing")
        waiting = list(batch)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Pending):
                waiting.append(item)
        for p in waiting:
            if not p.future.done():
                p.future.set_exception(err)
                # Mark as retrieved: a waiter that was cancelled never reads it,
                # and an unretrieved exception would be logged as a warning.
                p.future.exception()
        self._notify(False)
        if not self._closing and (self._healer is None or self._healer.done()):
            self._healer = asyncio.get_running_loop().create_task(self._heal(), name="audit-healer")

    async def _heal(self) -> None:
        """Retry until the store works and matches its last checkpoint, then resume."""
        delay = self._retry
        while not self._closing:
            try:
                async with asyncio.timeout(delay):
                    await self._stop_healing.wait()
                return  # closing
            except TimeoutError:
                pass
            try:
                tree, latest = await asyncio.to_thread(self._reload)
            except Exception as err:  # still failing: wait longer, try again
                log.warning(
                    "audit log still failing", extra={"reason": f"{type(err).__name__}: {err}"}
                )
                delay = min(delay * 2, MAX_RETRY_INTERVAL)
                continue
            if self._stop_healing.is_set():
                return  # closed while the attempt ran: the store is being closed
            self._tree = tree
            self._size = self._next_index = tree.size
            self._cp_size, self._cp_note = latest
            self._cp_time = time.monotonic()
            self._failure = None
            self._writer = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")
            log.warning("audit log healed: re-verified against its last checkpoint")
            self._notify(True)
            return

    def _reload(self) -> tuple[TiledTree, tuple[int, str]]:
        """Reconnect the store, re-verify it from scratch and prove it takes a
        durable write again by storing a fresh checkpoint (worker thread)."""
        self._store.recover()
        tree, _ = self._load(self._store, self._signers, self.origin, self._verifiers)
        note = sign_checkpoint(Checkpoint(self.origin, tree.size, tree.root()), self._signers)
        self._store.append(tree.size, [], [(tree.size, note)])
        return tree, (tree.size, note)


def _check_options(
    signer: Signer,
    origin: str | None,
    trusted_keys: Sequence[str],
    co_signers: Sequence[Signer],
    numbers: tuple[float, int, int, float],
) -> tuple[str, list[Verifier]]:
    """The origin and the verifiers (own keys first) of a log about to open; see
    :meth:`AuditLog.open` for the rules. Raises ConfigError."""
    checkpoint_interval, checkpoint_every, max_batch, retry_interval = numbers
    origin = signer.key_name if origin is None else origin
    if origin != signer.key_name:
        raise ConfigError("audit.origin", f"{origin!r} differs from the key name")
    if (
        checkpoint_interval <= 0
        or checkpoint_every < 1
        or max_batch < 1
        or not 0 < retry_interval <= MAX_RETRY_INTERVAL
    ):
        raise ConfigError(
            "audit", "checkpoint interval, checkpoint size, batch and retry must be > 0"
        )
    verifiers: list[Verifier] = []
    try:
        for s in (signer, *co_signers):
            own = Verifier.from_key_string(s.verifier_key())
            if own not in verifiers:  # a key listed twice counts once
                verifiers.append(own)
    except AuditError as err:
        raise ConfigError("audit.key", str(err)) from None
    for key in trusted_keys:
        try:
            trusted = Verifier.from_key_string(key)
        except AuditError as err:
            raise ConfigError("audit.trusted_keys", str(err)) from None
        if trusted not in verifiers:  # the same key listed twice counts once
            verifiers.append(trusted)
    return origin, verifiers


def _unreadable(err: AuditError) -> AuditUnavailableError:
    """The caller's error when the tree's hashes cannot be read (the reason, which may
    name a path, goes to the operator's log only)."""
    log.error("audit log tree hashes unreadable", extra={"reason": f"{type(err).__name__}: {err}"})
    return AuditUnavailableError("audit log unavailable: its storage is failing")


def _signs(note: str, verifier: Verifier) -> bool:
    """Whether ``verifier`` has a valid signature line on ``note``."""
    try:
        open_note(note, [verifier])
    except AuditError:
        return False
    return True
