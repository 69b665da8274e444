"""A whole federation with its ledger, replay store and rate limits on PostgreSQL.

Paid queries run concurrently through the gateway, some sent twice at once under one
request id, while a second process (the installed ``credit-gateway billing --config``)
tops an account up on the same database. Afterwards: every request id is charged once,
the ledger checks clean, and ``credit-gateway billing reconcile --config`` finds the
ledger and the audit log telling the same story (0 differences).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import psycopg
import pytest

from gateway.cli.connect import build_request
from gateway.dev.devstack import DevStack
from gateway.stores.postgres.ledger import PostgresLedger
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="function")

CLI = Path(sys.executable).parent / "credit-gateway"


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_paid_load_on_postgres_is_charged_once_and_reconciles(
    tmp_path: Path, pg_url: str
) -> None:
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, storage_url=pg_url
    ) as stack:
        meter = stack.gateway.meter
        assert meter is not None and isinstance(meter.store, PostgresLedger)
        assert stack.gateway.limiter is not None and stack.gateway.limiter.budget is not None
        config = str(stack.config_path)
        enterprises = ["enterprise_clean", "enterprise_all_departments"]
        requests = [
            build_request(enterprise=subject(stack, key), purpose="lending", mode="paid")
            for key in enterprises * 5
        ]
        async with stack.client("bank") as client:

            async def send(request: object) -> grpc.StatusCode:
                try:
                    await client.stub.Query(request, timeout=30, metadata=client._metadata)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            # Each request twice at once (a client retrying early), and a top-up by a
            # second process on the same database meanwhile.
            top_up = asyncio.create_task(
                _cli("billing", "--config", config, "top-up", "bank", "1000",
                     "--reference", "TX-during-load")
            )  # fmt: skip
            codes = await asyncio.gather(*(send(r) for r in requests for _ in range(2)))
            code, output = await top_up
            assert code == 0, output
        assert grpc.StatusCode.OK in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}
        charged = 0
        for request in requests:
            record = await meter.ledger.run(meter.store.request, request.request_id)
            assert record is not None and record.state == "settled" and record.attempts == 1
            kinds = [
                e.kind
                for e in await meter.ledger.run(meter.store.entries, request_id=request.request_id)
            ]
            # One hold per priced line, each charged or released once: never twice.
            priced = [x for x in record.lines if x.amount_fen]
            assert kinds.count("reserve") == len(priced)
            assert kinds.count("charge") == len([x for x in record.delivered if x.amount_fen])
            assert kinds.count("charge") + kinds.count("release") == len(priced)
            charged += record.charged_fen
        assert charged > 0
        assert await stack.balance_fen("bank") == 50_000 + 1_000 - charged
        assert await meter.ledger.run(meter.store.check) == []
        # The replay store and the limits are the database's too.
        with psycopg.connect(pg_url) as conn:
            jtis = conn.execute("SELECT count(*) FROM replay_jti").fetchone()
            buckets = conn.execute("SELECT agency FROM rate_buckets").fetchall()
        assert jtis is not None and jtis[0] >= 1
        assert ("bank",) in buckets
    code, output = await _cli("billing", "--config", config, "check")
    assert code == 0 and "ledger consistent" in output, output
    code, output = await _cli(
        "billing", "reconcile", "--config", config,
        "--audit-log", str(stack.audit["log"]), "--key", str(stack.audit["verifier_key"]),
    )  # fmt: skip
    assert code == 0, output
    assert "0 differences" in output
