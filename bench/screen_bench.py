"""Screening throughput against plain queries, on the same federation in one run.

Run ``python -m bench.screen_bench [--subjects N] [--concurrency C] [--rounds R]``. A
script, not a test; it asserts nothing. It starts one development federation (real
department processes over mutual TLS, the real gateway with its durable audit log and
ledger), then, per round and in turn:

* **query**: N ``Query`` calls (procurement, government_procurement, every dataset), C at
  a time;
* **screen**: N single ``Screen`` calls (government_procurement), C at a time;
* **batch**: one ``ScreenBatch`` of N subjects (the gateway screens 32 at a time).

It prints subjects per second for each (the median over rounds) and the ratios screen/query
and batch/query measured in that same run. Non-OK answers are counted and printed (the
bench's own price list lifts the free quotas, so there should be none). A query asks all
seven departments for every granted dataset; a screen asks four for the public fields of
their list datasets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from gateway.dev.devstack import DevStack
from gateway.domain.files import policies_path
from gateway.identifiers import uscc_check_char
from protos.credit.v1 import common_pb2, query_pb2, screening_pb2, screening_pb2_grpc


def _uscc(n: int) -> str:
    body = f"91350200MA{n:07d}"
    return body + uscc_check_char(body)


async def _pool(n: int, concurrency: int, one: object) -> tuple[float, int]:
    indices = iter(range(n))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in indices:
            try:
                await one(i)  # type: ignore[operator]
            except Exception:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, failures


async def run(subjects: int, concurrency: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Quotas that never bind: the bench measures work, not refusals.
        text = policies_path("prices.toml").read_text(encoding="utf-8")
        text = text.replace("procurement = 20000", "procurement = 100000000")
        text = text.replace("procurement = 500", "procurement = 100000000")
        prices = Path(tmp) / "prices.toml"
        prices.write_text(text, encoding="utf-8")
        async with await DevStack.create(
            Path(tmp) / "stack", subjects=2_000, prices_file=prices
        ) as stack:
            codes = [str(s["id"]) for s in stack.subjects.values() if s["type"] == "enterprise"]
            codes += [_uscc(i) for i in range(subjects)]
            codes = codes[:subjects]
            channel, md = stack.channel("agencies", "procurement")
            screening = screening_pb2_grpc.ScreeningServiceStub(channel)
            client = stack.client("procurement")

            def ent(i: int) -> common_pb2.Subject:
                return common_pb2.Subject(
                    type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=codes[i % len(codes)]
                )

            async def query(i: int) -> None:
                await client.send(
                    query_pb2.QueryRequest(
                        request_id=str(uuid.uuid4()),
                        subject=ent(i),
                        purpose="government_procurement",
                        mode=query_pb2.QUERY_MODE_FREE,
                    ),
                    timeout=30,
                )

            async def screen(i: int) -> None:
                await screening.Screen(
                    screening_pb2.ScreenRequest(
                        request_id=str(uuid.uuid4()),
                        subject=ent(i),
                        scenario="government_procurement",
                        purpose="government_procurement",
                        mode=query_pb2.QUERY_MODE_FREE,
                    ),
                    metadata=md,
                    timeout=30,
                )

            async def batch() -> tuple[float, int]:
                request = screening_pb2.ScreenBatchRequest(
                    batch_id=str(uuid.uuid4()),
                    scenario="government_procurement",
                    purpose="government_procurement",
                    mode=query_pb2.QUERY_MODE_FREE,
                    subjects=[ent(i) for i in range(subjects)],
                )
                started = time.perf_counter()
                errors = 0
                async for item in screening.ScreenBatch(request, metadata=md, timeout=600):
                    errors += item.WhichOneof("outcome") == "error"
                return time.perf_counter() - started, errors

            rates: dict[str, list[float]] = {"query": [], "screen": [], "batch": []}
            bad: dict[str, int] = {"query": 0, "screen": 0, "batch": 0}
            await _pool(50, concurrency, screen)  # warm up channels and caches
            await _pool(50, concurrency, query)
            for _ in range(rounds):
                for name, fn in (
                    ("query", lambda: _pool(subjects, concurrency, query)),
                    ("screen", lambda: _pool(subjects, concurrency, screen)),
                    ("batch", batch),
                ):
                    elapsed, failures = await fn()
                    rates[name].append(subjects / elapsed)
                    bad[name] += failures
            await channel.close()
            await client.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"subjects {subjects}, concurrency {concurrency}, rounds {rounds} (medians)")
    for name in ("query", "screen", "batch"):
        print(f"  {name:<7} {med[name]:8.1f} subjects/s   non-OK {bad[name]}")
    print(f"  screen/query {med['screen'] / med['query']:.2f}")
    print(f"  batch/query  {med['batch'] / med['query']:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    asyncio.run(run(args.subjects, args.concurrency, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
