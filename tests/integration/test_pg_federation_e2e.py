"""Issue 12's "Done means": a whole federation on one PostgreSQL, many processes.

One migrated database (the ``pg_url`` fixture; ``credit-gateway db migrate --config``
is run on it as an operator would), the development stack's departments, and three
``credit-gateway serve`` processes started from the same configuration (every store on
PostgreSQL, the audit log included; only the listen address differs). Paid queries run
concurrently through all three as the bank, each with a fresh request id, some ids sent
to two processes at once. Mid-load one gateway process is SIGKILLed: the others keep
answering. Then the process holding the audit integrator role (``audit_tree.integrator``
names it, ``host:pid``) is SIGKILLed: another takes over and checkpoints continue.

Afterwards: ``credit-audit export`` of the ``postgresql://`` log and ``credit-audit
verify`` of the export pass (installed scripts); every receipt a client got is at its
index with the same leaf hash; ``credit-gateway billing --config F reconcile`` finds 0
differences; no request id is charged twice (ledger entries per request id).
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import socket
import sys
import time
from pathlib import Path

import grpc
import psycopg
import pytest

from gateway.cli.connect import QueryClient, build_request
from gateway.dev.devstack import DevStack
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.postgres.ledger import PostgresLedger
from gateway.stores.postgres.url import PgTarget
from protos.credit.v1 import query_pb2
from tests.integration.conftest import SUBJECTS, subject
from tests.integration.test_live_postgres import Proc, _free_port, start_gateway, stop_gateway

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]

BIN = Path(sys.executable).parent
#: How long a new integrator may take after the old one is SIGKILLed (its session ends
#: at once; gateway/audit/shared.py's lead interval plus a tick, with room for load).
TAKEOVER_BOUND_S = 10.0


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _tree(url: str) -> tuple[int, str | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT size, integrator FROM audit_tree").fetchone()
    return (0, None) if row is None else (int(row[0]), row[1] or None)


def _config_for(stack: DevStack, port: int) -> Path:
    """The stack's configuration with only the listen address changed."""
    text = stack.config_path.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^listen = ".*"$', f'listen = "127.0.0.1:{port}"', text)
    text = re.sub(r'(?m)^metrics_listen = ".*"\n', "", text)
    path = stack.workdir / f"gateway-{port}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _client(stack: DevStack, address: str) -> QueryClient:
    return QueryClient.connect(
        address,
        ca=stack.pki.ca_cert.read_bytes(),
        cert=stack.pki.agency_cert("bank").read_bytes(),
        key=stack.pki.agency_key("bank").read_bytes(),
        token=stack.tokens["bank"].read_text(encoding="utf-8").strip(),
    )


