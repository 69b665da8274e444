"""RFC 6962 / RFC 9162 Merkle trees: hashes, proofs and their verification.

Leaves are hashed as ``SHA-256(0x00 || leaf)`` and interior nodes as
``SHA-256(0x01 || left || right)``; the root of the empty tree is
``SHA-256("")``. Verification follows RFC 9162 sections 2.1.3.2 (inclusion)
and 2.1.4.2 (consistency) step by step and raises
:class:`~gateway.audit.errors.ProofError` on any mismatch.

>>> tree = MerkleTree()
>>> for leaf in (b"a", b"b", b"c"):
...     _ = tree.append(leaf_hash(leaf))
>>> proof = tree.inclusion_proof(1, 3)
>>> verify_inclusion(leaf_hash(b"b"), 1, 3, proof, tree.root(3))
>>> verify_consistency(2, 3, tree.consistency_proof(2, 3), tree.root(2), tree.root(3))

:class:`MerkleTree` keeps, for every level, the hashes of the complete
subtrees at that level in one contiguous ``bytearray`` (32 bytes per hash,
about 64 bytes per leaf in all): for verifiers and offline tools, which hold
one log's tree for one run. The gateway's log grows without end, so it uses
:class:`gateway.audit.tiles.TiledTree`: the hashes stay in the store in the C2SP tlog-tiles layout
(tiles of 256 hashes at levels 0, 1, 2...), memory holds the right edge and a
small LRU of tiles, and opening reads a few hundred hashes, not the log. Both
give the same roots and proof bytes (one :class:`_Proofs` algorithm over
different hash sources).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from gateway.audit.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "CompactRange",
    "MerkleTree",
    "TileHash",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 section 2.1 leaf hash: ``SHA-256(0x00 || leaf)``, 32 bytes."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 section 2.1 interior node hash: ``SHA-256(0x01 || left || right)``, 32 bytes."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[0:n]) of RFC 6962 section 2.1 over already hashed leaves (the root of a range)."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


class _Proofs:
    """Roots and RFC 6962 proofs over any source of perfect-subtree hashes.

    A subclass provides ``size`` and ``_perfect(level, index)``: the hash of the
    complete subtree of ``2**level`` leaves starting at leaf ``index << level``
    (always inside the tree of the size asked about).
    """

    __slots__ = ()

    @property
    def size(self) -> int:
        """Number of leaves."""
        raise NotImplementedError

    def _perfect(self, level: int, index: int) -> bytes:
        raise NotImplementedError

    def compact(self) -> CompactRange:
        """The right edge of the tree as it is now (its perfect subtrees' roots)."""
        edge = CompactRange()
        lo, size = 0, self.size
        for bit in range(size.bit_length() - 1, -1, -1):
            if size >> bit & 1:
                edge._nodes.append(self.range_hash(lo, lo + (1 << bit)))
                lo += 1 << bit
        edge.size = size
        return edge

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi), 0 <= lo < hi <= size, from complete subtrees."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            return self._perfect(level, lo >> level)
        k = _split(n)
        return node_hash(self._range(lo, lo + k), self._range(lo + k, hi))

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]): the root of the range of leaves ``[lo, hi)``.

        Raises ProofError if the range is empty or beyond the tree.
        """
        if not 0 <= lo < hi <= self.size:
            raise ProofError(f"range [{lo}, {hi}) is not inside a tree of size {self.size}")
        return self._range(lo, hi)

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the tree of the first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        if size == 0:
            return EMPTY_ROOT
        return self.range_hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 section 2.1.1 PATH(index, D[0:size]): 32-byte hashes, leaf's sibling first.

        Raises ProofError unless ``0 <= index < size <= self.size``.
        """
        if not 0 <= index < size <= self.size:
            raise ProofError(f"no inclusion proof for index {index} in a tree of size {size}")
        proof: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range(lo, lo + k))
                lo += k
        proof.reverse()  # built root-down; RFC order is leaf-up
        return proof

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """RFC 6962 section 2.1.2 PROOF(old, D[0:new]): 32-byte hashes.

        Raises ProofError unless ``0 < old <= new <= self.size`` (a proof from
        the empty tree is meaningless, RFC 9162 section 2.1.4).
        """
        if not 0 < old <= new <= self.size:
            raise ProofError(f"no consistency proof from size {old} to {new}")
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new, old, True
        # SUBPROOF(m, D[lo:hi], complete), unrolled.
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._range(lo, hi))
        proof.reverse()
        return proof


