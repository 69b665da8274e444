"""The audit log's Merkle tree in tiles: bounded memory for a log without end.

:class:`TiledTree` is an RFC 6962 tree whose hashes live in the log's store in the
layout of C2SP tlog-tiles (https://c2sp.org/tlog-tiles): tiles of height 8, that is
256 hashes, at level 0 (the leaf hashes), level 1 (roots of 256 leaves), level 2
(roots of 65,536 leaves)... Memory holds the right edge only (a
:class:`~gateway.audit.merkle.CompactRange` and each level's partial tile, under 8 KiB
per level) and a small LRU of full tiles; roots of past sizes and proofs read full
tiles from the store, as golang.org/x/mod/sumdb/tlog's TileHashReader and
transparency-dev/tessera do. Proof bytes and roots are those of
:class:`~gateway.audit.merkle.MerkleTree` (the same algorithm over another source of
hashes; tests/unit/audit/test_audit_tiles.py compares them for random sizes).

What the stores keep: level 0 is the leaf hash column of the entries (stored once);
levels 1, 2... are rows ``(level, index, hash)``, written in the transaction of the
entry that completes them, so a crash never leaves tiles and entries apart, and
append-only like the entries (a partial tile is simply the rows stored so far; none is
ever rewritten). :func:`fill_tiles` derives them for a log written before they were
kept.

>>> from gateway.audit.merkle import MerkleTree, leaf_hash
>>> hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(600)]
>>> stored: dict[int, list[bytes]] = {0: hashes, 1: []}
>>> tree = TiledTree(lambda level, a, b: stored[level][a:b])
>>> for _, _, h in tree.extend(hashes):
...     stored[1].append(h)
>>> tree.root(300) == MerkleTree(hashes).root(300)
True
>>> TiledTree.load(lambda level, a, b: stored[level][a:b], 600).root() == tree.root()
True
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from gateway.audit.errors import LogIntegrityError
from gateway.audit.merkle import (
    HASH_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    CompactRange,
    TileHash,
    _Proofs,
    root_from_leaf_hashes,
)

__all__ = ["HashReader", "TileStore", "TiledTree", "fill_tiles"]

log = logging.getLogger(__name__)

_sha256 = hashlib.sha256

#: Reads stored hashes of tile level ``level``, indices ``[start, end)``: the dense run
#: stored from ``start`` (shorter when the rest is not stored, never with a gap).
#: Raises StorageError when the store cannot be read.
HashReader = Callable[[int, int, int], Sequence[bytes]]


def _perfect_root(hashes: bytes) -> bytes:
    """The root of a perfect subtree from its bottom row (a power of two of hashes,
    back to back)."""
    row = hashes
    while len(row) > HASH_SIZE:
        row = b"".join(
            _sha256(b"\x01" + row[i : i + 2 * HASH_SIZE]).digest()
            for i in range(0, len(row), 2 * HASH_SIZE)
        )
    return row


def _expand(bottom: bytes) -> list[bytes]:
    """Every level of a full tile, from its 256 bottom hashes up to its root."""
    rows = [bottom]
    while len(rows[-1]) > HASH_SIZE:
        row = rows[-1]
        rows.append(
            b"".join(
                _sha256(b"\x01" + row[i : i + 2 * HASH_SIZE]).digest()
                for i in range(0, len(row), 2 * HASH_SIZE)
            )
        )
    return rows


class TiledTree(_Proofs):
    """An RFC 6962 tree whose hashes live in a store, laid out as C2SP tlog-tiles
    (https://c2sp.org/tlog-tiles): tiles of height 8 at levels 0 (leaf hashes), 1
    (roots of 256 leaves), 2 (roots of 65,536 leaves)...; memory holds only the right
    edge and a small LRU of tiles, so it is flat however long the log grows.

    In memory: the :class:`CompactRange` of the current size (for the roots the
    writer signs), the bottom row of each level's partial tile (fewer than 256
    hashes per level, at most 8 KiB each) and ``cache_tiles`` full tiles with their
    inner levels (about 16 KiB each). Roots of past sizes and proofs read full
    tiles through ``read`` (a :data:`HashReader`), as golang.org/x/mod/sumdb/tlog's
    TileHashReader does, so their bytes are those of :class:`MerkleTree`.

    Appends (:meth:`extend`) and reads may run on different threads: a read for a
    size the store has committed never depends on a later append. A store that
    lacks a hash a read needs raises LogIntegrityError.
    """

    __slots__ = ("_cache", "_cache_max", "_edge", "_lock", "_partial", "_read")

    def __init__(self, read: HashReader, *, cache_tiles: int = 64) -> None:
        if cache_tiles < 1:
            raise ValueError("cache_tiles must be at least 1")
        self._read = read
        self._edge = CompactRange()
        # _partial[L]: the hashes of level L in its partial tile, back to back.
        self._partial: list[bytearray] = [bytearray()]
        self._cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._cache_max = cache_tiles
        self._lock = threading.Lock()

    @classmethod
    def load(cls, read: HashReader, size: int, *, cache_tiles: int = 64) -> TiledTree:
        """The tree of ``size`` leaves already stored: reads only the partial tile of
        each level (at most 255 hashes per level), never the whole log.

        Raises LogIntegrityError if the store lacks one of them, StorageError if it
        cannot be read.
        """
        tree = cls(read, cache_tiles=cache_tiles)
        partial: list[bytearray] = []
        level = 0
        while size >> (TILE_HEIGHT * level) or not partial:
            count = size >> (TILE_HEIGHT * level)
            start = count & ~(TILE_WIDTH - 1)
            hashes = list(read(level, start, count)) if count > start else []
            if len(hashes) != count - start or any(len(h) != HASH_SIZE for h in hashes):
                raise LogIntegrityError(
                    f"the stored tree lacks hashes {start}..{count - 1} of tile level {level}"
                )
            partial.append(bytearray(b"".join(hashes)))
            level += 1
        nodes: list[bytes] = []
        for level in range(len(partial) - 1, -1, -1):
            row, lo = bytes(partial[level]), 0
            width = len(row) // HASH_SIZE
            for bit in range(TILE_HEIGHT - 1, -1, -1):
                if width >> bit & 1:
                    nodes.append(_perfect_root(row[lo * HASH_SIZE : (lo + (1 << bit)) * HASH_SIZE]))
                    lo += 1 << bit
        tree._partial = partial
        tree._edge._nodes = nodes
        tree._edge.size = size
        return tree

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._edge.size

    def compact(self) -> CompactRange:
        """A copy of the right edge as it is now."""
        with self._lock:
            return self._edge.copy()

    def extend(self, hashes: Iterable[bytes]) -> list[TileHash]:
        """Append leaf hashes; returns the tile hashes (level >= 1) they complete, in
        order: the caller stores them in the transaction that stores the entries.
        Raises ValueError on a bad length (nothing of that hash is appended)."""
        out: list[TileHash] = []
        edge, partial, lock = self._edge, self._partial, self._lock
        full = TILE_WIDTH * HASH_SIZE
        for h in hashes:
            with lock:
                tiles = edge.append(h)
                row = partial[0]
                row += h
                if len(row) == full:
                    partial[0] = bytearray()
                for level, index, node in tiles:
                    if level == len(partial):
                        partial.append(bytearray())
                    row = partial[level]
                    row += node
                    if len(row) == full:
                        partial[level] = bytearray()
                    out.append((level, index, node))
        return out

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree of the first ``size`` leaves (default: all, from
        memory); a past size reads tiles. Raises ProofError beyond the tree."""
        if size is None or size == self._edge.size:
            with self._lock:
                if size is None or size == self._edge.size:
                    return self._edge.root()
        return super().root(size)

    def _perfect(self, level: int, index: int) -> bytes:
        tile_level, sub = divmod(level, TILE_HEIGHT)
        first = index << sub  # first hash of tile level `tile_level` below this node
        tile, offset = divmod(first, TILE_WIDTH)
        need = offset + (1 << sub)
        key = (tile_level, tile)
        with self._lock:
            levels = self._cache.get(key)
            if levels is not None:
                self._cache.move_to_end(key)
                return levels[sub][(offset >> sub) * HASH_SIZE : ((offset >> sub) + 1) * HASH_SIZE]
            if tile_level < len(self._partial):
                count = self._edge.size >> (TILE_HEIGHT * tile_level)
                row = self._partial[tile_level]
                if count >> TILE_HEIGHT == tile and len(row) >= need * HASH_SIZE:
                    bottom = bytes(row[offset * HASH_SIZE : need * HASH_SIZE])
                    return _perfect_root(bottom)
        stored = list(self._read(tile_level, tile * TILE_WIDTH, (tile + 1) * TILE_WIDTH))
        if len(stored) == TILE_WIDTH:
            levels = _expand(b"".join(stored))
            with self._lock:
                self._cache[key] = levels
                while len(self._cache) > self._cache_max:
                    self._cache.popitem(last=False)
            return levels[sub][(offset >> sub) * HASH_SIZE : ((offset >> sub) + 1) * HASH_SIZE]
        if len(stored) >= need:
            return _perfect_root(b"".join(stored[offset:need]))
        raise LogIntegrityError(
            f"the stored tree lacks hash {tile * TILE_WIDTH + len(stored)} of tile level "
            f"{tile_level}"
        )

    @property
    def cached_tiles(self) -> int:
        """Full tiles held in memory now (at most ``cache_tiles``)."""
        return len(self._cache)


