"""AuditService statuses at the edges of the log: a receipt fresher than the latest
checkpoint is "not yet integrated, retry after N ms" (UNAVAILABLE with RetryInfo), an
impossible range is INVALID_ARGUMENT, and a consistency proof from size 0 is empty."""

from __future__ import annotations

import asyncio
import re

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.audit import verify_inclusion
from gateway.dev.devstack import DevStack
from protos.credit.v1 import audit_pb2, audit_pb2_grpc, query_pb2
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _query(stack: DevStack) -> query_pb2.QueryResponse:
    async with stack.client("procurement") as client:
        return await client.query(
            enterprise=subject(stack, "enterprise_clean"), purpose="government_procurement"
        )


def _details(err: grpc.aio.AioRpcError) -> tuple[str, error_details_pb2.RetryInfo | None]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    reason, retry = "", None
    for detail in status.details:
        info, delay = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(delay):
            retry = delay
    return reason, retry


async def test_a_fresh_receipt_is_not_yet_integrated_then_proves(stack: DevStack) -> None:
    channel, md = stack.channel("agencies", "procurement")
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    async with channel:
        refused: grpc.aio.AioRpcError | None = None
        for _ in range(10):
            # After an idle second the first append signs a checkpoint at once; the
            # second, right behind it, waits for the next one.
            await _query(stack)
            receipt = (await _query(stack)).receipt
            try:
                await stub.GetInclusionProof(
                    audit_pb2.GetInclusionProofRequest(index=receipt.log_index), metadata=md
                )
            except grpc.aio.AioRpcError as err:
                refused = err
                break
        assert refused is not None, "every receipt was already integrated"
        assert refused.code() is grpc.StatusCode.UNAVAILABLE
        match = re.fullmatch(
            rf"entry {receipt.log_index} is not yet in a signed checkpoint; "
            r"retry after (\d+) ms",
            refused.details() or "",
        )
        assert match is not None, refused.details()
        reason, retry = _details(refused)
        assert reason == "NOT_YET_INTEGRATED" and retry is not None
        delay_ms = retry.retry_delay.ToMilliseconds()
        assert delay_ms == int(match.group(1))
        assert 0 < delay_ms <= 1_100  # a checkpoint at least every second, and a margin
        proof = None
        for _ in range(20):  # as a client would: wait as told, then ask again
            await asyncio.sleep(delay_ms / 1000)
            try:
                proof = await stub.GetInclusionProof(
                    audit_pb2.GetInclusionProofRequest(index=receipt.log_index), metadata=md
                )
                break
            except grpc.aio.AioRpcError as err:
                assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert proof is not None
        checkpoint = await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=md)
    assert proof.tree_size == checkpoint.tree_size > receipt.log_index
    verify_inclusion(
        receipt.leaf_hash, receipt.log_index, proof.tree_size, list(proof.hashes),
        checkpoint.root_hash,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("method", "request_fields", "field"),
    [
        ("GetConsistencyProof", {"old_size": 2, "new_size": 1}, "old_size"),
        ("GetConsistencyProof", {"old_size": 1, "new_size": 2**64 - 1}, "new_size"),
        ("GetInclusionProof", {"index": 5, "tree_size": 5}, "index"),
        ("GetInclusionProof", {"index": 0, "tree_size": 2**63}, "tree_size"),
    ],
)
async def test_impossible_ranges_are_invalid_arguments(
    stack: DevStack, method: str, request_fields: dict[str, int], field: str
) -> None:
    await _query(stack)
    channel, md = stack.channel("auditors", "auditor")
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    request_type = {
        "GetConsistencyProof": audit_pb2.GetConsistencyProofRequest,
        "GetInclusionProof": audit_pb2.GetInclusionProofRequest,
    }[method]
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await getattr(stub, method)(request_type(**request_fields), metadata=md)
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (exc.value.details() or "").startswith(f"{field}: ")


async def test_an_index_beyond_the_log_is_not_found(stack: DevStack) -> None:
    channel, md = stack.channel("auditors", "auditor")
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(index=2**64 - 1), metadata=md
            )
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND


async def test_consistency_from_the_empty_tree_is_an_empty_proof(stack: DevStack) -> None:
    await _query(stack)
    channel, md = stack.channel("auditors", "auditor")
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    async with channel:
        checkpoint = await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=md)
        for new in (0, checkpoint.tree_size):
            proof = await stub.GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(old_size=0, new_size=new), metadata=md
            )
            assert proof.old_size == 0 and proof.new_size == new and list(proof.hashes) == []
