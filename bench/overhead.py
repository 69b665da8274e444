"""Gateway overhead against a bare grpc.aio pass-through proxy.

Both stand in front of the same trivial department (bench/_department.py), in
their own processes; one load generator drives each in turn with the same
concurrency, alternating rounds so that a noisy neighbour hurts both alike.
Printed: medians of throughput and of server CPU time per query, and the
gateway/bare ratios. Not a test: nothing here asserts a time.

    python -m bench.overhead [--rounds 3] [--seconds 4] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from bench import _procs
from bench._department import CATALOG
from gateway.client import build_request
from protos.credit.v1 import adapter_pb2

SUBJECT = "91350200MA2YJ1XR9G"


async def _drive(
    address: str,
    method: str,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    seconds: float,
) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method)
        for _ in range(20):  # warm up the connection and both servers
            await call(payload, metadata=metadata, timeout=10)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await call(payload, metadata=metadata, timeout=10)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done


def _measure(
    pid: int,
    address: str,
    method: str,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    seconds: float,
) -> tuple[float, float]:
    cpu0 = _procs.cpu_seconds(pid)
    t0 = time.perf_counter()
    n = asyncio.run(_drive(address, method, payload, metadata, concurrency, seconds))
    elapsed = time.perf_counter() - t0
    cpu = _procs.cpu_seconds(pid) - cpu0
    return n / elapsed, cpu / n * 1e6  # queries/s, CPU microseconds per query


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)

    lookup = adapter_pb2.LookupRequest(request_id="bench", agency_id="bench", purpose="lending")
    lookup.subject.type, lookup.subject.id = 1, SUBJECT
    lookup.wanted.add(dataset="profile", fields=["name", "rating"])
    query = build_request(enterprise=SUBJECT, purpose="administrative_licensing")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "catalog.toml").write_text(CATALOG, encoding="utf-8")
        dept, dept_addr = _procs.start(["-m", "bench._department"])
        proxy, proxy_addr = _procs.start(["-m", "bench._proxy", "--upstream", dept_addr])
        (work / "gateway.toml").write_text(
            f'[gateway]\nlisten = "127.0.0.1:0"\ninsecure_dev_plaintext = true\n'
            f'catalog = "{work / "catalog.toml"}"\n'
            f'[departments.bench]\naddress = "{dept_addr}"\n',
            encoding="utf-8",
        )
        gw, gw_addr = _procs.start(
            [
                "-m",
                "gateway.cli",
                "--log-level",
                "WARNING",
                "serve",
                "--config",
                str(work / "gateway.toml"),
            ],
            ready="serving on",
        )
        try:
            bare: list[tuple[float, float]] = []
            gate: list[tuple[float, float]] = []
            for _ in range(args.rounds):
                bare.append(
                    _measure(
                        proxy.pid,
                        proxy_addr,
                        "/credit.v1.DepartmentAdapter/Lookup",
                        lookup.SerializeToString(),
                        (),
                        args.concurrency,
                        args.seconds,
                    )
                )
                gate.append(
                    _measure(
                        gw.pid,
                        gw_addr,
                        "/credit.v1.QueryService/Query",
                        query.SerializeToString(),
                        (("x-dev-agency-id", "bench"),),
                        args.concurrency,
                        args.seconds,
                    )
                )
        finally:
            _procs.stop(gw, proxy, dept)

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    print(
        f"one-department query, concurrency {args.concurrency}, "
        f"{args.rounds} rounds of {args.seconds:g}s"
    )
    print(f"{'':10}{'queries/s':>12}{'CPU us/query':>15}")
    print(f"{'bare':10}{med(bare, 0):12.0f}{med(bare, 1):15.0f}")
    print(f"{'gateway':10}{med(gate, 0):12.0f}{med(gate, 1):15.0f}")
    print(
        f"ratio gateway/bare: throughput {med(gate, 0) / med(bare, 0):.2f}, "
        f"CPU per query {med(gate, 1) / med(bare, 1):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
