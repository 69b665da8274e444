"""The audit log's contract, the same on both backends: the embedded SQLite file (one
writer) and the shared log on PostgreSQL (many writers). Receipts at their index with
the stored leaf's hash, checkpoints at most ``checkpoint_every`` apart, proofs that
verify against them, a final checkpoint at closing, reopening that continues, bad
records refused alone, and the read-only view ``credit-audit`` uses.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.log import AuditLog
from gateway.audit.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from gateway.audit.note import Ed25519Signer, Verifier, generate_key
from gateway.audit.records import decode_record
from gateway.audit.shared import SharedAuditLog
from gateway.audit.store import LogReader
from gateway.audit.verify import verify_log
from gateway.errors import AuditUnavailableError, InternalError, NotYetIntegratedError
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.postgres.url import PgTarget
from gateway.stores.sqlite.audit import SQLiteStore

ORIGIN = "credit-gateway.test/audit"


@dataclass
class Backend:
    """How one backend opens the log and its read-only view."""

    name: str
    open: Callable[..., Awaitable[AuditLog]]
    reader: Callable[[], LogReader]


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer.from_key_string(generate_key(ORIGIN)[0])


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "audit.db"

        async def open_sqlite(signer: Ed25519Signer, **kw: Any) -> AuditLog:
            return await AuditLog.open(path, signer, **kw)

        yield Backend("sqlite", open_sqlite, lambda: SQLiteStore(path, read_only=True))
        return
    url: str = request.getfixturevalue("pg_url")

    async def open_pg(signer: Ed25519Signer, **kw: Any) -> AuditLog:
        return await SharedAuditLog.open_shared(
            PostgresAuditStore(PgTarget(url)), signer, follow_interval=0.05, **kw
        )

    yield Backend("postgres", open_pg, lambda: PostgresAuditStore(PgTarget(url), snapshot=True))


def _record(i: int) -> dict[str, object]:
    return {"kind": "query", "agency_id": f"bank-{i % 3}", "n": i}


def _verifiers(signer: Ed25519Signer) -> list[Verifier]:
    return [Verifier.from_key_string(signer.verifier_key())]


async def test_receipts_name_their_index_and_the_stored_leaf(
    backend: Backend, signer: Ed25519Signer
) -> None:
    log = await backend.open(signer)
    receipts = await asyncio.gather(*(log.append(_record(i)) for i in range(300)))
    assert sorted(r.index for r in receipts) == list(range(300))
    assert {r.origin for r in receipts} == {ORIGIN}
    assert log.size == 300
    for r in receipts[::29]:
        leaf = await log.read_leaf(r.index)
        assert leaf is not None and leaf_hash(leaf) == r.leaf_hash
        record = decode_record(leaf)
        assert record["seq"] == r.index and record["v"] == 1
    assert await log.read_leaf(300) is None
    await log.close()
    await log.close()  # closing twice is harmless
    with pytest.raises(AuditUnavailableError):
        await log.append(_record(0))
    reader = backend.reader()
    try:
        # Closing signed a final checkpoint over every record.
        report = verify_log(reader, _verifiers(signer))
        assert report.size == report.verified_size == 300
        assert reader.size() == 300 and reader.origin() == ORIGIN
        assert [e.index for e in reader.iter_entries(295)] == [295, 296, 297, 298, 299]
        sizes = [c.size for c in reader.checkpoints()]
        assert sizes[0] == 0 and sizes[-1] == 300
        assert all(0 <= b - a <= 256 for a, b in itertools.pairwise(sizes))
    finally:
        reader.close()


async def test_proofs_verify_against_the_signed_checkpoint(
    backend: Backend, signer: Ed25519Signer
) -> None:
    log = await backend.open(signer, checkpoint_interval=0.1)
    try:
        receipts = [await log.append(_record(i)) for i in range(40)]
        async with asyncio.timeout(10):
            while log.checkpoint_size < 40:
                await asyncio.sleep(0.02)
        cp = open_checkpoint(log.latest_checkpoint(), _verifiers(signer), origin=ORIGIN)
        assert cp.size == 40
        for r in receipts[::7]:
            proof = await log.inclusion_proof(r.index, cp.size)
            verify_inclusion(r.leaf_hash, r.index, cp.size, proof, cp.root_hash)
        verify_consistency(
            9, 40, await log.consistency_proof(9, 40), await log.root(9), await log.root(40)
        )
    finally:
        await log.close()


async def test_reopening_continues_and_bad_records_are_refused_alone(
    backend: Backend, signer: Ed25519Signer
) -> None:
    log = await backend.open(signer)
    await log.append(_record(0))
    await log.close()
    log = await backend.open(signer)
    try:
        good = log.append(_record(1))
        with pytest.raises(InternalError):
            await log.append({"kind": "query", "ratio": 0.5})
        with pytest.raises(InternalError):
            await log.append({"kind": "query", "seq": 9})
        assert (await good).index == 1
    finally:
        await log.close()


async def test_a_cancelled_caller_does_not_withdraw_its_record(
    backend: Backend, signer: Ed25519Signer
) -> None:
    log = await backend.open(signer)
    try:
        task = asyncio.create_task(log.append(_record(0)))
        await asyncio.sleep(0)
        task.cancel()
        after = await log.append(_record(1))
        assert after.index == 1  # the cancelled one was logged all the same
        assert await log.read_leaf(0) is not None
    finally:
        await log.close()


async def test_an_entry_past_the_checkpoint_is_not_yet_integrated(
    backend: Backend, signer: Ed25519Signer
) -> None:
    log = await backend.open(signer, checkpoint_interval=5.0)
    try:
        r = await log.append(_record(0))
        assert log.checkpoint_size == 0 and log.checkpoint_due_in_s > 0
        if isinstance(log, SharedAuditLog):
            with pytest.raises(NotYetIntegratedError):
                await log.inclusion_proof(r.index, 1)
        else:  # the single writer's tree holds it already: proofs of size 1 exist
            assert await log.inclusion_proof(r.index, 1) == []
    finally:
        await log.close()


async def test_proofs_while_appending_verify_against_their_signed_checkpoint(
    backend: Backend, signer: Ed25519Signer
) -> None:
    """Proofs computed off the event loop while appends extend the tree (the single
    writer's thread; the shared log's follower and integrator) are those of the signed
    checkpoint they name, across full tiles going to the store: each verifies against
    the checkpoint's root and equals the proof of the finished tree."""
    log = await backend.open(signer, checkpoint_interval=0.05, checkpoint_every=64)
    total = 2 * 256 + 40
    hashes: dict[int, bytes] = {}
    done = asyncio.Event()
    proved: list[tuple[int, int, list[bytes], list[bytes]]] = []

    async def append() -> None:
        for first in range(0, total, 40):
            batch = range(first, min(first + 40, total))
            for r in await asyncio.gather(*(log.append(_record(i)) for i in batch)):
                hashes[r.index] = r.leaf_hash
            await asyncio.sleep(0.03)  # several checkpoints on the way (the integrator ticks)
        done.set()

    async def prove() -> None:
        while not done.is_set() or log.checkpoint_size < total:
            cp = open_checkpoint(log.latest_checkpoint(), _verifiers(signer), origin=ORIGIN)
            if cp.size < 2:
                await asyncio.sleep(0.005)
                continue
            index = (len(proved) * 97) % cp.size
            old = max(1, cp.size // 2)
            inclusion = await log.inclusion_proof(index, cp.size)
            consistency = await log.consistency_proof(old, cp.size)
            verify_inclusion(hashes[index], index, cp.size, inclusion, cp.root_hash)
            assert await log.root(cp.size) == cp.root_hash
            verify_consistency(old, cp.size, consistency, await log.root(old), cp.root_hash)
            proved.append((index, cp.size, inclusion, consistency))
            await asyncio.sleep(0)

    try:
        async with asyncio.timeout(60):
            await asyncio.gather(append(), prove(), prove())
    finally:
        await log.close()
    tree = MerkleTree([hashes[i] for i in range(total)])
    sizes = {size for _, size, _, _ in proved}
    assert len(sizes) >= 3 and max(sizes) > 256  # several sizes, past a full tile
    for index, size, inclusion, consistency in proved:
        assert inclusion == tree.inclusion_proof(index, size)
        assert consistency == tree.consistency_proof(max(1, size // 2), size)
