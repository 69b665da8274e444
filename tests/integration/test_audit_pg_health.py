"""The audit log on PostgreSQL keeps the hardening rules: while the database is known
to be away, health is NOT_SERVING and a query is refused before any department is
asked; the log heals by itself when PostgreSQL returns (no restart)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2_grpc

from adapters.testing import InMemoryStore
from gateway.audit.auditor import QueryAuditor
from gateway.audit.note import Ed25519Signer, load_verifiers
from gateway.audit.shared import SharedAuditLog
from gateway.audit.verify import verify_log
from gateway.cli.connect import QueryClient
from gateway.dev.devstack import DevStack
from gateway.domain.catalog import load_catalog
from gateway.runtime.assembly import build_authenticators
from gateway.runtime.config import load_config
from gateway.runtime.server import Gateway
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.postgres.url import PgTarget
from tests.integration.conftest import SUBJECTS, subject
from tests.integration.test_audit_health import NOT_SERVING, SERVING, _until


@pytest.mark.timeout(180)
async def test_postgres_away_fails_closed_before_departments_then_heals(
    tmp_path: Path, pg_url: str
) -> None:
    dept = InMemoryStore.from_catalog(load_catalog(), "food_drug")
    dbname = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    admin_url = pg_url.replace(f"/{dbname}?", "/postgres?")
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, fakes={"food_drug": dept}
    ) as stack:
        config = load_config(stack.config_path)
        assert config.auth is not None
        log = await SharedAuditLog.open_shared(
            PostgresAuditStore(PgTarget(pg_url)),
            Ed25519Signer.from_file(stack.audit["key"]),
            retry_interval=0.05,
            checkpoint_interval=0.2,
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
            async with grpc.aio.secure_channel(gateway.address, creds) as channel:
                health = health_pb2_grpc.HealthStub(channel)
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
                    with psycopg.connect(admin_url, autocommit=True) as admin:
                        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
                        admin.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s",
                            (dbname,),
                        )
                        # The first query finds the database gone at its append.
                        with pytest.raises(grpc.aio.AioRpcError) as exc:
                            await client.query(
                                enterprise=enterprise, purpose="supervision_inspection"
                            )
                        assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
                        await _until(health, NOT_SERVING)
                        asked = len(dept.calls)
                        with pytest.raises(grpc.aio.AioRpcError) as exc:
                            await client.query(
                                enterprise=enterprise, purpose="supervision_inspection"
                            )
                        assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
                        assert len(dept.calls) == asked  # refused before any department
                        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
                    await _until(health, SERVING)
                    again = await client.query(
                        enterprise=enterprise, purpose="supervision_inspection"
                    )
                    assert again.receipt.log_index > first.receipt.log_index
            await gateway.stop(grace=1)
            stopped = True
            reader = PostgresAuditStore(PgTarget(pg_url), snapshot=True)
            try:
                report = verify_log(reader, load_verifiers(stack.audit["verifier_key"]))
            finally:
                reader.close()
            assert report.unsigned == 0 and report.size > again.receipt.log_index
        finally:
            if not stopped:
                await gateway.stop(grace=1)
            await asyncio.sleep(0)
