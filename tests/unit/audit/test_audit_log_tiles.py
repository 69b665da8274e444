"""The log's tree in tiles (issue 13, bounded memory): tile hashes stored with their
entries, start-up reading only the tree's right edge, proofs identical to the
in-memory tree's, old logs filled in, a tampered tile hash refused, memory bounded."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.log import TILE_CACHE, AuditLog
from gateway.audit.merkle import TILE_WIDTH, MerkleTree, leaf_hash
from gateway.audit.note import Ed25519Signer, Verifier
from gateway.audit.store import MemoryStore, StoredEntry
from gateway.audit.tiles import fill_tiles
from gateway.errors import AuditUnavailableError
from gateway.stores.sqlite.audit import SQLiteStore
from tests.unit.audit.audit_testkit import ORIGIN, fill_log, numbered_record

N = 3 * TILE_WIDTH + 17  # three full level-0 tiles and a partial one


def _tile_rows(path: Path) -> list[tuple[int, int, bytes]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT level, idx, hash FROM tile_hashes ORDER BY level, idx")
        return [(int(a), int(b), bytes(c)) for a, b, c in rows]
    finally:
        conn.close()


class CountingStore(SQLiteStore):
    """The real store, counting the hashes and entries the log reads from it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hashes_read = 0
        self.entries_read = 0

    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        got = super().tile_hashes(level, start, end)
        self.hashes_read += len(got)
        return got

    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        for entry in super().iter_entries(start):
            self.entries_read += 1
            yield entry


async def test_tile_hashes_are_stored_with_their_entries(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    hashes = await fill_log(tmp_path / "audit.db", signer, N)
    tree = MerkleTree(hashes)
    assert _tile_rows(tmp_path / "audit.db") == [
        (1, i, tree.range_hash(i * TILE_WIDTH, (i + 1) * TILE_WIDTH)) for i in range(3)
    ]


async def test_open_reads_the_right_edge_only_and_proofs_match_the_tree(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    path = tmp_path / "audit.db"
    hashes = await fill_log(path, signer, N)
    tree = MerkleTree(hashes)
    store = CountingStore(path)
    log = await AuditLog.open(None, signer, store=store)
    try:
        # The partial tile of each level, not the N entries.
        assert store.hashes_read <= 17 + 3 and store.entries_read == 0
        assert log.size == N and await log.root() == tree.root()
        for size in (1, 255, 256, 257, 600, N):
            assert await log.root(size) == tree.root(size)
            for index in {0, size // 2, size - 1}:
                assert await log.inclusion_proof(index, size) == tree.inclusion_proof(index, size)
            assert await log.consistency_proof(size, N) == tree.consistency_proof(size, N)
        more = await asyncio.gather(*(log.append(numbered_record(i)) for i in range(N, N + 300)))
        tree.extend(r.leaf_hash for r in more)
        assert await log.root() == tree.root()
        assert await log.inclusion_proof(N + 5, N + 300) == tree.inclusion_proof(N + 5, N + 300)
    finally:
        await log.close()


async def test_a_log_made_before_tiles_is_filled_in_once(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    path = tmp_path / "audit.db"
    hashes = await fill_log(path, signer, N)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE tile_hashes")  # as a log of the previous build has none
    conn.commit()
    conn.close()
    log = await AuditLog.open(path, signer)
    try:
        assert await log.inclusion_proof(7, N) == MerkleTree(hashes).inclusion_proof(7, N)
    finally:
        await log.close()
    assert len(_tile_rows(path)) == 3


def test_fill_tiles_builds_every_level_and_adds_nothing_when_complete() -> None:
    store = MemoryStore()
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(TILE_WIDTH**2 + 5)]
    store.append(0, [(b"x", h) for h in hashes], [])
    assert fill_tiles(store, len(hashes)) == TILE_WIDTH + 1
    tree = MerkleTree(hashes)
    assert store.tile_hashes(2, 0, 1) == [tree.range_hash(0, TILE_WIDTH**2)]
    assert store.tile_hashes(1, 255, 256) == [tree.range_hash(255 * 256, 256 * 256)]
    assert fill_tiles(store, len(hashes)) == 0


async def test_a_tampered_tile_hash_is_refused_at_open(
    tmp_path: Path, signer: Ed25519Signer, sql: Callable[[Path, str], None]
) -> None:
    path = tmp_path / "audit.db"
    await fill_log(path, signer, N)
    sql(path, "UPDATE tile_hashes SET hash = zeroblob(32) WHERE level = 1 AND idx = 2")
    with pytest.raises(AuditUnavailableError, match="do not match the checkpoint of size"):
        await AuditLog.open(path, signer)


async def test_a_crash_tail_is_rehashed_and_checked_against_its_tile_hashes(
    tmp_path: Path, signer: Ed25519Signer, sql: Callable[[Path, str], None]
) -> None:
    path = tmp_path / "audit.db"
    hashes = await fill_log(path, signer, 300)
    # The last checkpoint back at 0, as if the process died before signing any:
    # the 300 entries and tile hash 0 (leaves 0..255) are its tail.
    sql(path, "DELETE FROM checkpoints WHERE size > 0")
    conn = sqlite3.connect(path)
    sizes = [r[0] for r in conn.execute("SELECT size FROM checkpoints")]
    conn.close()
    assert sizes == [0]
    log = await AuditLog.open(path, signer)
    try:
        assert log.size == 300 and await log.root() == MerkleTree(hashes).root()
        cp = open_checkpoint(log.latest_checkpoint(), [_verifier(signer)], origin=ORIGIN)
        assert cp.size == 300  # signed at once over the tail
    finally:
        await log.close()
    sql(path, "DELETE FROM checkpoints WHERE size > 0")
    sql(path, "UPDATE tile_hashes SET hash = zeroblob(32) WHERE level = 1 AND idx = 0")
    with pytest.raises(AuditUnavailableError, match="tile hash 0 of level 1 does not match"):
        await AuditLog.open(path, signer)


async def test_memory_of_the_tree_is_bounded(tmp_path: Path, signer: Ed25519Signer) -> None:
    log = await AuditLog.open(tmp_path / "audit.db", signer, max_batch=2048)
    try:
        n = 40 * TILE_WIDTH
        await asyncio.gather(*(log.append(numbered_record(i)) for i in range(n)))
        for index in range(0, n, 37):  # proofs all over the log: tiles come and go
            await log.inclusion_proof(index, n)
        tree = log._tree
        assert 0 < tree.cached_tiles <= TILE_CACHE
        # The right edge: under one tile per level, whatever the size.
        assert all(len(row) < TILE_WIDTH * 32 for row in tree._partial)
        assert len(tree._partial) == 2
    finally:
        await log.close()


def _verifier(signer: Ed25519Signer) -> Verifier:
    return Verifier.from_key_string(signer.verifier_key())
