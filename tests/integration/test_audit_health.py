"""Health tells the truth while the audit log fails, and the
gateway heals by itself once the storage works again (no restart)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.testing import InMemoryStore
from gateway.audit.auditor import QueryAuditor
from gateway.audit.log import AuditLog
from gateway.audit.note import Ed25519Signer, load_verifiers
from gateway.audit.store import MemoryStore
from gateway.audit.verify import verify_log
from gateway.cli.connect import QueryClient
from gateway.dev.devstack import DevStack
from gateway.domain.catalog import load_catalog
from gateway.runtime.assembly import build_authenticators
from gateway.runtime.config import load_config
from gateway.runtime.server import QUERY_SERVICE, Gateway
from tests.integration.conftest import SUBJECTS, subject

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _statuses(stub: health_pb2_grpc.HealthStub) -> list[int]:
    return [
        (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status
        for name in ("", QUERY_SERVICE)
    ]


async def _until(stub: health_pb2_grpc.HealthStub, status: int, timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while await _statuses(stub) != [status, status]:
            await asyncio.sleep(0.02)


@pytest.mark.timeout(180)
async def test_health_follows_a_failing_log_and_the_gateway_heals(tmp_path: Path) -> None:
    store = InMemoryStore.from_catalog(load_catalog(), "food_drug")
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, fakes={"food_drug": store}
    ) as stack:
        config = load_config(stack.config_path)
        assert config.auth is not None
        memory = MemoryStore()  # the real AuditStore interface; its writes can be made to fail
        key = stack.audit["key"]
        log = await AuditLog.open(
            None, Ed25519Signer.from_file(key), store=memory, retry_interval=0.05
        )
        agencies, auditors = build_authenticators(config.auth)
        gateway = Gateway(
            config,
            authenticator=agencies,
            audit_authenticator=auditors,
            audit=QueryAuditor(log, b"k" * 32, gateway_origin=log.origin),
        )
        await gateway.start()
        stopped = False
        try:
            creds = grpc.ssl_channel_credentials(
                stack.pki.ca_cert.read_bytes(),
                stack.pki.agency_key("ndrc").read_bytes(),
                stack.pki.agency_cert("ndrc").read_bytes(),
            )
            # This test's gateway, not the stack's: health is not authenticated by token.
            async with grpc.aio.secure_channel(gateway.address, creds) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                assert await _statuses(health) == [SERVING, SERVING]
                client = QueryClient.connect(
                    gateway.address,
                    ca=stack.pki.ca_cert.read_bytes(),
                    cert=stack.pki.agency_cert("ndrc").read_bytes(),
                    key=stack.pki.agency_key("ndrc").read_bytes(),
                    token=stack.tokens["ndrc"].read_text().strip(),
                )
                enterprise = subject(stack, "enterprise_clean")
                async with client:
                    first = await client.query(
                        enterprise=enterprise, purpose="supervision_inspection"
                    )
                    memory.fail_writes = True
                    with pytest.raises(grpc.aio.AioRpcError) as exc:
                        await client.query(enterprise=enterprise, purpose="supervision_inspection")
                    assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
                    await _until(health, NOT_SERVING)
                    # Still failing: the healer's attempts fail, health stays down.
                    await asyncio.sleep(0.3)
                    assert await _statuses(health) == [NOT_SERVING, NOT_SERVING]
                    with pytest.raises(grpc.aio.AioRpcError) as exc:
                        await client.query(enterprise=enterprise, purpose="supervision_inspection")
                    assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
                    memory.fail_writes = False  # the storage works again
                    await _until(health, SERVING)
                    again = await client.query(
                        enterprise=enterprise, purpose="supervision_inspection"
                    )
                    assert again.receipt.log_index > first.receipt.log_index
            await gateway.stop(grace=1)
            stopped = True
            # The stop path closed the log: a final checkpoint covers every record.
            report = verify_log(memory, load_verifiers(stack.audit["verifier_key"]))
            assert report.unsigned == 0 and report.size > again.receipt.log_index
        finally:
            if not stopped:
                await gateway.stop(grace=1)
