"""Proofs and roots of the audit log never run on the event loop: an old entry's proof may
read tiles from the store (an LRU miss), and while that read waits every other coroutine
of the process must go on (a store whose tile reads are held at a gate proves it). Proofs
computed while the writer thread extends the tree are those of the tree of their size."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.log import AuditLog
from gateway.audit.merkle import TILE_WIDTH, MerkleTree, verify_consistency, verify_inclusion
from gateway.audit.note import Ed25519Signer
from gateway.errors import AuditUnavailableError
from tests.unit.audit.audit_testkit import GatedStore, fill_log, numbered_record, wait_until_held

N = 3 * TILE_WIDTH + 17  # three full level-0 tiles (read from the store) and a partial one


_CALLS: dict[str, Callable[[AuditLog], Coroutine[Any, Any, object]]] = {
    "inclusion": lambda log: log.inclusion_proof(3, N),
    "consistency": lambda log: log.consistency_proof(300, N),
    "root": lambda log: log.root(300),
}
_EXPECTED: dict[str, Callable[[MerkleTree], object]] = {
    "inclusion": lambda tree: tree.inclusion_proof(3, N),
    "consistency": lambda tree: tree.consistency_proof(300, N),
    "root": lambda tree: tree.root(300),
}


@pytest.mark.parametrize("what", sorted(_CALLS))
async def test_a_proof_reading_tiles_leaves_the_event_loop_free(
    tmp_path: Path, signer: Ed25519Signer, what: str
) -> None:
    path = tmp_path / "audit.db"
    tree = MerkleTree(await fill_log(path, signer, N))
    store = GatedStore(path)
    log = await AuditLog.open(None, signer, store=store)  # a cold tile cache
    try:
        store.armed = True
        proof = asyncio.create_task(_CALLS[what](log))
        await wait_until_held(store)
        # The tile read is held: the loop still serves other requests meanwhile (an
        # append is a round trip through the writer thread and back to the loop).
        receipt = await asyncio.wait_for(log.append(numbered_record(N)), 10)
        assert receipt.index == N
        assert not proof.done()
        store.gate.set()
        assert await asyncio.wait_for(proof, 10) == _EXPECTED[what](tree)
        assert store.on_loop == []  # not one tile was read on the loop
    finally:
        store.gate.set()
        await log.close()


async def test_proofs_while_appending_are_those_of_the_tree_of_their_size(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    """Provers ask for proofs of the size committed at that moment (the tree's right
    edge, where partial tiles fill up and go to the store) and of older sizes, while the
    writer thread extends the tree in small batches; every proof is then checked against
    the finished tree, and verifies."""
    log = await AuditLog.open(
        tmp_path / "audit.db", signer, max_batch=37, checkpoint_every=64, checkpoint_interval=0.05
    )
    total = 5 * TILE_WIDTH + 30
    leaf_hashes: dict[int, bytes] = {}
    done = asyncio.Event()
    seen: list[tuple[int, int, int, list[bytes], list[bytes], bytes]] = []

    async def writer() -> None:
        for first in range(0, total, 45):
            batch = range(first, min(first + 45, total))
            for r in await asyncio.gather(*(log.append(numbered_record(i)) for i in batch)):
                leaf_hashes[r.index] = r.leaf_hash
            await asyncio.sleep(0)
        done.set()

    async def prover(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            size = log.size
            if size == 0:
                await asyncio.sleep(0.001)
                continue
            index, old = rng.randrange(size), rng.randrange(1, size + 1)
            inclusion, consistency, root = await asyncio.gather(
                log.inclusion_proof(index, size), log.consistency_proof(old, size), log.root(size)
            )
            seen.append((index, old, size, inclusion, consistency, root))

    try:
        async with asyncio.timeout(120):
            await asyncio.gather(writer(), prover(1), prover(2), prover(3))
    finally:
        await log.close()
    tree = MerkleTree([leaf_hashes[i] for i in range(total)])
    assert len(seen) >= 10 and max(s[2] for s in seen) > TILE_WIDTH
    for index, old, size, inclusion, consistency, root in seen:
        assert root == tree.root(size)
        assert inclusion == tree.inclusion_proof(index, size)
        assert consistency == tree.consistency_proof(old, size)
        verify_inclusion(tree.leaf(index), index, size, inclusion, root)
        verify_consistency(old, size, consistency, tree.root(old), root)


@pytest.mark.parametrize("caller_goes_away", [False, True])
async def test_close_waits_for_the_proofs_under_way_and_refuses_later_ones(
    tmp_path: Path, signer: Ed25519Signer, caller_goes_away: bool
) -> None:
    """A proof whose tile read is under way when the log closes finishes on the open
    store (a read after closing would open a connection again, never to be closed),
    even if its caller went away meanwhile; a proof asked for after that is refused."""
    path = tmp_path / "audit.db"
    tree = MerkleTree(await fill_log(path, signer, N))
    store = GatedStore(path)
    log = await AuditLog.open(None, signer, store=store)
    store.armed = True
    proof = asyncio.create_task(log.inclusion_proof(3, N))
    await wait_until_held(store)
    if caller_goes_away:
        proof.cancel()
    closing = asyncio.create_task(log.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waiting for the read held at the gate
    store.gate.set()
    await asyncio.wait_for(closing, 10)
    if caller_goes_away:
        with pytest.raises(asyncio.CancelledError):
            await proof
    else:
        assert await proof == tree.inclusion_proof(3, N)
    assert store._tile_conn is None  # closed, and not opened again
    with pytest.raises(AuditUnavailableError, match="closed"):
        await log.inclusion_proof(3, N)
    with pytest.raises(AuditUnavailableError, match="closed"):
        await log.root(N)
