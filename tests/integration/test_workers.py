"""``credit-gateway serve --workers N``: N processes on one port sharing the stores, a
supervisor that restarts a dead worker and drains all on SIGTERM, one /metrics page for
all workers (prometheus-client multiprocess mode), and the refusal of a SQLite audit log.

The development stack provides the departments; the workers run the stack's
configuration in development plaintext (no audit log: the SQLite one has one writer, and
the PostgreSQL one is another part of issue 12) with policy versions and controls on
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.cli.connect import QueryClient
from gateway.dev.devstack import DevStack
from tests.integration.conftest import SUBJECTS, subject
from tests.integration.test_live_postgres import _free_port, shared_config
from tests.pg import PgCluster, fresh_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "credit-gateway"


@pytest.fixture(scope="module")
def db_url(pg_cluster: PgCluster) -> Iterator[str]:
    with fresh_database(pg_cluster) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with await DevStack.create(tmp_path_factory.mktemp("stack"), subjects=SUBJECTS) as s:
        yield s


def plaintext_config(stack: DevStack, url: str, port: int, metrics_port: int) -> Path:
    """The shared (PostgreSQL) configuration in development plaintext, without an audit
    log, on a fixed port and a fixed metrics port."""
    path = shared_config(stack, "workers", port, url)
    text = path.read_text(encoding="utf-8")
    for section in ("tls", "auth", "audit"):
        text = re.sub(rf"(?ms)^\[{section}\]\n.*?\n\n", "", text)
    text = text.replace(
        "[gateway]\n",
        f'[gateway]\ninsecure_dev_plaintext = true\nmetrics_listen = "127.0.0.1:{metrics_port}"\n',
    )
    path.write_text(text, encoding="utf-8")
    return path


def children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return {int(p) for p in text.split()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def queries_by_pid(folder: Path) -> dict[int, float]:
    """credit_gateway_queries_total per worker, read from each worker's own value file."""
    out: dict[int, float] = {}
    for file in folder.glob("counter_*.db"):
        pid = int(file.stem.split("_")[1])
        one = Path(tempfile.mkdtemp())
        try:
            shutil.copy(file, one / file.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(one))
            out[pid] = sum(
                s.value
                for m in registry.collect()
                if m.name == "credit_gateway_queries"
                for s in m.samples
                if s.name == "credit_gateway_queries_total"
            )
        finally:
            shutil.rmtree(one)
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def total_queries(page: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("credit_gateway_queries_total{")
    )


async def run_queries(
    address: str, enterprise: str, connections: int, each: int, *, retries: int = 0
) -> int:
    """``connections`` fresh connections (the kernel spreads connections, not calls),
    ``each`` queries on each; a connection refused or reset is retried on a new one up to
    ``retries`` times in all (as a client's retry policy would). Returns the retries used."""
    used = 0

    async def one() -> None:
        nonlocal used
        done = 0
        while done < each:
            # A subchannel pool of its own: otherwise every channel of this process to one
            # address shares one connection, and one worker would get every call.
            channel = grpc.aio.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            try:
                async with QueryClient(channel, (("x-dev-agency-id", "bank"),)) as client:
                    while done < each:
                        await client.query(enterprise=enterprise, purpose="lending")
                        done += 1
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or used >= retries:
                    raise
                used += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(one() for _ in range(connections)))
    return used


async def test_a_sqlite_audit_log_refuses_more_than_one_worker(stack: DevStack) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "serve", "--config", str(stack.config_path), "--workers", "2",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, (out, err)
    message = err.decode()
    assert "SQLite audit log has exactly one writer" in message and "--workers 2" in message
    assert "Traceback" not in message


async def test_workers_share_a_port_restart_and_drain(
    stack: DevStack, db_url: str, tmp_path: Path
) -> None:
    port, metrics_port = _free_port(), _free_port()
    config = plaintext_config(stack, db_url, port, metrics_port)
    folder = tmp_path / "metrics"
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "serve", "--config", str(config), "--workers", "2",
        cwd=REPO, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        assert line.decode().strip() == f"credit-gateway serving on 127.0.0.1:{port} (2 workers)"
        first = children(proc.pid)
        assert len(first) == 2
        address = f"127.0.0.1:{port}"
        enterprise = subject(stack, "enterprise_clean")
        await run_queries(address, enterprise, connections=16, each=3)

        # One /metrics page for both workers: every query counted once, by its worker.
        page = await asyncio.to_thread(scrape, metrics_port)
        assert total_queries(page) == 48
        # Both workers confirmed the shared policy and controls (least fresh of the live ones).
        assert "\ncredit_gateway_live_state_fresh 1.0\n" in page
        per_worker = queries_by_pid(folder)
        assert set(per_worker) == first and sum(per_worker.values()) == 48
        assert all(n > 0 for n in per_worker.values()), per_worker  # the kernel spread them

        # A worker killed outright is replaced; the port keeps answering meanwhile.
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # Connections the dead worker had accepted, or that reached its socket before the
        # kernel closed it, are reset: a client retries, and the survivor answers.
        await run_queries(address, enterprise, connections=4, each=2, retries=40)
        deadline = time.monotonic() + 60
        while True:
            now = children(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the new worker has bound the port
        await run_queries(address, enterprise, connections=8, each=2)
        # The dead worker's counts stay on the page (counters of dead processes are kept).
        assert total_queries(await asyncio.to_thread(scrape, metrics_port)) == 48 + 8 + 16

        # SIGTERM: every worker drains and exits, then the supervisor, with status 0.
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        assert proc.returncode == 0
        assert not any(alive(p) for p in now)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
