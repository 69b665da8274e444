"""The shared stores on PostgreSQL against the embedded SQLite ones, measured in one run.

Run ``python -m bench.stores_bench [--queries N] [--trials N]``. A script, not a test. It
starts a throwaway PostgreSQL cluster (tests/pg.py: Unix socket, ``fsync=off``, so the
PostgreSQL figures are bound by statements and round trips, not by the disk; SQLite runs
with its production ``synchronous=FULL``). Reports medians over ``--trials``:

* rate limits, microseconds per admitted query: per-process buckets; a shared budget on
  SQLite and on PostgreSQL leasing chunks (the default ``lease_s`` of 0.1 s at 2,000
  queries a second: 200 tokens per statement); and PostgreSQL with one statement per
  query (chunks of 1), which is what leasing saves;
* the ledger, paid queries per second (reserve, then settle) with 64 in flight through
  :class:`~gateway.billing.ledger.AsyncLedger`: SQLite with group commit, PostgreSQL with
  one transaction per call on the pool's worker threads;
* the ledger under free queries as the gateway runs them (:class:`~gateway.billing.Meter`
  with an audit log to read back: reserve, settle, then ``recorded`` once the query
  record would be durable), 64 in flight: queries per second and this process's CPU
  microseconds per query (the PostgreSQL server's own CPU is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

from gateway.billing import Meter, parse_prices
from gateway.billing.ledger import AsyncLedger, LedgerStore, PricedLine, ReserveSpec
from gateway.pipeline.limits import AgencyLimit, Limits, RateLimiter, SharedBudget
from gateway.stores.postgres.connect import PgTarget, open_pool
from gateway.stores.postgres.ledger import PostgresLedger
from gateway.stores.postgres.limits import PostgresRateBudget
from gateway.stores.sqlite.ledger import SQLiteLedger
from gateway.stores.sqlite.limits import SQLiteRateBudget
from tests.pg import fresh_database, start_cluster

LIMITS = Limits(
    AgencyLimit(2_000.0, 2_000, None), MappingProxyType({}), ZoneInfo("Asia/Shanghai"), "b"
)


def _admit_us(limiter: RateLimiter, n: int) -> float:
    """Microseconds per admission; the agency changes every 1,000 queries so that no
    bucket runs dry (this measures cost, not refusals)."""
    run_id = uuid.uuid4().hex[:8]  # fresh buckets for every trial
    start = time.perf_counter()
    for i in range(n):
        limiter.admit(f"{run_id}-{i // 1000}", "lending")
    return (time.perf_counter() - start) / n * 1e6


def _limits(url: str, root: Path, n: int, trials: int) -> dict[str, float]:
    def run(make: Callable[[], SharedBudget | None], lease_s: float = 0.1) -> float:
        out = []
        for _ in range(trials):
            budget = make()
            out.append(_admit_us(RateLimiter(LIMITS, budget=budget, lease_s=lease_s), n))
            if budget is not None:
                budget.close()
        return statistics.median(out)

    return {
        "per process": run(lambda: None),
        "SQLite, leased": run(lambda: SQLiteRateBudget(root / f"{uuid.uuid4().hex}.db")),
        "PostgreSQL, leased": run(lambda: PostgresRateBudget(open_pool(PgTarget(url)))),
        "PostgreSQL, 1 per query": run(
            lambda: PostgresRateBudget(open_pool(PgTarget(url))), lease_s=1e-9
        ),
    }


async def _paid_per_s(store: LedgerStore, n: int, in_flight: int = 64) -> float:
    ledger = AsyncLedger(store)
    now = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:8]
    await ledger.run(store.top_up, "bank", 10**11, f"bench-{run_id}", now, create=True)
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            rid = f"{run_id}-{i}"
            spec = ReserveSpec(rid, "bank", "paid", (PricedLine("d", "s", 100),), "x", now)
            await ledger.run(store.reserve, spec)
            await ledger.run(store.settle, rid, frozenset({("d", "s")}), now)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    await ledger.close()
    return n / elapsed


#: A price list whose free quota never binds (this measures cost, not refusals).
FREE_PRICES = {
    "version": "bench",
    "timezone": "Asia/Shanghai",
    "free": {"daily_quota": 10**9},
    "self_query": {"free_per_year": 2},
    "prices": {"d": {"s": 100}},
}


async def _no_records(bookings: object) -> dict[tuple[str, str], list[dict[str, object]]]:
    return {}  # start-up recovery's audit look-up; nothing to recover in a fresh ledger


async def _free_per_s(store: LedgerStore, n: int, in_flight: int = 64) -> tuple[float, float]:
    """Free queries per second and this process's CPU microseconds per query."""
    meter = Meter(AsyncLedger(store), parse_prices(FREE_PRICES), audit_lookup=_no_records)
    run_id = uuid.uuid4().hex[:8]
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            res = await meter.reserve(
                request_id=f"{run_id}-{i}",
                agency_id=f"agency-{i % 16}",
                mode="free",
                lines=[("d", "s")],
                today=today,
            )
            await meter.settle(res, [("d", "s")])
            meter.recorded(res)  # the query record is durable

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    await meter.ledger.run(lambda: None)  # the last bookings landed
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    await meter.close()
    return n / elapsed, cpu_s / n * 1e6


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    cluster = start_cluster()
    try:
        with fresh_database(cluster) as url, tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            per = _limits(url, root, args.queries * 5, args.trials)
            base = per["per process"]
            print("rate limits: microseconds per admitted query (median)")
            for name, us in per.items():
                print(f"  {name:<26} {us:8.2f} us   x{us / base:6.1f}")
            sqlite = statistics.median(
                asyncio.run(_paid_per_s(SQLiteLedger(root / f"l{i}.db"), args.queries))
                for i in range(args.trials)
            )
            pg = statistics.median(
                asyncio.run(
                    _paid_per_s(PostgresLedger(open_pool(PgTarget(url), max_size=8)), args.queries)
                )
                for _ in range(args.trials)
            )
            print("ledger: paid queries per second (reserve + settle, 64 in flight, median)")
            print(f"  SQLite, group commit       {sqlite:8.0f} /s")
            print(f"  PostgreSQL, 8 workers      {pg:8.0f} /s   x{pg / sqlite:5.2f}")
            free = {
                "SQLite, group commit": [
                    asyncio.run(_free_per_s(SQLiteLedger(root / f"f{i}.db"), args.queries))
                    for i in range(args.trials)
                ],
                "PostgreSQL, 8 workers": [
                    asyncio.run(
                        _free_per_s(
                            PostgresLedger(open_pool(PgTarget(url), max_size=8)), args.queries
                        )
                    )
                    for _ in range(args.trials)
                ],
            }
            print(
                "ledger: free queries (reserve, settle, recorded; 64 in flight, median):"
                " per second, this process's CPU per query"
            )
            for name, runs in free.items():
                qps = statistics.median(r[0] for r in runs)
                us = statistics.median(r[1] for r in runs)
                print(f"  {name:<26} {qps:8.0f} /s {us:8.0f} us")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
