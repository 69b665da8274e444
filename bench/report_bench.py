"""Signed credit reports: what a report costs on top of the query it is made from.

Run ``python -m bench.report_bench [--n N]``. A script, not a test. It starts the local
federation (real departments over mutual TLS, the real gateway, audit log and ledger) and,
in one run, sends N plain queries and N reports (sequentially, the same subject and
purpose, one fresh request id each), then times the offline parts alone: building,
signing and rendering one report (``ReportMaker.make``) and checking it
(``check_report``). Prints medians and the ratio report/query. A report waits for the
next signed checkpoint (at most one second; the log signs one every second or 256
entries), which dominates its latency when queries are sparse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from gateway.audit.note import load_verifiers
from gateway.audit.reportcheck import check_report
from gateway.cli.connect import build_request
from gateway.dev.devstack import DevStack
from gateway.report import ReportMaker, find_font


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def _run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with await DevStack.create(Path(tmp) / "stack", subjects=200) as stack:
            enterprise = str(stack.subjects["enterprise_all_departments"]["id"])
            verifiers = load_verifiers(stack.audit["verifier_key"])
            queries: list[float] = []
            reports: list[float] = []
            sizes: list[int] = []
            last = None
            async with stack.client("ndrc") as client:
                for kind, samples in (("query", queries), ("report", reports)):
                    for _ in range(n + 2):  # the first two warm up
                        request = build_request(
                            enterprise=enterprise, purpose="supervision_inspection"
                        )
                        started = time.perf_counter()
                        if kind == "query":
                            await client.send(request)
                        else:
                            last = await client.report(request)
                            sizes.append(len(last.pdf))
                        samples.append(time.perf_counter() - started)
                    del samples[:2]
            assert last is not None and stack.gateway._audit is not None
            content = check_report(last.pdf, verifiers).content
            maker = ReportMaker(stack.gateway._audit.log.signer, find_font())
            proof = json.loads(last.json)["proof"]
            make: list[float] = []
            check: list[float] = []
            for _ in range(n):
                started = time.perf_counter()
                made = maker.make(content, proof)
                make.append(time.perf_counter() - started)
                started = time.perf_counter()
                check_report(made.pdf, verifiers)
                check.append(time.perf_counter() - started)
    print(f"{n} each, sequential, one agency, all enterprise departments")
    print(f"query            median {_ms(queries):8.1f} ms")
    ratio = _ms(reports) / _ms(queries)
    print(f"report (RPC)     median {_ms(reports):8.1f} ms   ratio report/query {ratio:.1f}")
    print(f"  make (sign + render PDF)  median {_ms(make):6.1f} ms")
    print(f"  check-report (offline)    median {_ms(check):6.1f} ms")
    print(f"  PDF size                  median {statistics.median(sizes) / 1024:6.1f} KiB")


def main(argv: list[str] | None = None) -> None:
    """Parse ``--n`` and run the benchmark (prints; returns nothing)."""
    p = argparse.ArgumentParser(prog="python -m bench.report_bench", description=__doc__)
    p.add_argument("--n", type=int, default=20, help="queries and reports each (default 20)")
    asyncio.run(_run(p.parse_args(argv).n))


if __name__ == "__main__":
    main()