class TileStore(Protocol):
    """What :func:`fill_tiles` needs of a store (the audit stores implement it)."""

    def tile_hashes(self, level: int, start: int, end: int) -> Sequence[bytes]:
        """See :meth:`gateway.audit.store.AuditStore.tile_hashes`."""

    def tile_count(self, level: int) -> int:
        """One more than the highest stored index of tile level ``level``."""

    def add_tiles(self, tiles: Sequence[TileHash]) -> None:
        """Store tile hashes alone, durably."""


def fill_tiles(store: TileStore, size: int, *, chunk: int = 256) -> int:
    """Store the tile hashes (levels >= 1) of the first ``size`` entries that ``store``
    lacks, computed level by level from the one below: a log written before its store
    kept them. Returns how many were added (0, with one cheap query per level, when
    none is missing). Raises LogIntegrityError if the hashes below are missing,
    StorageError if the store fails."""
    added = 0
    level = 1
    while size >> (8 * level):
        want = size >> (8 * level)
        have = store.tile_count(level)
        if have < want and not added:
            log.warning("audit log: filling in its tile hashes (once, for a log made before them)")
        for first in range(have, want, chunk):
            new: list[TileHash] = []
            for index in range(first, min(first + chunk, want)):
                below = store.tile_hashes(level - 1, index * TILE_WIDTH, (index + 1) * TILE_WIDTH)
                if len(below) != TILE_WIDTH:
                    raise LogIntegrityError(f"hashes of tile {index} of level {level - 1} missing")
                new.append((level, index, root_from_leaf_hashes(below)))
            store.add_tiles(new)
            added += len(new)
        level += 1
    return added
