"""The shared audit log on PostgreSQL: durable appends/s with 1, 2 and 4 writer
processes, and the cost of following the tree (opening a log of N entries).

Run ``python -m bench.audit_pg_bench [--seconds S] [--runs R] [--concurrency C]
[--no-fsync-on]``. It starts throwaway clusters (Debian's postgresql package,
gateway/dev/pgcluster.py): the test cluster (``fsync=off``, ``synchronous_commit=off``:
proves logic, bounds nothing but CPU and the head row) and, unless ``--no-fsync-on``, a
cluster with the defaults (``fsync=on``, ``synchronous_commit=on``,
``full_page_writes=on``: every batch statement waits for its WAL flush, the figure a
deployment on this disk would see). Each writer is a separate process
(tests/integration/audit_pg_writer.py) with C concurrent appenders (the in-flight
queries of one gateway process); all start together and append for S seconds.
Prints the median of R runs per case and the ratio to one writer.

What bounds each figure: with one writer, the statement-plus-commit round trip per
batch (group commit makes batches larger as latency grows); with several, the head
row (one batch statement at a time holds it until its commit: fsync on, one WAL flush
per batch, though PostgreSQL's own group commit merges concurrent flushes), and the
CPU: the processes, the integrator's signing and the server share this machine's
cores. The integrator is not on the append path: entries wait, durable, for it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from gateway.audit.note import Ed25519Signer, generate_key, write_key_files
from gateway.audit.shared import SharedAuditLog
from gateway.dev.pgcluster import ClusterUnavailable, LocalCluster, start_cluster
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.postgres.migrate import migrate
from gateway.stores.postgres.url import PgTarget

ORIGIN = "bench.credit-gateway/audit"
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def _database(cluster: LocalCluster) -> Iterator[str]:
    """A fresh database migrated to this build's schema; dropped afterwards."""
    url = cluster.create_database()
    try:
        with psycopg.connect(url) as conn:
            migrate(conn)
        yield url
    finally:
        cluster.drop_database(url)


def _run_writers(url: str, key: Path, writers: int, seconds: float, concurrency: int) -> float:
    """Appends/s of ``writers`` processes started together; the log verified dense."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for w in range(writers):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.audit_pg_writer", url, str(key),
                 str(Path(tmp) / f"r{w}.jsonl"), "--seconds", str(seconds),
                 "--concurrency", str(concurrency), "--wait-go"],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a writer did not start")
            procs.append(proc)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        total, longest = 0, 0.0
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 120)
            _, n, secs = out.strip().splitlines()[-1].split()
            total += int(n)
            longest = max(longest, float(secs))
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), COALESCE(max(idx) + 1, 0) FROM audit_entries"
        ).fetchone()
    assert row is not None and row[0] == row[1] >= total, "gap or loss"
    return total / longest


async def _follow_rate(url: str, signer: Ed25519Signer) -> tuple[int, float]:
    """(entries, seconds) to open the log: every leaf hash read and the root checked."""
    start = time.perf_counter()
    log = await SharedAuditLog.open_shared(
        PostgresAuditStore(PgTarget(url)), signer, integrate=False
    )
    elapsed = time.perf_counter() - start
    size = log.checkpoint_size
    await log.close()
    return size, elapsed


def _case(
    cluster: LocalCluster, key: Path, signer: Ed25519Signer, args: argparse.Namespace
) -> None:
    base = 0.0
    follow: list[tuple[int, float]] = []
    for writers in (1, 2, 4):
        rates = []
        for _ in range(args.runs):
            with _database(cluster) as url:
                rates.append(_run_writers(url, key, writers, args.seconds, args.concurrency))
                if writers == 4:
                    follow.append(asyncio.run(_follow_rate(url, signer)))
        med = statistics.median(rates)
        base = base or med
        print(f"  {writers} writer process(es): {med:10,.0f} appends/s  ({med / base:.2f}x one)")
    size, secs = max(follow)
    print(f"  following: {size:,} entries opened in {secs:.2f} s ({size / secs:,.0f} entries/s)")


def main() -> None:
    """Run the benchmark (see the module)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64, help="appenders per process")
    parser.add_argument("--no-fsync-on", action="store_true", help="skip the durable cluster")
    args = parser.parse_args()
    skey, vkey = generate_key(ORIGIN)
    signer = Ed25519Signer.from_key_string(skey)
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "audit.key"
        write_key_files(skey, vkey, key, Path(tmp) / "audit.pub")
        print(f"PostgreSQL audit log, {args.concurrency} appenders per process, "
              f"{args.seconds:g} s, median of {args.runs}")  # fmt: skip
        for durable in (False, True) if not args.no_fsync_on else (False,):
            try:
                cluster = start_cluster(durable=durable)
            except ClusterUnavailable as exc:
                sys.exit(f"NOT RUN: no PostgreSQL cluster ({exc})")
            try:
                if durable:
                    print("fsync=on, synchronous_commit=on (PostgreSQL's defaults):")
                else:
                    print("fsync=off, synchronous_commit=off (the test cluster):")
                _case(cluster, key, signer, args)
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
