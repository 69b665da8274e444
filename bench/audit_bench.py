"""Audit log throughput: durable appends/s (group commit) and verification records/s.

Run ``python -m bench.audit_bench [--records N] [--runs R]``. Every append is
committed with ``synchronous=FULL`` before it returns, so the figures include
the fsync of each batch. Prints the median of R runs for each case; targets:
>= 5,000 appends/s at 128 writers, >= 100,000 records/s verified (issue 13).
Verification is measured on small records and on a log of seven-department
query records (``--verify-records``, default 100,000), in one process and in
one worker process per CPU: parsing those records is what bounds it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

from gateway.audit.log import AuditLog
from gateway.audit.note import Ed25519Signer, Verifier, generate_key
from gateway.audit.records import canonical_json
from gateway.audit.store import SQLiteStore
from gateway.audit.verify import MAX_WORKERS, verify_log
from gateway.domain.catalog import Catalog, load_catalog

ORIGIN = "bench.credit-gateway/audit"


def _record(w: int, i: int) -> dict[str, object]:
    return {
        "kind": "query",
        "agency_id": f"bank-{w % 17:03d}",
        "purpose": "lending",
        "time": "2025-03-01T08:00:00Z",
        "subject_pseudonym": f"{w * 1_000_003 + i:064x}",
        "request_id": f"req-{w}-{i}",
        "departments": ["tax", "court", "market"],
        "charge_fen": 300,
    }


def _query_record(i: int) -> dict[str, object]:
    """A seven-department query record as the gateway writes it (some 4 KB of
    canonical JSON: sections, withheld fields with reasons, billing lines)."""
    departments: dict[str, object] = {}
    lines = []
    for n, (dept_id, dept) in enumerate(sorted(_catalog().departments.items())):
        datasets = sorted(dept.datasets)
        shown = datasets[: 1 + (i + n) % 2]
        departments[dept_id] = {
            "aged_out": 0,
            "datasets": shown,
            "fields": {ds: sorted(dept.datasets[ds].fields)[:4] for ds in shown},
            "records": (i + n) % 3,
            "status": "ok",
            "withheld": [
                {"dataset": ds, "field": f, "reason": "not_granted"}
                for ds in datasets[len(shown) :]
                for f in sorted(dept.datasets[ds].fields)[:3]
            ],
        }
        lines.append({"amount_fen": 200, "dataset": shown[0], "department": dept_id})
    return {
        "agency_id": f"bank-{i % 17:03d}",
        "billing": {"basis": "paid", "charged_fen": 200 * len(lines), "lines": lines},
        "cert_thumbprint": "LleoXWjSTIn7Y2-70ylSURIioMsDEcI08WGXgipdhRc",
        "departments": departments,
        "kind": "query",
        "mode": "paid",
        "outcome": "ok",
        "purpose": "lending",
        "request_id": f"00000000-0000-4000-8000-{i:012x}",
        "subject_pseudonym": f"{i * 7_919:064x}",
        "subject_type": "enterprise",
        "time": "2026-11-30T08:00:00.000Z",
    }


@functools.cache
def _catalog() -> Catalog:
    return load_catalog()


async def _fill(path: Path, signer: Ed25519Signer, total: int) -> None:
    log = await AuditLog.open(path, signer)

    async def writer(w: int) -> None:
        for i in range(w, total, 64):
            await log.append(_query_record(i))

    await asyncio.gather(*(writer(w) for w in range(64)))
    await log.close()


def _verify_rates(path: Path, verifiers: list[Verifier], runs: int, workers: int) -> list[float]:
    rates = []
    for _ in range(runs):
        store = SQLiteStore(path, read_only=True)
        start = time.perf_counter()
        report = verify_log(store, verifiers, workers=workers)
        rates.append(report.size / (time.perf_counter() - start))
        store.close()
    return rates


async def _append_run(path: Path, signer: Ed25519Signer, writers: int, total: int) -> float:
    log = await AuditLog.open(path, signer)
    per = max(1, total // writers)

    async def writer(w: int) -> None:
        for i in range(per):
            await log.append(_record(w, i))

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - start
    await log.close()
    return per * writers / elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="appends per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--verify-records", type=int, default=100_000, help="query records in the verified log"
    )
    args = parser.parse_args(argv)
    skey, vkey = generate_key(ORIGIN)
    signer = Ed25519Signer.from_key_string(skey)
    verifiers = [Verifier.from_key_string(vkey)]
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        for writers in (1, 16, 128):
            # One writer waits for every fsync alone: fewer records keep it short.
            total = args.records // 10 if writers == 1 else args.records
            rates = []
            for run in range(args.runs):
                path = Path(tmp) / f"w{writers}-{run}.db"
                rates.append(asyncio.run(_append_run(path, signer, writers, total)))
            print(
                f"durable appends/s, {writers:3d} writers: {statistics.median(rates):10,.0f}"
                f"  (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
            )
        path = Path(tmp) / "w128-0.db"
        rates = _verify_rates(path, verifiers, args.runs, 1)
        print(
            f"verified records/s, small records, 1 process: {statistics.median(rates):10,.0f}"
            f"  (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )
        # Real query records are some 20x larger; parsing them dominates (CPU-bound).
        path = Path(tmp) / "queries.db"
        asyncio.run(_fill(path, signer, args.verify_records))
        size = len(canonical_json(_query_record(0)))
        cpus = os.cpu_count() or 1
        for workers in sorted({1, min(cpus, MAX_WORKERS)}):
            rates = _verify_rates(path, verifiers, args.runs, workers)
            print(
                f"verified records/s, seven-department query records (~{size // 1000} KB), "
                f"{workers} process(es): {statistics.median(rates):10,.0f}"
                f"  (runs: {', '.join(f'{r:,.0f}' for r in rates)}; {cpus} CPUs)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