class MerkleTree(_Proofs):
    """An append-only RFC 6962 tree over leaf hashes, all in memory, with proofs for
    past sizes (about 64 bytes per leaf: for verifiers and offline tools; the
    gateway's own log is a :class:`gateway.audit.tiles.TiledTree`).

    ``_levels[k]`` holds, back to back, the hashes of the complete subtrees of
    2**k leaves in order (``size >> k`` of them). Methods are not thread-safe
    against a concurrent :meth:`append`, except that reads below the size at
    the time of the read are never disturbed by later appends.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self.extend(hashes)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    def append(self, hash_: bytes) -> int:
        """Append a leaf hash; returns its index. Raises ValueError on a bad length."""
        if len(hash_) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, not {len(hash_)}")
        index = self._size
        levels = self._levels
        levels[0] += hash_
        node, i, level = hash_, index, 0
        # Each time the new node is a right child, its parent is now complete.
        while i & 1:
            lower = levels[level]
            node = _sha256(b"\x01" + lower[(i - 1) * HASH_SIZE : i * HASH_SIZE] + node).digest()
            level += 1
            i >>= 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += node
        self._size = index + 1
        return index

    def extend(self, hashes: Iterable[bytes]) -> None:
        """Append several leaf hashes."""
        for h in hashes:
            self.append(h)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``. Raises IndexError if out of range."""
        if not 0 <= index < self._size:
            raise IndexError(f"leaf index {index} outside tree of size {self._size}")
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _perfect(self, level: int, index: int) -> bytes:
        return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])


#: Tile height of C2SP tlog-tiles: a tile holds 2**8 = 256 hashes of one level.
TILE_HEIGHT = 8
#: Hashes in a full tile.
TILE_WIDTH = 1 << TILE_HEIGHT

#: A stored tree hash: ``(tile level L >= 1, index, 32-byte hash)``, the root of the
#: complete subtree of ``256**L`` leaves starting at leaf ``index * 256**L`` (the
#: bottom row of tile level L in C2SP tlog-tiles; level 0 is the leaf hashes).
TileHash = tuple[int, int, bytes]

_NO_TILES: tuple[TileHash, ...] = ()


class CompactRange:
    """The right edge of a tree: the roots of its perfect subtrees, largest first
    (one per set bit of the size, so at most 64 hashes).

    Enough to append leaves and compute every new root without the rest of the tree:
    the log's writer and the shared log's integrator (:mod:`gateway.audit.shared`)
    compute the roots they sign with one. :meth:`append` returns the tile hashes it
    completes (see :data:`TileHash`), which the log stores beside the entries.

    >>> tree = MerkleTree(leaf_hash(bytes([i])) for i in range(5))
    >>> edge = CompactRange.of(tree)
    >>> edge.append(leaf_hash(b"x"))
    ()
    >>> tree.append(leaf_hash(b"x"))
    5
    >>> edge.root() == tree.root()
    True
    """

    __slots__ = ("_nodes", "size")

    def __init__(self) -> None:
        self._nodes: list[bytes] = []
        self.size = 0

    @classmethod
    def of(cls, tree: _Proofs) -> CompactRange:
        """The right edge of ``tree`` as it is now."""
        return tree.compact()

    def copy(self) -> CompactRange:
        """An independent copy."""
        other = CompactRange()
        other._nodes = list(self._nodes)
        other.size = self.size
        return other

    def append(self, hash_: bytes) -> Sequence[TileHash]:
        """Append one leaf hash (32 bytes; ValueError otherwise); returns the tile
        hashes (level >= 1) of the subtrees this leaf completes, lowest first."""
        if len(hash_) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, not {len(hash_)}")
        node, n = hash_, self.size
        nodes = self._nodes
        if not n & 1:
            nodes.append(node)
            self.size = n + 1
            return _NO_TILES
        tiles: list[TileHash] | tuple[TileHash, ...] = _NO_TILES
        level = 0
        while n & 1:  # each trailing one bit is a perfect subtree the new node completes
            node = _sha256(b"\x01" + nodes.pop() + node).digest()
            n >>= 1
            level += 1
            if not level % TILE_HEIGHT:
                if not tiles:
                    tiles = []
                assert isinstance(tiles, list)
                tiles.append((level // TILE_HEIGHT, n, node))
        nodes.append(node)
        self.size += 1
        return tiles

    def root(self) -> bytes:
        """MTH of the leaves appended so far (RFC 6962 section 2.1)."""
        if not self._nodes:
            return EMPTY_ROOT
        root = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            root = node_hash(node, root)
        return root


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    leaf_hash_: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash_`` is at ``index`` in the tree of ``size`` with ``root``.

    RFC 9162 section 2.1.3.2. Raises ProofError if it is not.
    """
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not inside a tree of size {size}")
    _check_hash(leaf_hash_, "leaf hash")
    _check_hash(root, "root hash")
    fn, sn, r = index, size - 1, leaf_hash_
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root hash")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2``/``root2`` extends that of ``size1``/``root1``.

    RFC 9162 section 2.1.4.2 for ``0 < size1 < size2``. Equal sizes need an
    empty proof and equal roots. A proof from size 0 is refused: the empty
    tree is a prefix of every tree, so such a "proof" would prove nothing.
    Raises ProofError.
    """
    if size1 < 0 or size2 < size1:
        raise ProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        # Like transparency-dev/merkle: equal trees need no proof, only equal roots.
        if proof:
            raise ProofError("sizes are equal but the proof is not empty")
        if root1 != root2:
            raise ProofError("sizes are equal but the roots differ")
        return
    _check_hash(root1, "first root hash")
    _check_hash(root2, "second root hash")
    if not proof:
        raise ProofError("consistency proof is empty")
    for p in proof:
        _check_hash(p, "proof hash")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != root2:
        raise ProofError("consistency proof does not lead to the second root")
