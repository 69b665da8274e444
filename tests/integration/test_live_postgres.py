"""Live changes across gateway processes sharing policy versions and controls on
PostgreSQL (LISTEN/NOTIFY, a version poll as the backstop, a freshness bound).

The development stack provides the PKI, the departments and gateway A (SQLite, in this
process, not part of the shared state). Gateways B and C are separate ``credit-gateway
serve`` processes over one PostgreSQL database of this module's own cluster (stopped and
restarted by the last test), each with its own audit log, ``stale_after_s = 2``:

* a policy version activated through B is served by C within the bound;
* a suspension made through C is refused by B within the bound;
* when the database goes away both report NOT_SERVING and refuse queries UNAVAILABLE
  (``LIVE_STATE_STALE``) within the bound, and serve again by themselves once it returns.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway.cli.connect import QueryClient, open_channel
from gateway.dev.devstack import DevStack, ensure_audit_keys, mint_token
from protos.credit.v1 import controls_pb2, controls_pb2_grpc, policy_admin_pb2, query_pb2
from protos.credit.v1 import policy_admin_pb2_grpc as pa_grpc
from tests.integration.conftest import SUBJECTS, subject
from tests.pg import PgCluster, fresh_database, start_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
STALE_S = 2.0
PURPOSE = "joint_punishment_screen"
WIDER = (
    "p, role:procurement_center, *, public, joint_punishment_screen, free, allow\n"
    "p, role:procurement_center, *, government_shared, joint_punishment_screen, free, allow\n"
)
#: Propagation delays measured (seconds), for the report.
DELAYS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = start_cluster()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def db_url(cluster: PgCluster) -> Iterator[str]:
    with fresh_database(cluster) as url:
        yield url


def _pg_ctl(cluster: PgCluster, *args: str) -> None:
    subprocess.run(
        [*cluster.run_as, str(cluster.bindir / "pg_ctl"), "-D", str(cluster.root / "data"), *args],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shared_config(stack: DevStack, name: str, port: int, url: str) -> Path:
    """The stack's configuration with another port, its own audit log, no billing, and
    policy versions and controls on PostgreSQL (no SQLite file for either)."""
    audit = ensure_audit_keys(stack.workdir / f"audit-{name}", f"credit-gateway.dev/audit-{name}")
    text = stack.config_path.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^listen = ".*"$', f'listen = "127.0.0.1:{port}"', text)
    text = re.sub(r'(?m)^metrics_listen = ".*"\n', "", text)
    text = re.sub(r'(?m)^path = ".*audit.sqlite"$', f'path = "{audit["log"]}"', text)
    text = re.sub(r'(?m)^key = ".*log.key"$', f'key = "{audit["key"]}"', text)
    text = re.sub(r"(?ms)^\[billing\]\n.*?\n\n", "", text)
    text = re.sub(r'(?m)^store = ".*policy-versions.sqlite"\n', "", text)
    text = re.sub(r"(?ms)^\[controls\]\n.*?\n\n", "", text)
    text += (
        f'\n[storage]\nurl = "{url}"\nstale_after_s = {STALE_S}\npoll_interval_s = 0.5\n'
        'stores = { replay = "sqlite", ledger = "sqlite", audit = "sqlite" }\n'
    )
    path = stack.workdir / f"gateway-{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Proc:
    address: str
    proc: asyncio.subprocess.Process


async def start_gateway(config: Path, port: int, *extra: str) -> Proc:
    """``credit-gateway serve`` in a process; returns once it serves. Raises AssertionError
    with its output when it exits first."""
    script = Path(sys.executable).parent / "credit-gateway"
    proc = await asyncio.create_subprocess_exec(
        str(script), "serve", "--config", str(config), *extra,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    if b"serving on" not in line:
        _, err = await proc.communicate()
        raise AssertionError(f"gateway did not start: {line!r} {err.decode()[-3000:]}")
    return Proc(f"127.0.0.1:{port}", proc)


async def stop_gateway(p: Proc) -> str:
    """SIGTERM, wait, and return its standard error."""
    if p.proc.returncode is None:
        p.proc.terminate()
    try:
        _, err = await asyncio.wait_for(p.proc.communicate(), 30)
    except TimeoutError:
        p.proc.kill()
        _, err = await p.proc.communicate()
    return err.decode(errors="replace")


@dataclass
class Fleet:
    stack: DevStack
    b: Proc
    c: Proc

    def officer_channel(self, address: str, officer: str) -> tuple[grpc.aio.Channel, Any]:
        pki = self.stack.pki
        cert = pki.officer_cert(officer)
        channel, metadata = open_channel(
            address,
            ca=pki.ca_cert.read_bytes(),
            cert=cert.read_bytes(),
            key=pki.officer_key(officer).read_bytes(),
            token=mint_token(pki, officer, cert),
        )
        return channel, {"metadata": metadata, "timeout": 30}

    def agency(self, address: str, agency: str) -> QueryClient:
        pki = self.stack.pki
        cert = pki.agency_cert(agency)
        return QueryClient.connect(
            address,
            ca=pki.ca_cert.read_bytes(),
            cert=cert.read_bytes(),
            key=pki.agency_key(agency).read_bytes(),
            token=mint_token(pki, agency, cert),
        )

    async def health(self, address: str) -> int:
        pki = self.stack.pki
        channel, _ = open_channel(
            address,
            ca=pki.ca_cert.read_bytes(),
            cert=pki.agency_cert("bank").read_bytes(),
            key=pki.agency_key("bank").read_bytes(),
        )
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            got = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            return int(got.status)
        finally:
            await channel.close()


def reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> AsyncIterator[Fleet]:
    async with await DevStack.create(tmp_path_factory.mktemp("stack"), subjects=SUBJECTS) as stack:
        port_b, port_c = _free_port(), _free_port()
        b = await start_gateway(shared_config(stack, "b", port_b, db_url), port_b)
        procs = [b]
        try:
            c = await start_gateway(shared_config(stack, "c", port_c, db_url), port_c)
            procs.append(c)
            yield Fleet(stack, b, c)
        finally:
            errs = [await stop_gateway(p) for p in procs]
            for p, err in zip(procs, errs, strict=True):
                assert p.proc.returncode == 0, err[-3000:]


async def _query_version(client: QueryClient, enterprise: str) -> tuple[str, bool]:
    r = await client.query(enterprise=enterprise, purpose=PURPOSE)
    return r.policy_version, any(s.status == query_pb2.SECTION_STATUS_OK for s in r.sections)


async def test_a_policy_activated_through_b_is_served_by_c_within_the_bound(fleet: Fleet) -> None:
    ch_a, kw_a = fleet.officer_channel(fleet.b.address, "officer_a")
    ch_b, kw_b = fleet.officer_channel(fleet.b.address, "officer_b")
    a, b = pa_grpc.PolicyAdminStub(ch_a), pa_grpc.PolicyAdminStub(ch_b)
    enterprise = subject(fleet.stack, "enterprise_all_departments")
    try:
        listed = await a.ListVersions(policy_admin_pb2.ListVersionsRequest(), **kw_a)
        [active] = [v for v in listed.versions if v.active]
        got = await a.GetVersion(policy_admin_pb2.VersionRequest(version=active.number), **kw_a)
        policy = next(f.content for f in got.files if f.name == "policy.csv")
        async with fleet.agency(fleet.c.address, "procurement") as client:
            before, visible = await _query_version(client, enterprise)
            assert not visible  # the purpose is not granted yet
            draft = await a.Draft(
                policy_admin_pb2.DraftRequest(
                    files=[policy_admin_pb2.PolicyFile(name="policy.csv", content=policy + WIDER)],
                    reason="procurement screens for joint punishment",
                ),
                **kw_a,
            )
            number = draft.version.number
            await b.Approve(policy_admin_pb2.ApproveRequest(version=number, reason="ok"), **kw_b)
            done = await a.Activate(
                policy_admin_pb2.ActivateRequest(version=number, reason="go"), **kw_a
            )
            activated = time.monotonic()
            while True:
                version, visible = await _query_version(client, enterprise)
                if version == done.policy_version:
                    break
                assert version == before
                assert time.monotonic() - activated < STALE_S, "C still serves the old version"
                await asyncio.sleep(0.02)
            DELAYS["policy"] = time.monotonic() - activated
            assert visible
    finally:
        await ch_a.close()
        await ch_b.close()


async def test_a_suspension_through_c_is_refused_by_b_within_the_bound(fleet: Fleet) -> None:
    query = {"enterprise": subject(fleet.stack, "enterprise_clean"), "purpose": "lending"}
    ch, kw = fleet.officer_channel(fleet.c.address, "officer_a")
    ch2, kw2 = fleet.officer_channel(fleet.b.address, "officer_b")
    stub, stub2 = (
        controls_pb2_grpc.SecurityControlsStub(ch),
        controls_pb2_grpc.SecurityControlsStub(ch2),
    )
    try:
        async with fleet.agency(fleet.b.address, "bank") as client:
            await client.query(**query)
            await stub.SuspendAgency(
                controls_pb2.SuspendAgencyRequest(agency_id="bank", reason="key leaked"), **kw
            )
            suspended = time.monotonic()
            while True:
                try:
                    await client.query(**query)
                except grpc.aio.AioRpcError as err:
                    assert reason(err) == "AGENCY_SUSPENDED"
                    break
                assert time.monotonic() - suspended < STALE_S, "B still serves a suspended agency"
                await asyncio.sleep(0.02)
            DELAYS["suspension"] = time.monotonic() - suspended
            await stub.ReinstateAgency(
                controls_pb2.ReinstateAgencyRequest(agency_id="bank", reason="new key"), **kw
            )
            await stub2.ReinstateAgency(
                controls_pb2.ReinstateAgencyRequest(agency_id="bank"), **kw2
            )
            deadline = time.monotonic() + STALE_S
            while True:  # reinstated: served again through B within the bound too
                try:
                    await client.query(**query)
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
    finally:
        await ch.close()
        await ch2.close()


async def test_a_lost_database_means_not_serving_within_the_bound_then_recovery(
    fleet: Fleet, cluster: PgCluster
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    query = {"enterprise": subject(fleet.stack, "enterprise_clean"), "purpose": "lending"}
    for p in (fleet.b, fleet.c):
        assert await fleet.health(p.address) == serving
    await asyncio.to_thread(_pg_ctl, cluster, "-m", "fast", "stop")
    down = time.monotonic()
    for p in (fleet.b, fleet.c):
        while await fleet.health(p.address) != not_serving:
            # The bound, the last poll's age and the health watch's period.
            assert time.monotonic() - down < STALE_S + 0.5 + 0.2 + 1.0
            await asyncio.sleep(0.05)
        async with fleet.agency(p.address, "bank") as client:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.query(**query)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason(refused.value) == "LIVE_STATE_STALE"
        assert "cannot confirm the current policy" in (refused.value.details() or "")
    opts = f"-c listen_addresses='' -c unix_socket_directories={cluster.root} -c fsync=off"
    await asyncio.to_thread(
        _pg_ctl, cluster, "-l", str(cluster.root / "log"), "-o", opts, "-w", "-t", "60", "start"
    )
    for p in (fleet.b, fleet.c):
        deadline = time.monotonic() + 30
        while await fleet.health(p.address) != serving:
            assert time.monotonic() < deadline, "did not recover by itself"
            await asyncio.sleep(0.1)
        async with fleet.agency(p.address, "bank") as client:
            await client.query(**query)
    print(f"\npropagation through PostgreSQL (s): {DELAYS}")
