"""A gateway-like process appending to the shared audit log on PostgreSQL, for the
many-process tests and bench/audit_pg_bench.py.

    python -m tests.integration.audit_pg_writer URL SIGNER_KEY_FILE OUT_FILE \\
        --seconds S [--count N] [--concurrency C]

Prints ``ready`` once the log is open (then, with ``--wait-go``, waits for a line on
standard input), then appends from C tasks until N records or S
seconds, writing each receipt as a JSON line (``index``, ``leaf_hash`` hex, ``n``)
flushed at once, so a process killed mid-load leaves every receipt it was handed.
Prints ``done <appends> <seconds>`` after closing. The identity of the process in
``audit_tree.integrator`` is ``host:pid``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

from gateway.audit.note import Ed25519Signer
from gateway.audit.shared import SharedAuditLog
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.postgres.url import PgTarget


async def _main(args: argparse.Namespace) -> None:
    signer = Ed25519Signer.from_file(args.key)
    identity = f"{socket.gethostname()}:{os.getpid()}"
    store = PostgresAuditStore(
        PgTarget(args.url, application_name="audit-writer"), identity=identity
    )
    log = await SharedAuditLog.open_shared(
        store, signer, checkpoint_interval=args.checkpoint_interval
    )
    print("ready", flush=True)
    if args.wait_go:  # start together with the other processes (the benchmark)
        await asyncio.to_thread(sys.stdin.readline)
    out = Path(args.out).open("a", encoding="utf-8")  # noqa: ASYNC230, SIM115 - closed below
    deadline = time.monotonic() + args.seconds
    counter = iter(range(args.count))
    started = time.perf_counter()
    done = 0

    async def worker() -> None:
        nonlocal done
        for n in counter:
            if time.monotonic() > deadline:
                return
            record = {"kind": "query", "agency_id": f"bank-{n % 7}", "pid": os.getpid(), "n": n}
            receipt = await log.append(record)
            out.write(
                json.dumps({"index": receipt.index, "leaf_hash": receipt.leaf_hash.hex(), "n": n})
                + "\n"
            )
            out.flush()
            done += 1

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    await log.close()
    out.close()
    print(f"done {done} {elapsed:.3f}", flush=True)


def main() -> None:
    """Parse the command line and run (see the module)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=10**9)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--checkpoint-interval", type=float, default=1.0)
    parser.add_argument("--wait-go", action="store_true", help="start on a line on stdin")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
