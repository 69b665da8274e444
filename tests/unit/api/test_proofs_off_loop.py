"""The RPCs that prove audit entries (``AuditService.GetInclusionProof`` and
``GetConsistencyProof``, the report's tlog-proof) await the log's proofs, which read the
tree's tiles off the event loop: while one auditor's proof of an old entry waits for the
store, the process's other requests go on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.api.audit import AuditServicer
from gateway.api.report import ReportService
from gateway.audit.checkpoint import TlogProof
from gateway.audit.log import AuditLog
from gateway.audit.merkle import TILE_WIDTH, MerkleTree
from gateway.audit.note import Ed25519Signer, generate_key
from protos.credit.v1 import audit_pb2
from tests.unit.audit.audit_testkit import ORIGIN, GatedStore, wait_until_held

N = 3 * TILE_WIDTH + 17
#: The ServicerContext is not read: no authenticator (development mode) names the caller.
_NO_CONTEXT: Any = None


class _Context:
    def time_remaining(self) -> float | None:
        return None


_CONTEXT: Any = _Context()


async def _gated_log(path: Path) -> tuple[AuditLog, GatedStore, MerkleTree]:
    """A log of N entries reopened over a GatedStore (its tile cache cold)."""
    signer = Ed25519Signer.from_key_string(generate_key(ORIGIN)[0])
    log = await AuditLog.open(path, signer, max_batch=100)
    receipts = await asyncio.gather(*(log.append({"kind": "test", "n": i}) for i in range(N)))
    await log.close()
    store = GatedStore(path)
    log = await AuditLog.open(None, signer, store=store)
    return log, store, MerkleTree([r.leaf_hash for r in receipts])


async def _while_held(log: AuditLog, store: GatedStore, call: Any) -> Any:
    """Run ``call`` with tile reads held; the loop must serve an append meanwhile."""
    store.armed = True
    task = asyncio.create_task(call)
    await wait_until_held(store)
    assert (await asyncio.wait_for(log.append({"kind": "test", "n": N}), 10)).index >= N
    assert not task.done()
    store.gate.set()
    result = await asyncio.wait_for(task, 10)
    assert store.on_loop == []
    return result


async def test_get_inclusion_and_consistency_proof_leave_the_loop_free(tmp_path: Path) -> None:
    log, store, tree = await _gated_log(tmp_path / "audit.db")
    servicer = AuditServicer(log, None)
    try:
        request = audit_pb2.GetInclusionProofRequest(index=3, tree_size=N)
        got = await _while_held(log, store, servicer.GetInclusionProof(request, _NO_CONTEXT))
        assert list(got.hashes) == tree.inclusion_proof(3, N) and got.leaf_hash == tree.leaf(3)
        store.entered.clear()
        store.gate.clear()
        # A tile the inclusion proof did not read (the cache holds tile 0 now).
        consistency = audit_pb2.GetConsistencyProofRequest(old_size=600, new_size=N)
        got = await _while_held(log, store, servicer.GetConsistencyProof(consistency, _NO_CONTEXT))
        assert list(got.hashes) == tree.consistency_proof(600, N)
    finally:
        store.gate.set()
        await log.close()


async def test_the_reports_proof_leaves_the_loop_free(tmp_path: Path) -> None:
    log, store, tree = await _gated_log(tmp_path / "audit.db")
    query: Any = None  # only the proof step runs
    service = ReportService(query, log, catalog=lambda: None, purposes=dict)
    try:
        text = await _while_held(log, store, service._proof(3, _CONTEXT))
        proof = TlogProof.parse(text)
        assert proof.index == 3 and list(proof.proof) == tree.inclusion_proof(3, N)
    finally:
        store.gate.set()
        await log.close()
