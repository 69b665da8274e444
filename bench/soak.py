"""Memory over a long run (issue 13): the gateway's resident memory after 10k, 100k
and 1M queries, with everything a deployment runs (mutual TLS, bound tokens, live
checks, durable audit log, free-quota ledger), as in bench.overhead.

Every query has a new request id; subjects cycle through ``--subjects`` distinct
enterprises and a new agency token is minted every ``--token-every`` queries, so
every per-subject, per-request and per-token structure (verified tokens, the replay
store, compiled decisions, rate-limit counters, metric label children) is fed as an
agency's real traffic would feed it. Memory is flat when the figures stop growing
after warm-up.

    python -m bench.soak [--queries 1000000] [--subjects 100000] [--concurrency 32]

Prints one line per mark: queries done, resident memory (VmRSS) of the gateway
process in MiB and its two parts, anonymous (the process's own: heaps, caches) and
file-backed (shared libraries; no store maps its file), and queries/s since the last
mark; then the curve's verdict on each: the growth from the end of warm-up
(``--warmup``, 300,000 queries) to the end, per 100,000 queries, and the elapsed
time. Warm-up ends when the caches are full, and the largest fills last: the subject
index's SQLite page cache (32 MiB, ``PRAGMA cache_size`` in gateway/subject/index.py),
whose inserts land all over its subject-ordered B-tree, grows until the index file
outgrows it, about 250,000 one-department queries (the Python heap's objects, counted
by type at 100,000 and 200,000 queries, stay within 1%). ``make bench`` runs it with
1,000,000 queries (30 minutes alone on two cores at 550-650 queries/s; about an hour
beside other work). Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from bench import _procs
from bench._department import CATALOG, POLICY, PRICES
from bench.overhead import _channel, _gateway_toml, _mint, _seed_policy_store
from gateway.cli.connect import build_request
from gateway.dev.devstack import ensure_audit_keys
from gateway.dev.pki import init_pki
from gateway.domain.identifiers import uscc_check_char

MARKS = (
    1_000, 10_000, 50_000, 100_000, 200_000, 300_000, 400_000,
    500_000, 600_000, 750_000, 900_000, 1_000_000,
)  # fmt: skip


def subject(n: int) -> str:
    """The ``n``-th synthetic enterprise: a valid unified social credit code."""
    body = f"91350200{n % 10**9:09d}"
    return body + uscc_check_char(body)


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux /proc)."""
    return _status(pid)["VmRSS"]


def _status(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of ``pid`` in MiB (Linux /proc; NaN if absent)."""
    out = dict.fromkeys(("VmRSS", "RssAnon", "RssFile"), float("nan"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in out:
            out[key] = int(value.split()[0]) / 1024
    return out


async def _run(
    address: str, tls: tuple[bytes, bytes, bytes], pid: int, args: argparse.Namespace, mint: Any
) -> Counter[str]:
    failed: Counter[str] = Counter()
    curve: list[tuple[int, dict[str, float]]] = [(0, _status(pid))]
    marks = [m for m in MARKS if m <= args.queries] + (
        [args.queries] if args.queries not in MARKS else []
    )
    done = 0
    issued = 0
    token = mint()
    last_mark, last_t = 0, time.perf_counter()
    print(f"{'queries':>10}{'RSS MiB':>10}{'anon':>8}{'file':>8}{'queries/s':>12}", flush=True)
    async with _channel(address, tls) as channel:
        call = channel.unary_unary("/credit.v1.QueryService/Query")

        async def worker() -> None:
            nonlocal done, issued, token, last_mark, last_t
            while issued < args.queries:
                n = issued
                issued += 1
                if n and n % args.token_every == 0:
                    token = mint()
                req = build_request(
                    enterprise=subject(n % args.subjects),
                    purpose="administrative_licensing",
                    request_id=str(uuid.uuid4()),
                )
                try:
                    await call(
                        req.SerializeToString(),
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=30,
                    )
                except grpc.aio.AioRpcError as err:
                    failed[err.code().name] += 1
                done += 1
                if marks and done >= marks[0]:
                    mark = marks.pop(0)
                    now = time.perf_counter()
                    rate = (done - last_mark) / max(now - last_t, 1e-9)
                    last_mark, last_t = done, now
                    st = _status(pid)
                    curve.append((mark, st))
                    print(
                        f"{mark:>10,}{st['VmRSS']:>10.1f}{st['RssAnon']:>8.1f}"
                        f"{st['RssFile']:>8.1f}{rate:>12.0f}",
                        flush=True,
                    )

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    _verdict(curve, args.warmup)
    return failed


def _verdict(curve: list[tuple[int, dict[str, float]]], warmup: int) -> None:
    """Print the growth after warm-up of each measure: what "flat" is judged on."""
    after = [(n, st) for n, st in curve if n >= warmup]
    if len(after) < 2:
        print(f"curve: too short to judge (warm-up is {warmup:,} queries)")
        return
    (n0, s0), (n1, s1) = after[0], after[-1]
    for key, name in (("VmRSS", "resident"), ("RssAnon", "anonymous"), ("RssFile", "file")):
        r0, r1 = s0[key], s1[key]
        per_100k = (r1 - r0) / (n1 - n0) * 100_000
        print(
            f"{name}: {r0:.1f} MiB at {n0:,} -> {r1:.1f} MiB at {n1:,} queries: "
            f"{r1 - r0:+.1f} MiB after warm-up ({per_100k:+.2f} MiB per 100,000 queries; "
            f"peak {max(st[key] for _, st in after):.1f} MiB)"
        )


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 1 if any answer was not OK."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=1_000_000)
    p.add_argument("--subjects", type=int, default=100_000)
    p.add_argument("--token-every", type=int, default=1_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--warmup", type=int, default=300_000, help="queries of warm-up")
    args = p.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "catalog.toml").write_text(CATALOG, encoding="utf-8")
        (work / "prices.toml").write_text(PRICES, encoding="utf-8")
        (work / "policy.csv").write_text(POLICY, encoding="utf-8")
        pki = init_pki(
            work / "pki", departments=["bench"], agencies=["ndrc"], officers=[], auditors=[]
        )
        tls = (
            pki.ca_cert.read_bytes(),
            pki.agency_key("ndrc").read_bytes(),
            pki.agency_cert("ndrc").read_bytes(),
        )
        audit = ensure_audit_keys(work / "audit")
        dept, dept_addr = _procs.start(["-m", "bench._department", "--pki", str(work / "pki")])
        (work / "gateway.toml").write_text(
            _gateway_toml(work, dept_addr, pki, audit, True), encoding="utf-8"
        )
        _seed_policy_store(work)
        try:
            gw, gw_addr = _procs.start(
                ["-m", "bench._gateway", "--config", str(work / "gateway.toml")],
                ready="serving on",
            )
        except BaseException:
            _procs.stop(dept)
            raise
        try:
            print(
                f"soak: {args.queries:,} one-department queries, {args.subjects:,} subjects, "
                f"a new token every {args.token_every:,}, concurrency {args.concurrency}; "
                f"gateway RSS at start {rss_mib(gw.pid):.1f} MiB"
            )
            failed = asyncio.run(_run(gw_addr, tls, gw.pid, args, lambda: _mint(pki)))
        finally:
            _procs.stop(gw, dept)
    print(f"soak took {time.perf_counter() - started:.0f} s")
    if failed:
        print("not OK: " + ", ".join(f"{n} {c}" for c, n in sorted(failed.items())))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
