"""Throughput with 1, 2 and 4 gateway worker processes against as many bare proxies.

    python -m bench.workers_bench [--workers 1,2,4] [--rounds 3] [--seconds 4]
        [--concurrency 32] [--connections 8] [--no-fsync]

For each N: ``credit-gateway serve --config F --workers N`` (the console script: a
supervisor and N workers on one port, ``SO_REUSEPORT``) with **every store on
PostgreSQL** (``[storage] url``: audit log, ledger, replay, limits, policy versions,
controls) in a throwaway cluster started by the bench (gateway/dev/pgcluster.py), and
N bare grpc.aio pass-through proxies (bench/_proxy.py ``--reuseport``) on one port of
their own, both in front of the same trivial department (bench/_department.py). The
gateway runs as in bench.overhead: mutual TLS, a bound token (one, reused), the durable
audit log, the free-quota ledger, live controls, the replay store and limits checked
on every query but never binding (bench.overhead.LIMITS, seeded as policy version 1);
every query carries a new request id (bench.overhead.fresh_ids).

The cluster runs with ``fsync=on`` and ``synchronous_commit=on`` (PostgreSQL's
defaults: every commit waits for its WAL flush on this disk, the honest figure);
``--no-fsync`` turns both off (the test cluster: bounds CPU, not the disk).

One load generator process drives each side in turn, alternating rounds, with
``--concurrency`` calls in flight spread over ``--connections`` connections (each
channel with a subchannel pool of its own: the kernel spreads connections, not calls,
over the processes sharing a port; one connection would keep every call on one worker).
CPU per query is summed over every process of a side (the supervisor and its workers,
read from /proc; the N proxies), divided by the OK answers. The department's CPU is not
counted on either side.

Printed per N: bare and gateway OK queries/s (medians of the rounds), their ratio, and
CPU microseconds per query of each side. Any answer not OK on either side voids the run
(exit 1). Without PostgreSQL it prints "NOT RUN: ..." and exits 3. Not a test: nothing
here asserts a time.

What bounds each figure on a small machine: the cores. The load generator, the
department, PostgreSQL and all N processes of a side share them, so beyond the core
count more processes add only scheduling; the load generator (one Python event loop)
caps both sides alike. With fsync on, the gateway is bounded further by commit latency
(ledger reserve and settle, audit batches), which more in-flight calls amortise.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg

from bench import _procs
from bench._department import CATALOG, POLICY, PRICES
from bench.overhead import SUBJECT, _gateway_toml, _mint, fresh_ids
from gateway.cli.connect import build_request
from gateway.dev.devstack import ensure_audit_keys
from gateway.dev.pgcluster import ClusterUnavailable, LocalCluster, start_cluster
from gateway.dev.pki import init_pki
from gateway.domain.purposes import load_purposes
from gateway.policyadmin.loading import load_version, read_disk_files
from gateway.policyadmin.store import BOOTSTRAP_AUTHOR
from gateway.stores.postgres.connect import open_pool
from gateway.stores.postgres.migrate import migrate
from gateway.stores.postgres.policy_versions import PgVersionStore
from gateway.stores.postgres.url import PgTarget
from protos.credit.v1 import adapter_pb2

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__import__("sys").executable).parent / "credit-gateway"
LOOKUP = "/credit.v1.DepartmentAdapter/Lookup"
QUERY = "/credit.v1.QueryService/Query"

Tls = tuple[bytes, bytes, bytes]

#: bench.overhead.LIMITS with a daily ceiling that fits PostgreSQL's ``integer``
#: (2**31 - 1): ``rate_lease`` (migrations/0004_rate_limits.sql) takes ``p_daily
#: integer``, and bench.overhead's trillion a day fails every lease there (each query is
#: then refused UNAVAILABLE). Two billion a day per purpose is as far from binding.
LIMITS = """\
version = "bench"
timezone = "Asia/Shanghai"

[default]
rate_per_s = 1000000000
burst = 1000000000
daily_per_purpose = 2000000000
"""


#: The first message of each non-OK status code seen (printed when a run is void).
_FIRST: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its children (the supervisor's workers), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except OSError:
        return [pid]
    return [pid, *(int(p) for p in text.split())]


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far."""
    return sum(_procs.cpu_seconds(p) for p in pids)


