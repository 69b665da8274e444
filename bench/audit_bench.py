"""Audit log throughput: durable appends/s (group commit) and verification records/s.

Run ``python -m bench.audit_bench [--records N] [--runs R]``. Every append is
committed with ``synchronous=FULL`` before it returns, so the figures include
the fsync of each batch. Prints the median of R runs for each case; targets:
>= 5,000 appends/s at 128 writers, >= 50,000 records/s verified.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from gateway.audit.log import AuditLog
from gateway.audit.note import Ed25519Signer, Verifier, generate_key
from gateway.audit.verify import verify_log
from gateway.stores.sqlite.audit import SQLiteStore

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
        rates = []
        for _ in range(args.runs):
            store = SQLiteStore(path, read_only=True)
            start = time.perf_counter()
            report = verify_log(store, verifiers)
            rates.append(report.size / (time.perf_counter() - start))
            store.close()
        print(
            f"verified records/s ({report.size:,} records): {statistics.median(rates):10,.0f}"
            f"  (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