async def test_federation_on_postgres_survives_killed_gateways(tmp_path: Path, pg_url: str) -> None:
    started = time.monotonic()
    stack = await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, storage_url=pg_url, sqlite_stores=()
    )
    # Only the three serve processes write: the stack's own gateway steps aside.
    await stack.gateway.stop(grace=0)
    procs: dict[str, Proc] = {}
    clients: dict[str, QueryClient] = {}
    try:
        config = stack.config_path
        code, out = await _run(
            str(BIN / "credit-gateway"), "db", "migrate", "--config", str(config)
        )
        assert code == 0, out
        code, out = await _run(str(BIN / "credit-gateway"), "billing", "--config", str(config),
                               "top-up", "bank", "100000", "--reference", "TX-e2e")  # fmt: skip
        assert code == 0, out
        ports = [_free_port() for _ in range(3)]
        configs = [_config_for(stack, port) for port in ports]
        gateways = await asyncio.gather(
            *(start_gateway(c, p) for c, p in zip(configs, ports, strict=True))
        )
        procs = {g.address: g for g in gateways}
        clients = {a: _client(stack, a) for a in procs}
        enterprises = [
            subject(stack, k) for k in ("enterprise_clean", "enterprise_all_departments")
        ]
        rng = random.Random(12)
        receipts: list[tuple[str, int, bytes]] = []  # (request id, log index, leaf hash)
        sent: list[str] = []
        codes: list[grpc.StatusCode] = []
        details: list[str] = []

        async def one(address: str, request: query_pb2.QueryRequest) -> grpc.StatusCode:
            client = clients[address]
            try:
                resp = await client.stub.Query(request, timeout=30, metadata=client._metadata)
            except grpc.aio.AioRpcError as exc:
                details.append(f"{exc.code().name}: {exc.details()}")
                return exc.code()
            r = resp.receipt
            receipts.append((resp.request_id or "", r.log_index, bytes(r.leaf_hash)))
            return grpc.StatusCode.OK

        async def round_(alive: list[str], n: int) -> list[grpc.StatusCode]:
            """``n`` fresh request ids over ``alive``, every fourth to two processes at
            once; returns each id's best outcome (OK where any process answered)."""
            calls, ids = [], []
            for i in range(n):
                request = build_request(enterprise=rng.choice(enterprises), purpose="lending",
                                        mode="paid")  # fmt: skip
                sent.append(request.request_id)
                targets = (
                    rng.sample(alive, 2)
                    if i % 4 == 0 and len(alive) > 1
                    else [alive[i % len(alive)]]
                )
                calls += [one(a, request) for a in targets]
                ids += [request.request_id] * len(targets)
            got = await asyncio.gather(*calls)
            codes.extend(got)
            best: dict[str, grpc.StatusCode] = {}
            for rid, code in zip(ids, got, strict=True):
                if best.get(rid) != grpc.StatusCode.OK:
                    best[rid] = code
            return list(best.values())

        addresses = list(procs)
        await round_(addresses, 12)
        # 1. SIGKILL a gateway that is not the integrator, mid-load.
        deadline = time.monotonic() + TAKEOVER_BOUND_S
        while (integrator := _tree(pg_url)[1]) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert integrator is not None, "no integrator elected"
        by_pid = {str(p.proc.pid): a for a, p in procs.items()}
        holder = by_pid[integrator.rsplit(":", 1)[1]]
        victim = next(a for a in addresses if a != holder)
        load = asyncio.create_task(round_(addresses, 12))
        await asyncio.sleep(0.2)
        procs[victim].proc.send_signal(signal.SIGKILL)
        await load
        alive = [a for a in addresses if a != victim]
        after_kill = await round_(alive, 10)
        assert after_kill.count(grpc.StatusCode.OK) == len(after_kill), details[-3:]
        # 2. SIGKILL the integrator mid-load: the last process takes over.
        size_before, _ = _tree(pg_url)
        load = asyncio.create_task(round_(alive, 12))
        await asyncio.sleep(0.2)
        procs[holder].proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await load
        last = next(a for a in alive if a != holder)
        new_integrator = None
        while time.monotonic() - killed_at < TAKEOVER_BOUND_S:
            _, new_integrator = _tree(pg_url)
            if new_integrator not in (None, integrator):
                break
            await asyncio.sleep(0.1)
        assert new_integrator == f"{socket.gethostname()}:{procs[last].proc.pid}"
        takeover_s = time.monotonic() - killed_at
        tail = await round_([last], 10)
        assert tail.count(grpc.StatusCode.OK) == len(tail), details[-3:]
        deadline = time.monotonic() + TAKEOVER_BOUND_S
        while _tree(pg_url)[0] <= size_before and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert _tree(pg_url)[0] > size_before, "checkpoints stopped after the takeover"
        for client in clients.values():
            await client.close()
        clients = {}
        err = await stop_gateway(procs[last])  # SIGTERM: the final checkpoint
        assert procs[last].proc.returncode == 0, err[-2000:]
        assert codes.count(grpc.StatusCode.OK) >= 40
        assert set(codes) <= {
            grpc.StatusCode.OK, grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE
        }  # fmt: skip

        # Every receipt is at its index, leaf hash equal.
        reader = PostgresAuditStore(PgTarget(pg_url), snapshot=True)
        entries = {e.index: e for e in reader.iter_entries()}
        reader.close()
        assert sorted(entries) == list(range(len(entries)))
        owner: dict[int, str] = {}
        for rid, index, _ in receipts:  # an index is one request's (a replay repeats it)
            assert owner.setdefault(index, rid) == rid
        for _, index, leaf in receipts:
            assert entries[index].leaf_hash == leaf
        # The installed auditor's tools: export the shared log, verify the export.
        vkey = str(stack.audit["verifier_key"])
        code, out = await _run(str(BIN / "credit-audit"), "export", pg_url, "--key", vkey,
                               "--out", str(tmp_path / "exported"))  # fmt: skip
        assert code == 0, out
        code, out = await _run(str(BIN / "credit-audit"), "verify", str(tmp_path / "exported"),
                               "--key", vkey)  # fmt: skip
        assert code == 0 and out.startswith("OK"), out
        code, out = await _run(str(BIN / "credit-gateway"), "billing", "--config", str(config),
                               "reconcile", "--audit-log", str(tmp_path / "exported"),
                               "--key", vkey)  # fmt: skip
        assert code == 0 and "0 differences" in out, out
        # No request id charged twice.
        from gateway.stores.postgres.connect import open_pool

        ledger = PostgresLedger(open_pool(PgTarget(pg_url), max_size=2))
        try:
            for rid in sent:
                kinds = [e.kind for e in ledger.entries(request_id=rid)]
                record = ledger.request(rid)
                if record is None:
                    assert kinds == []
                    continue
                priced = [x for x in record.lines if x.amount_fen]
                assert kinds.count("reserve") == len(priced), (rid, kinds)
                assert kinds.count("charge") <= len(priced), (rid, kinds)
                assert kinds.count("charge") + kinds.count("release") <= len(priced)
        finally:
            ledger.close()
        total_s = time.monotonic() - started
        print(f"pg federation e2e: {len(receipts)} receipts, {len(sent)} ids, integrator "
              f"takeover <= {takeover_s:.2f}s after SIGKILL, {total_s:.1f}s in all")  # fmt: skip
    finally:
        for client in clients.values():
            await client.close()
        for p in procs.values():
            if p.proc.returncode is None:
                p.proc.kill()
                await p.proc.wait()
        await asyncio.gather(*(p.stop() for p in stack.departments.values()))
