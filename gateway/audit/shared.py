"""One audit log appended to by many gateway processes on many hosts
(:class:`SharedAuditLog`, over a :class:`~gateway.audit.store.SharedAuditStore`:
PostgreSQL, :mod:`gateway.stores.postgres.audit`).

One origin, one key: every process signs with the same key, so the log is one log to
auditors; the C2SP checkpoints, the receipts, the proofs and ``credit-audit`` are those
of the single-writer :class:`~gateway.audit.log.AuditLog`, which this class extends.

Appending (every process). :meth:`SharedAuditLog.append` encodes the record without
its index (:func:`~gateway.audit.records.leaf_template`: refused at once if it cannot
be encoded) and queues it with 16 random bytes that name the append; the writer task
drains the queue and stores the whole batch in one statement that numbers it
(group commit per process). The receipt carries the index and the leaf hash as soon
as the statement has committed: before the answer leaves.

Integrating (one process at a time). Every process runs a maintenance task. It
follows the integrated tree: every ``follow_interval`` (0.2 s) it reads the tree
state and the leaf hashes past its :class:`~gateway.audit.tiles.TiledTree` (whose
memory holds only the right edge and a few tiles), checks its own root against the
stored root and takes the checkpoint that signs it. Proofs read tiles: the leaf
hashes and the hashes above them (``audit_tiles``, C2SP tlog-tiles levels 1, 2...),
which the integrator stores in the transaction that moves the tree. A process joining
reads the tree's right edge only, never every hash; a stored root that disagrees with
what a process computes is caught by every process (bench/audit_pg_bench.py measures
following). One process
holds the integrator's lock (:meth:`~gateway.audit.store.SharedAuditStore.try_lead`,
retried every ``lead_interval``, 0.5 s, by the others): every 50 ms it checks whether
a checkpoint is due (``checkpoint_every`` entries waiting, or any entry waiting for
``checkpoint_interval``) and, if so, in one transaction that re-checks its lock,
computes the roots with a :class:`~gateway.audit.merkle.CompactRange`, signs a
checkpoint at every multiple of ``checkpoint_every`` and at the end, and stores them
with the new tree state and tile hashes. When the integrator dies its session ends and its lock with
it; another process takes over within ``lead_interval`` plus one tick (a killed
process: at once; a vanished host: the keepalive bound of the store).

Fail closed, then heal, as :class:`~gateway.audit.log.AuditLog`: a batch that cannot
be stored fails its waiters and every later append until a healer has reconnected and
reopened the tree from the store and checked it against the signed checkpoint.
Integration failures are logged and retried; they never fail appends (entries wait,
durable, for the next integrator).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gateway.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from gateway.audit.errors import AuditError, LogIntegrityError, RecordError
from gateway.audit.log import (
    TILE_CACHE,
    AuditLog,
    Receipt,
    _check_options,
    _Pending,
    _signs,
)
from gateway.audit.merkle import EMPTY_ROOT, TileHash, leaf_hash
from gateway.audit.note import Signer, Verifier
from gateway.audit.records import leaf_template
from gateway.audit.store import (
    Integration,
    LogState,
    NotLeaderError,
    PendingLeaf,
    SharedAuditStore,
)
from gateway.audit.tiles import TiledTree, fill_tiles
from gateway.errors import (
    AuditUnavailableError,
    InternalError,
    NotFoundError,
    NotYetIntegratedError,
)

__all__ = ["SharedAuditLog"]

log = logging.getLogger(__name__)

#: How often the integrator checks whether a checkpoint is due (seconds).
INTEGRATOR_TICK_S = 0.05
#: Most entries one integration takes in (the rest waits for the next tick).
INTEGRATION_LIMIT = 100_000


class SharedAuditLog(AuditLog):
    """A signed append-only log shared with other processes; open with :meth:`open_shared`.

    :attr:`size` is the number of entries known to be durable (this process's own
    commits and the head it last read); proofs and :meth:`latest_checkpoint` cover the
    integrated tree this process has followed, at most ``follow_interval`` behind the
    integrator.
    """

    def __init__(
        self,
        store: SharedAuditStore,
        signers: list[Signer],
        origin: str,
        tree: TiledTree,
        latest: tuple[int, str],
        head: int,
        *,
        verifiers: list[Verifier],
        checkpoint_interval: float,
        checkpoint_every: int,
        max_batch: int,
        retry_interval: float,
        follow_interval: float,
        lead_interval: float,
        integrate: bool,
    ) -> None:
        self._shared = store
        self._init_state(
            signers,
            origin,
            tree,
            latest,
            verifiers,
            (checkpoint_interval, checkpoint_every, max_batch, retry_interval),
        )
        self._size = max(head, tree.size)
        self._next_index = -1  # the store numbers entries
        self._follow_interval = follow_interval
        self._lead_interval = lead_interval
        self._may_integrate = integrate
        self._leading = False
        self._stop = asyncio.Event()
        self._healed_head = 0
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._run(), name="audit-writer")
        self._maintainer = loop.create_task(self._maintain(), name="audit-integrator")

    @classmethod
    async def open_shared(
        cls,
        store: SharedAuditStore,
        signer: Signer,
        origin: str | None = None,
        *,
        trusted_keys: Sequence[str] = (),
        co_signers: Sequence[Signer] = (),
        checkpoint_interval: float = 1.0,
        checkpoint_every: int = 256,
        max_batch: int = 2048,
        retry_interval: float = 1.0,
        follow_interval: float = 0.2,
        lead_interval: float = 0.5,
        integrate: bool = True,
    ) -> SharedAuditLog:
        """Join (or create) the shared log in ``store`` and start the writer and the
        maintenance task. The options are :meth:`AuditLog.open`'s, plus
        ``follow_interval`` and ``lead_interval`` (seconds, see the module) and
        ``integrate`` (False: never contend for the integrator's lock, e.g. a reader).

        The stored tree is followed from the leaf hashes and must match the latest
        checkpoint. Raises ConfigError for bad keys or options, AuditUnavailableError
        when the store cannot be reached or does not match its checkpoint (the store
        is closed then).
        """
        origin, verifiers = _check_options(
            signer,
            origin,
            trusted_keys,
            co_signers,
            (checkpoint_interval, checkpoint_every, max_batch, retry_interval),
        )
        if follow_interval <= 0 or lead_interval <= 0:
            raise AuditUnavailableError("follow and lead intervals must be > 0")
        signers = [signer, *co_signers]
        try:
            tree, latest, head = await asyncio.to_thread(
                cls._join, store, signers, origin, verifiers
            )
        except AuditError as err:
            store.close()
            raise AuditUnavailableError(f"audit log refused to open: {err}") from err
        return cls(
            store,
            signers,
            origin,
            tree,
            latest,
            head,
            verifiers=verifiers,
            checkpoint_interval=checkpoint_interval,
            checkpoint_every=checkpoint_every,
            max_batch=max_batch,
            retry_interval=retry_interval,
            follow_interval=follow_interval,
            lead_interval=lead_interval,
            integrate=integrate,
        )

    @staticmethod
    def _join(
        store: SharedAuditStore, signers: list[Signer], origin: str, verifiers: list[Verifier]
    ) -> tuple[TiledTree, tuple[int, str], int]:
        """Create the log if it is new, then open its tree and follow it (worker thread)."""
        empty = sign_checkpoint(Checkpoint(origin, 0, EMPTY_ROOT), signers)
        stored = store.init_log(origin, empty)
        if stored != origin:
            raise LogIntegrityError(f"the log's origin is {stored!r}, not {origin!r}")
        tree = _open_tree(store)
        latest, head = _follow(store, tree, origin, verifiers, force=True)
        if latest is None:
            raise LogIntegrityError("the log has no checkpoint of its tree")
        return tree, latest, head

    # --- the public API that differs ------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this process is the integrator now (as far as it knows)."""
        return self._leading

    @property
    def checkpoint_due_in_s(self) -> float:
        """Seconds until a checkpoint over the entries past the latest one should
        have reached this process (the integrator's interval plus one follow)."""
        return max(0.0, self._cp_time + self._interval + self._follow_interval - time.monotonic())

    async def append(self, record: Mapping[str, Any]) -> Receipt:
        """Append ``record`` and return once it is committed, with its index and leaf
        hash. Raises InternalError if the record cannot be encoded and
        AuditUnavailableError if the log is closed or failing. Cancelling the caller
        does not withdraw a queued record."""
        if self._failure is not None:
            raise AuditUnavailableError("audit log unavailable: its storage is failing")
        if self._closing:
            raise AuditUnavailableError("audit log is closed")
        try:
            head, tail = leaf_template(record)
        except RecordError as err:
            raise InternalError(f"audit record rejected: {err}") from err
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        pending = PendingLeaf(os.urandom(16), head, tail)
        self._queue.put_nowait(_Pending(-1, b"", future, pending))
        return await asyncio.shield(future)

    async def find_leaves(self, needles: Collection[bytes]) -> list[bytes]:
        """Every durable entry's bytes containing one of ``needles``, in index order,
        whichever process wrote it (the database scans)."""
        if not needles:
            return []
        size = self._size
        return await asyncio.to_thread(self._shared.find_leaves, needles, size)

    async def read_leaf(self, index: int) -> bytes | None:
        """The stored record bytes at ``index`` (durable entries only), or None."""
        if not 0 <= index < self._size:
            return None
        entry = await asyncio.to_thread(self._shared.entry, index)
        return None if entry is None else entry.leaf

    async def root(self, tree_size: int | None = None) -> bytes:
        """Root hash at ``tree_size`` (default: the followed tree), on a worker thread.
        Proofs are :meth:`AuditLog.inclusion_proof` and
        :meth:`AuditLog.consistency_proof`, which also raise NotYetIntegratedError for a
        durable size this process has not followed yet."""
        return await super().root(self._tree.size if tree_size is None else tree_size)

    def _provable(self, size: int, index: int) -> None:
        if self._tree.size < size <= self._size:
            raise NotYetIntegratedError(index, self.checkpoint_due_in_s)
        if size > self._size:
            raise NotFoundError(f"tree size {size} is beyond the log ({self._size})")

    async def close(self) -> None:
        """Write everything queued, integrate it if this process is the integrator,
        give the lock up and close the store. Raises AuditUnavailableError if the log
        had failed. Closing twice is harmless."""
        if self._closing:
            return
        self._closing = True
        self._stop_healing.set()
        self._stop.set()
        if self._healer is not None:
            await self._healer
        self._queue.put_nowait(_CLOSE_SHARED)
        await self._writer
        await self._maintainer
        if self._failure is None and self._may_integrate:
            try:
                await asyncio.to_thread(self._final_integration)
            except AuditError as err:  # another process integrates them soon enough
                log.warning("final integration skipped", extra={"reason": str(err)})
        await self._reads_done()
        await asyncio.to_thread(self._shared.close)
        if self._failure is not None:
            raise AuditUnavailableError("audit log closed after a failure it had not healed")

    # --- the writer ------------------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        while True:
            first = await queue.get()
            batch: list[_Pending] = []
            closing = first is _CLOSE_SHARED
            if isinstance(first, _Pending):
                batch.append(first)
            while not closing and len(batch) < self._max_batch and not queue.empty():
                item = queue.get_nowait()
                if item is _CLOSE_SHARED:
                    closing = True
                elif isinstance(item, _Pending):
                    batch.append(item)
            if batch and not await self._write(batch):
                return
            if closing:
                return

    async def _write(self, batch: list[_Pending], *, final: bool = False) -> bool:
        """Store one batch; False (and the log failed) if it could not be."""
        templates = [p.template for p in batch if p.template is not None]
        try:
            stored = await asyncio.to_thread(self._shared.append_leaves, templates)
            receipts = []
            for p, (index, stored_hash) in zip(batch, stored, strict=True):
                assert p.template is not None
                # The database hashed the leaf it built: the receipt's hash is
                # recomputed here, so a disagreement fails closed instead of
                # handing out a receipt that does not prove.
                own = leaf_hash(p.template.leaf(index))
                if own != stored_hash:
                    raise LogIntegrityError(f"entry {index}: the stored leaf hash differs")
                receipts.append(Receipt(index, own, self.origin))
        except Exception as err:  # any failure at all must fail closed
            self._fail(batch, f"{type(err).__name__}: {err}")
            return False
        if receipts:
            self._size = max(self._size, max(r.index for r in receipts) + 1)
        for p, receipt in zip(batch, receipts, strict=True):
            if not p.future.done():
                p.future.set_result(receipt)
        return True

    # --- following and integrating --------------------------------------------------------

    async def _maintain(self) -> None:
        next_try = 0.0
        while not self._stop.is_set():
            try:
                head = await asyncio.to_thread(self._follow_once)
                self._size = max(self._size, head, self._tree.size)
                now = time.monotonic()
                if self._may_integrate and not self._leading and now >= next_try:
                    next_try = now + self._lead_interval
                    self._leading = await asyncio.to_thread(self._shared.try_lead)
                    if self._leading:
                        log.info("this process is now the audit log's integrator")
                if self._leading:
                    await asyncio.to_thread(self._integrate_once, False)
                    self._size = max(self._size, self._tree.size)
            except _TreeMovedError:
                log.info("audit integrator follows the tree again before integrating")
            except NotLeaderError as err:
                log.warning("audit integrator stepped down", extra={"reason": str(err)})
                self._leading = False
                await asyncio.to_thread(self._shared.resign)
            except Exception as err:  # retried next tick; appends are not affected
                reason = f"{type(err).__name__}: {err}"
                log.warning("audit log maintenance failed", extra={"reason": reason})
                if self._leading:
                    self._leading = False
                    await asyncio.to_thread(self._shared.resign)
            wait = INTEGRATOR_TICK_S if self._leading else self._follow_interval
            try:
                async with asyncio.timeout(wait):
                    await self._stop.wait()
            except TimeoutError:
                pass

    def _follow_once(self) -> int:
        """Catch the in-memory tree up with the integrated one; returns the head
        (worker thread: the size is raised on the event loop, never here, so that
        two threads never race on it)."""
        latest, head = _follow(self._shared, self._tree, self.origin, self._verifiers)
        if latest is not None and (latest[0] > self._cp_size or latest[1] != self._cp_note):
            self._cp_size, self._cp_note = latest
            self._cp_time = time.monotonic()
        return head

    def _final_integration(self) -> None:
        """At closing: sign what is waiting if this process is, or can become, the
        integrator (a lone process has nobody else to do it); otherwise the
        integrator will (worker thread). Another process closing at the same moment
        may move the tree between the follow and the integration: follow again and
        retry, a few times. Raises AuditError."""
        for attempt in range(3):
            self._follow_once()
            if not (self._leading or self._shared.try_lead()):
                return  # another process integrates
            self._leading = True
            try:
                self._integrate_once(True)
                return
            except NotLeaderError:
                if attempt == 2:
                    raise

    def _integrate_once(self, final: bool) -> None:
        """Integrate and sign if due (worker thread). Raises NotLeaderError."""
        tree = self._tree
        taken: list[bytes] = []

        def step(state: LogState, hashes: list[bytes], latest: str) -> Integration | None:
            if state.tree_size != tree.size or (tree.size and tree.root() != state.tree_root):
                # The previous integrator's last write landed after this process
                # followed: nothing written; follow again next tick.
                raise _TreeMovedError("the tree moved since this process followed it")
            waiting = len(hashes)
            rotated = not _signs(latest, self._verifiers[0])
            due = waiting >= self._every or (
                waiting > 0 and (final or time.monotonic() - self._cp_time >= self._interval)
            )
            if not due and not (rotated and waiting == 0):
                return None
            edge = tree.compact()
            sizes: list[tuple[int, bytes]] = []
            tiles: list[TileHash] = []
            last = tree.size
            for h in hashes:
                tiles += edge.append(h)
                # At most checkpoint_every entries between two checkpoints.
                if edge.size - last >= self._every:
                    last = edge.size
                    sizes.append((last, edge.root()))
            if edge.size > last or not sizes:
                sizes.append((edge.size, edge.root()))
            notes = [
                (size, root, sign_checkpoint(Checkpoint(self.origin, size, root), self._signers))
                for size, root in sizes
            ]
            taken[:] = hashes
            return Integration(edge.size, edge.root(), notes, tiles)

        done = self._shared.integrate(step, INTEGRATION_LIMIT)
        if done is None:
            return
        tree.extend(taken)
        if tree.root() != done.root:  # cannot happen: the same hashes, the same rule
            raise LogIntegrityError("the integrated root differs from the in-memory tree")
        self._cp_size, self._cp_note = done.size, done.checkpoints[-1][2]
        self._cp_time = time.monotonic()

    def _reload(self) -> tuple[TiledTree, tuple[int, str]]:
        """Reconnect, reopen the tree from the store and follow it (worker thread)."""
        self._shared.recover()
        self._leading = False
        tree = _open_tree(self._shared)
        latest, head = _follow(self._shared, tree, self.origin, self._verifiers, force=True)
        if latest is None:
            raise LogIntegrityError("the log has no checkpoint of its tree")
        self._healed_head = head
        return tree, latest

    async def _heal(self) -> None:
        await super()._heal()
        # The base class sets the size to the tree's; entries past it are durable.
        self._size = max(self._size, self._healed_head)
        self._next_index = -1


_CLOSE_SHARED = object()


class _TreeMovedError(NotLeaderError):
    """The stored tree is not the one this integrator followed (the previous
    integrator's last write came after): nothing was written; still the integrator."""


def _open_tree(store: SharedAuditStore) -> TiledTree:
    """The integrated tree as stored: its right edge only (filling in the tile hashes
    of a log made before the store kept them). :func:`_follow` then checks it against
    the stored root and the checkpoint. Raises LogIntegrityError, StorageError."""
    size = store.state().tree_size
    fill_tiles(store, size)
    return TiledTree.load(store.tile_hashes, size, cache_tiles=TILE_CACHE)


def _follow(
    store: SharedAuditStore,
    tree: TiledTree,
    origin: str,
    verifiers: list[Verifier],
    *,
    force: bool = False,
) -> tuple[tuple[int, str] | None, int]:
    """Extend ``tree`` to the integrated size, check its root against the stored one
    and open the checkpoint of that size; returns ``((size, note) or None, head)``.
    None: the tree did not grow (and ``force`` is False), so the checkpoint is not
    read again. Raises LogIntegrityError when the stored tree disagrees with
    the leaf hashes, StorageError when the store cannot be read."""
    state = store.state()
    if state.tree_size < tree.size:
        raise LogIntegrityError(
            f"the stored tree shrank from {tree.size} to {state.tree_size} entries"
        )
    if state.tree_size == tree.size and tree.size and tree.root() != state.tree_root:
        raise LogIntegrityError("the stored tree root differs from the leaf hashes")
    grown = state.tree_size > tree.size
    if grown:
        hashes = store.leaf_hashes(tree.size, state.tree_size)
        probe = tree.compact()
        for h in hashes:
            probe.append(h)
        if probe.root() != state.tree_root:
            raise LogIntegrityError(
                f"the stored root of size {state.tree_size} differs from the leaf hashes"
            )
        tree.extend(hashes)
    elif not force:
        return None, state.head
    stored = store.checkpoint_for(state.tree_size)
    if stored is None:
        raise LogIntegrityError(f"no checkpoint signs the tree of size {state.tree_size}")
    cp = open_checkpoint(stored.note, verifiers, origin=origin)
    if cp.size != state.tree_size or cp.root_hash != state.tree_root:
        raise LogIntegrityError(f"the checkpoint of size {cp.size} does not sign the stored tree")
    return (cp.size, stored.note), state.head
