"""TiledTree (C2SP tlog-tiles layout) against the in-memory MerkleTree: same roots,
same proof bytes, for random sizes across three tile levels; bounded memory."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.errors import LogIntegrityError, ProofError
from gateway.audit.merkle import (
    TILE_WIDTH,
    CompactRange,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from gateway.audit.tiles import TiledTree

# 70,000 leaves: tile levels 0, 1 and 2 (a level-2 hash covers 65,536 leaves).
N = 70_000
HASHES = [leaf_hash(i.to_bytes(4, "big")) for i in range(N)]
REFERENCE = MerkleTree(HASHES)


def _stored() -> dict[int, list[bytes]]:
    levels: dict[int, list[bytes]] = {0: HASHES}
    tree = TiledTree(lambda *_: [])
    for level, index, h in tree.extend(HASHES):
        row = levels.setdefault(level, [])
        assert index == len(row)  # tile hashes come dense and in order
        row.append(h)
    return levels


STORED = _stored()


class Reader:
    """What a store has committed at ``size``: only hashes of nodes inside it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0
        self.hashes_read = 0

    def __call__(self, level: int, start: int, end: int) -> Sequence[bytes]:
        self.calls += 1
        limit = self.size >> (8 * level)
        got = STORED.get(level, [])[start : min(end, limit)]
        self.hashes_read += len(got)
        return got


def test_tile_hashes_are_the_roots_of_256_leaves_and_of_65536() -> None:
    assert len(STORED[1]) == N // 256 and len(STORED[2]) == 1
    assert STORED[1][3] == REFERENCE.range_hash(3 * 256, 4 * 256)
    assert STORED[2][0] == REFERENCE.range_hash(0, 65_536)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, N).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_tiled_proofs_and_roots_equal_the_in_memory_trees(case: tuple[int, int]) -> None:
    size, past = case
    tree = TiledTree.load(Reader(size), size, cache_tiles=4)
    assert tree.size == size
    assert tree.root() == REFERENCE.root(size)
    assert tree.root(past) == REFERENCE.root(past)
    for index in {0, past - 1, past // 2, size - 1}:
        if index < past:
            proof = tree.inclusion_proof(index, past)
            assert proof == REFERENCE.inclusion_proof(index, past)
            verify_inclusion(HASHES[index], index, past, proof, REFERENCE.root(past))
    proof = tree.consistency_proof(past, size)
    assert proof == REFERENCE.consistency_proof(past, size)
    if past < size:
        verify_consistency(past, size, proof, REFERENCE.root(past), REFERENCE.root(size))
    assert tree.cached_tiles <= 4


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2_000), st.lists(st.integers(0, 700), max_size=6))
def test_extending_in_batches_equals_loading(start: int, batches: list[int]) -> None:
    tree = TiledTree.load(Reader(start), start)
    size = start
    for n in batches:
        n = min(n, N - size)
        tiles = tree.extend(HASHES[size : size + n])
        # Exactly the tile hashes completed by these leaves, as stored.
        want = [
            (level, i, STORED[level][i])
            for level in (1, 2)
            for i in range(size >> (8 * level), (size + n) >> (8 * level))
        ]
        assert sorted(tiles) == sorted(want)
        size += n
        assert tree.root() == REFERENCE.root(size)
        assert tree.compact().root() == REFERENCE.root(size)
    # Reads below the size the store holds never need the writer's newer appends.
    reread = TiledTree.load(Reader(size), size)
    assert reread.root() == tree.root()


def test_loading_reads_only_the_right_edge() -> None:
    size = 69_999  # every level's partial tile is as full as it gets here
    reader = Reader(size)
    tree = TiledTree.load(reader, size)
    assert reader.calls == 3  # one partial tile per level
    assert reader.hashes_read <= 3 * (TILE_WIDTH - 1)
    assert tree.root() == REFERENCE.root(size)


def test_the_tile_cache_is_bounded() -> None:
    reader = Reader(N)
    tree = TiledTree.load(reader, N, cache_tiles=3)
    for index in range(0, N, 997):
        tree.inclusion_proof(index, N)
    assert tree.cached_tiles == 3
    calls = reader.calls
    tree.inclusion_proof(N - 1000, N)
    tree.inclusion_proof(N - 1000, N)  # the second one hits the cache
    assert reader.calls - calls <= 2


def test_a_missing_stored_hash_fails_closed() -> None:
    def holes(level: int, start: int, end: int) -> Sequence[bytes]:
        return STORED.get(level, [])[start:end] if level else HASHES[start : min(end, 300)]

    with pytest.raises(LogIntegrityError, match="lacks hashes"):
        TiledTree.load(holes, 1_000)
    tree = TiledTree.load(Reader(1_000), 1_000)
    tree._read = holes
    with pytest.raises(LogIntegrityError, match=r"lacks hash (300|512) of tile level 0"):
        tree.inclusion_proof(400, 700)


def test_bad_requests() -> None:
    tree = TiledTree.load(Reader(10), 10)
    with pytest.raises(ProofError):
        tree.inclusion_proof(10, 10)
    with pytest.raises(ProofError):
        tree.consistency_proof(0, 5)
    with pytest.raises(ProofError):
        tree.root(11)
    with pytest.raises(ValueError, match="32 bytes"):
        tree.extend([b"short"])
    with pytest.raises(ValueError, match="cache_tiles"):
        TiledTree(Reader(0), cache_tiles=0)
    assert CompactRange.of(tree).root() == REFERENCE.root(10)
