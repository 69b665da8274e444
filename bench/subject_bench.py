""" "Who looked at me" with a million audit records: index build and listing latency.

Run ``python -m bench.subject_bench [--records N] [--subjects N] [--lookups N]``. A script,
not a test. Builds, in a temporary folder, the subject index (:mod:`gateway.subject.index`)
from ``--records`` (default 1,000,000) canonical audit records, through the same
:func:`~gateway.subject.index.sync_index` a gateway runs (records encoded as the log stores
them, decoded, indexed), then reports:

* the rebuild: seconds and records/s for the whole log (generating and encoding the
  synthetic records included: an upper bound on the index's own cost);
* the first page (50 records) of ``--lookups`` random subjects: p50 and p99 in ms;
* paging through a heavy subject (5,000 queries about it) 50 at a time: p50 and p99 per page;
* the same first page read by a full scan of the table (what "not an index" would cost),
  median of a few, and its ratio to the indexed p50;
* a noise floor: ``SELECT 1`` on the same connection, p50 and p99 (on a shared machine the
  p99 of every figure above includes the scheduler's pauses, which this one shows).

Subjects' query counts follow a long tail (most have a few queries, some many); 5% of the
records are under a legal basis, half of those confidential for a year.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.audit.records import encode_record
from gateway.audit.store import LogReader, StoredCheckpoint, StoredEntry
from gateway.subject.index import SQLiteQueryIndex, sync_index

_DATASETS = [
    ("market", "registration"),
    ("market", "administrative_penalties"),
    ("tax", "credit_rating"),
    ("court", "dishonest_debtors"),
    ("pbccrc", "personal_loans"),
]
_AGENCIES = ["ndrc", "procurement", "bank", "guarantor", "self_service"]
_PURPOSES = ["supervision_inspection", "government_procurement", "lending", "guarantee"]
HEAVY = "f" * 64


class _SyntheticLog(LogReader):
    """A log of ``n`` query records, generated on the fly as the store would hold them."""

    def __init__(self, n: int, subjects: int, seed: int = 7) -> None:
        self.n = n
        self.subjects = subjects
        self.seed = seed

    def size(self) -> int:
        return self.n

    def origin(self) -> str | None:
        return "bench.example/audit"

    def checkpoints(self) -> list[StoredCheckpoint]:
        return []

    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        rng = random.Random(self.seed)
        heavy_every = max(self.n // 5000, 2)
        for i in range(start, self.n):
            if i % heavy_every == 1:
                subject = HEAVY
            else:
                # A long tail: a few subjects are asked about often, most rarely.
                subject = f"{int(rng.paretovariate(1.2) * 7919) % self.subjects:064x}"
            dept, ds = rng.choice(_DATASETS)
            record: dict[str, object] = {
                "kind": "query",
                "time": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T08:00:00.000Z",
                "gateway": "bench.example/audit",
                "request_id": f"00000000-0000-4000-8000-{i:012d}",
                "agency_id": rng.choice(_AGENCIES),
                "purpose": rng.choice(_PURPOSES),
                "mode": "paid" if i % 3 else "free",
                "charge_fen": 4800 if i % 3 else 0,
                "subject_type": "person",
                "subject_pseudonym": subject,
                "outcome": "ok",
                "departments": {dept: {"status": "ok", "datasets": [ds], "records": 1}},
            }
            if i % 20 == 0:
                record["legal_basis"] = "supervision_law_art26"
                record["case_reference"] = f"JW-{i}"
                if i % 40 == 0:
                    record["confidential_until"] = "2027-06-30"
            yield StoredEntry(i, encode_record(record, seq=i), None)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--subjects", type=int, default=200_000)
    p.add_argument("--lookups", type=int, default=2_000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        index = SQLiteQueryIndex.open(Path(tmp) / "subjects.sqlite")
        log = _SyntheticLog(args.records, args.subjects)
        started = time.perf_counter()
        sync_index(index, log)
        built = time.perf_counter() - started
        indexed = index.count()
        print(
            f"rebuild: {args.records:,} audit records ({indexed:,} answered queries) in "
            f"{built:.1f} s, {args.records / built:,.0f} records/s"
        )
        gc.disable()  # the figures are SQLite's and the index's, not the collector's
        rng = random.Random(11)
        today = "2026-12-01"
        firsts: list[float] = []
        found = 0
        sampled: list[str] = []
        for _ in range(args.lookups):
            subject = f"{int(rng.paretovariate(1.2) * 7919) % args.subjects:064x}"
            sampled.append(subject)
            t = time.perf_counter()
            rows = index.for_subject(subject, today=today, before=None, limit=51)
            firsts.append((time.perf_counter() - t) * 1000)
            found += min(len(rows), 50)
        print(
            f"first page, {args.lookups} random subjects ({found / args.lookups:.1f} records "
            f"a page on average): p50 {_pct(firsts, 0.5):.3f} ms, p99 {_pct(firsts, 0.99):.3f} ms"
        )
        pages: list[float] = []
        before: int | None = None
        rows_seen = 0
        while True:
            t = time.perf_counter()
            rows = index.for_subject(HEAVY, today=today, before=before, limit=51)
            pages.append((time.perf_counter() - t) * 1000)
            rows_seen += min(len(rows), 50)
            if len(rows) <= 50:
                break
            before = rows[49].log_index
        print(
            f"heavy subject ({rows_seen:,} visible queries), {len(pages)} pages of 50: "
            f"p50 {_pct(pages, 0.5):.3f} ms, p99 {_pct(pages, 0.99):.3f} ms"
        )
        scans: list[float] = []
        conn = index._conn  # the bench reads the same table without its clustering
        for subject in sampled[:3]:
            t = time.perf_counter()
            # "+subject" keeps SQLite from using the primary key: a scan of every row.
            conn.execute(
                "SELECT * FROM queries WHERE +subject = ? ORDER BY log_index DESC LIMIT 51",
                (bytes.fromhex(subject),),
            ).fetchall()
            scans.append((time.perf_counter() - t) * 1000)
        floor: list[float] = []
        for _ in range(args.lookups):
            t = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            floor.append((time.perf_counter() - t) * 1000)
        print(
            f"noise floor (SELECT 1 on the same connection): p50 {_pct(floor, 0.5):.3f} ms, "
            f"p99 {_pct(floor, 0.99):.3f} ms"
        )
        scan = statistics.median(scans)
        print(
            f"full scan for one subject: median {scan:.1f} ms = "
            f"{scan / _pct(firsts, 0.5):,.0f}x the indexed p50"
        )
        index.close()


if __name__ == "__main__":
    main()