async def _drive(
    address: str,
    method: str,
    payload: bytes | Iterator[bytes],
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    connections: int,
    seconds: float,
    tls: Tls,
) -> tuple[int, Counter[str]]:
    """bench.overhead._drive over ``connections`` connections: OK answers in
    ``seconds`` and the others by status code (warm-up included)."""
    ca, key, cert = tls
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    channels = [
        grpc.aio.secure_channel(address, creds, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(connections)
    ]
    failed: Counter[str] = Counter()
    try:
        calls = [c.unary_unary(method) for c in channels]

        async def one(call: grpc.aio.UnaryUnaryMultiCallable) -> bool:
            try:
                body = payload if isinstance(payload, bytes) else next(payload)
                await call(body, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as err:
                failed[err.code().name] += 1
                _FIRST.setdefault(err.code().name, str(err.details()))
                return False
            return True

        for call in calls:  # connect every channel and warm both sides up
            for _ in range(5):
                await one(call)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker(call: grpc.aio.UnaryUnaryMultiCallable) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                if await one(call):
                    done += 1

        await asyncio.gather(*(worker(calls[i % connections]) for i in range(concurrency)))
        return done, failed
    finally:
        for c in channels:
            await c.close()


def _measure(
    pids: list[int],
    address: str,
    method: str,
    payload: bytes | Iterator[bytes],
    metadata: tuple[tuple[str, str], ...],
    args: argparse.Namespace,
    tls: Tls,
    failed: Counter[str],
) -> tuple[float, float]:
    """OK queries/s and CPU microseconds per OK query summed over ``pids``."""
    cpu0 = _cpu(pids)
    t0 = time.perf_counter()
    n, bad = asyncio.run(
        _drive(
            address, method, payload, metadata, args.concurrency, args.connections,
            args.seconds, tls,
        )
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    cpu = _cpu(pids) - cpu0
    failed.update(bad)
    return n / elapsed, cpu / max(n, 1) * 1e6


def _seed_pg_policy(work: Path, url: str) -> None:
    """Policy version 1 on PostgreSQL: the bench's files with :data:`LIMITS`, activated
    as a gateway's first start would (bench.overhead._seed_policy_store, on PostgreSQL)."""
    (work / "limits.toml").write_text(LIMITS, encoding="utf-8")
    measures = work / "measures.toml"
    measures.write_text('version = "bench"\n[scenarios]\n[lists]\n', encoding="utf-8")
    files = read_disk_files(
        policy=work / "policy.csv",
        catalog=work / "catalog.toml",
        prices=work / "prices.toml",
        limits=work / "limits.toml",
        measures=measures,
    )
    store = PgVersionStore(open_pool(PgTarget(url), max_size=1))
    try:
        version = store.add_version(
            files, author=BOOTSTRAP_AUTHOR, reason="bench limits", parent=None
        )
        load_version(version, purposes=tuple(load_purposes()))
        store.activate(version.number, BOOTSTRAP_AUTHOR, "bench", action="bootstrap")
    finally:
        store.close()


def _config(work: Path, dept_addr: str, url: str, port: int) -> Path:
    """bench.overhead's gateway configuration on a fixed port, every store on
    PostgreSQL (``[storage] url``)."""
    pki = init_pki(work / "pki", departments=["bench"], agencies=["ndrc"], officers=[], auditors=[])
    audit = ensure_audit_keys(work / "audit")
    # No SQLite replay or controls file named: with ``[storage] url`` both live on
    # PostgreSQL, and a named replay file is still opened by every worker at start-up
    # (two workers creating it at once: "database is locked", the start fails).
    text = _gateway_toml(work, dept_addr, pki, audit, billing=True, replay_store=False)
    text = text.replace(f'[controls]\nstore = "{work / "controls.sqlite"}"\n', "")
    text = text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"', 1)
    text += f'[storage]\nurl = "{url}"\n'
    path = work / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _serve(config: Path, workers: int) -> subprocess.Popen[str]:
    """``credit-gateway serve --workers N`` through the console script, once it serves
    (with N = 1 the command serves in its own process, no supervisor)."""
    proc = subprocess.Popen(
        [str(SCRIPT), "--log-level", "WARNING", "serve", "--config", str(config),
         "--workers", str(workers)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=None, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "serving on" in line:
            return proc
    _procs.stop(proc)
    raise RuntimeError(f"credit-gateway serve --workers {workers} did not start")


def _case(
    n: int, cluster: LocalCluster, work: Path, args: argparse.Namespace
) -> tuple[float, float, float, float, Counter[str], Counter[str]]:
    url = cluster.create_database()
    procs: list[subprocess.Popen[str]] = []
    try:
        with psycopg.connect(url) as conn:
            migrate(conn)
        case = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=work))
        for name, text in (
            ("catalog.toml", CATALOG),
            ("prices.toml", PRICES),
            ("policy.csv", POLICY),
        ):
            (case / name).write_text(text, encoding="utf-8")
        pki_args = ["--pki", str(case / "pki")]
        config = _config(case, "127.0.0.1:0", url, _free_port())  # department set below
        dept, dept_addr = _procs.start(["-m", "bench._department", *pki_args])
        procs.append(dept)
        config.write_text(
            config.read_text(encoding="utf-8").replace("127.0.0.1:0", dept_addr), encoding="utf-8"
        )
        _seed_pg_policy(case, url)
        proxy_port = _free_port()
        proxy_addr = f"127.0.0.1:{proxy_port}"
        proxies = []
        for _ in range(n):
            proxy, _addr = _procs.start(
                ["-m", "bench._proxy", "--upstream", dept_addr, "--listen", proxy_addr,
                 "--reuseport", *pki_args]
            )  # fmt: skip
            proxies.append(proxy)
            procs.append(proxy)
        gw = _serve(config, n)
        procs.append(gw)
        gw_addr = config.read_text(encoding="utf-8").split('listen = "', 1)[1].split('"', 1)[0]
        gw_pids = _tree(gw.pid)
        if len(gw_pids) != (n + 1 if n > 1 else 1):
            raise RuntimeError(f"expected {n} workers under the supervisor, found {gw_pids[1:]}")

        from gateway.dev.pki import load_pki

        pki = load_pki(case / "pki")
        tls = (
            pki.ca_cert.read_bytes(),
            pki.agency_key("ndrc").read_bytes(),
            pki.agency_cert("ndrc").read_bytes(),
        )
        metadata = (("authorization", f"Bearer {_mint(pki)}"),)
        lookup = adapter_pb2.LookupRequest(request_id="bench", agency_id="bench", purpose="lending")
        lookup.subject.type, lookup.subject.id = 1, SUBJECT
        lookup.wanted.add(dataset="profile", fields=["name", "rating"])
        query = build_request(enterprise=SUBJECT, purpose="administrative_licensing")
        bare: list[tuple[float, float]] = []
        gate: list[tuple[float, float]] = []
        bare_failed: Counter[str] = Counter()
        gate_failed: Counter[str] = Counter()
        for _ in range(args.rounds):
            bare.append(
                _measure([p.pid for p in proxies], proxy_addr, LOOKUP,
                         lookup.SerializeToString(), metadata, args, tls, bare_failed)
            )  # fmt: skip
            gate.append(
                _measure(gw_pids, gw_addr, QUERY, fresh_ids(query), metadata, args, tls,
                         gate_failed)
            )  # fmt: skip
    finally:
        _procs.stop(*reversed(procs))
        cluster.drop_database(url)

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    return (
        med(bare, 0), med(gate, 0), med(bare, 1), med(gate, 1), bare_failed, gate_failed,
    )  # fmt: skip


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 1 if any answer was not OK, 3 without PostgreSQL."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4", help="comma-separated process counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight in all")
    p.add_argument("--connections", type=int, default=8, help="connections they spread over")
    p.add_argument(
        "--no-fsync", action="store_true", help="PostgreSQL with fsync and synchronous_commit off"
    )
    args = p.parse_args(argv)
    # A SIGTERM (a timeout, a test runner) unwinds as an exception: the finally blocks stop
    # the helper processes and the throwaway cluster instead of orphaning them.
    signal.signal(signal.SIGTERM, _terminated)
    counts = [int(x) for x in args.workers.split(",")]
    try:
        cluster = start_cluster(durable=not args.no_fsync)
    except ClusterUnavailable as exc:
        print(f"NOT RUN: no PostgreSQL cluster ({exc})")
        return 3
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in counts:
                rows.append((n, *_case(n, cluster, Path(tmp), args)))
    finally:
        cluster.stop()
    disk = (
        "fsync=off, synchronous_commit=off" if args.no_fsync else "fsync=on, synchronous_commit=on"
    )
    print(
        "one-department query, mutual TLS + bound token, every store on PostgreSQL "
        f"({disk}), durable audit log, free-quota ledger, live controls, replay store, "
        f"limits checked (never binding), a new request id per query; concurrency "
        f"{args.concurrency} over {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds:g}s (medians)"
    )
    print(
        f"{'N':>3}{'bare q/s':>10}{'gateway q/s':>13}{'ratio':>7}"
        f"{'bare CPU us/q':>15}{'gateway CPU us/q':>18}"
    )
    bad = False
    for n, bq, gq, bc, gc, bf, gf in rows:
        print(f"{n:>3}{bq:10.0f}{gq:13.0f}{gq / bq:7.2f}{bc:15.0f}{gc:18.0f}")
        if bf or gf:
            bad = True
            print(f"    not OK at N={n}: bare {dict(bf)}; gateway {dict(gf)}")
    if bad:
        for code, message in sorted(_FIRST.items()):
            print(f"    first {code}: {message}")
        print("NOT VALID: some answers were not OK; the figures above count only OK answers")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
