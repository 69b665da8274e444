"""ReportService waits for a signed checkpoint over the query's record and proves the record
in it; if none comes in time (or the caller's deadline leaves no room) it refuses with
NOT_YET_INTEGRATED, which a retry with the same request id answers without a second charge."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

import gateway.api.report as report_api
from gateway.api.report import ReportService
from gateway.audit.checkpoint import TlogProof, open_checkpoint
from gateway.audit.log import AuditLog
from gateway.audit.merkle import leaf_hash, verify_inclusion
from gateway.audit.note import Ed25519Signer, Verifier, generate_key
from gateway.audit.store import MemoryStore
from gateway.errors import NotYetIntegratedError

ORIGIN = "reports.example/log"


class _Context:
    def __init__(self, remaining: float | None) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining


def _service(log: AuditLog) -> ReportService:
    # Only the proof step is exercised: no query service is needed.
    query: Any = None
    return ReportService(query, log, catalog=lambda: None, purposes=dict)


@pytest_asyncio.fixture
async def keys() -> AsyncIterator[tuple[Ed25519Signer, Verifier]]:
    skey, vkey = generate_key(ORIGIN)
    yield Ed25519Signer.from_key_string(skey), Verifier.from_key_string(vkey)


async def test_the_proof_waits_for_the_next_checkpoint_and_verifies(
    keys: tuple[Ed25519Signer, Verifier],
) -> None:
    signer, verifier = keys
    log = await AuditLog.open(None, signer, store=MemoryStore(), checkpoint_interval=0.2)
    try:
        await log.append({"kind": "test", "n": 0})
        receipt = await log.append({"kind": "test", "n": 1})
        assert log.checkpoint_size <= receipt.index  # not yet covered: the service must wait
        started = time.monotonic()
        text = await _service(log)._proof(receipt.index, _Context(None))
        assert time.monotonic() - started < 2.0
        proof = TlogProof.parse(text)
        checkpoint = open_checkpoint(proof.checkpoint_note, [verifier])
        assert proof.index == receipt.index < checkpoint.size
        verify_inclusion(
            receipt.leaf_hash, receipt.index, checkpoint.size, proof.proof, checkpoint.root_hash
        )
        assert receipt.leaf_hash == leaf_hash(await log.read_leaf(receipt.index) or b"")
    finally:
        await log.close()


async def test_no_checkpoint_in_time_is_not_yet_integrated(
    keys: tuple[Ed25519Signer, Verifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_api, "MAX_CHECKPOINT_WAIT_S", 0.1)
    log = await AuditLog.open(
        None, keys[0], store=MemoryStore(), checkpoint_interval=60, checkpoint_every=1000
    )
    try:
        receipt = await log.append({"kind": "test"})
        with pytest.raises(NotYetIntegratedError) as err:
            await _service(log)._proof(receipt.index, _Context(None))
        assert err.value.retry_after_s is not None and err.value.retry_after_s > 0
        # A caller whose deadline leaves no room is told at once, not after the wait
        # (made long here, so that "at once" is told from "waited" with room to spare).
        monkeypatch.setattr(report_api, "MAX_CHECKPOINT_WAIT_S", 30.0)
        started = time.monotonic()
        with pytest.raises(NotYetIntegratedError):
            await _service(log)._proof(receipt.index, _Context(0.3))
        assert time.monotonic() - started < 10.0
    finally:
        await log.close()
