"""``make bench``: every benchmark in turn, then the figures issue 13 asks for, together.

Each bench runs in its own process (as ``python -m bench.<name>``), its output shown as
it comes; at the end the headline lines of each (the gateway/bare ratios, the decision
p99, verification and append rates, the soak's resident memory) are printed again in one
summary, so that one look gives the state of the whole path. A bench that fails is named
in the summary and the run exits 1; the others still run.

    python -m bench.all [--quick] [--only overhead fanout ...] [--skip soak ...]

``--quick`` passes each bench its smallest parameters (the ones the test suite uses:
a smoke run whose figures mean nothing). Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["BENCHES", "Bench", "main"]


@dataclass(frozen=True)
class Bench:
    """One benchmark: its module under ``bench``, what it measures, the pattern of its
    headline lines and its smallest parameters (``--quick``)."""

    name: str
    what: str
    headline: str
    quick: tuple[str, ...] = ()


#: In the order ``make bench`` runs them. ``subject_bench`` is left out: it builds a
#: million-record index first (run it on its own: ``python -m bench.subject_bench``).
BENCHES = (
    Bench(
        "overhead",
        "one-department query, everything on, vs a bare grpc.aio proxy",
        r"^(bare|gateway) |^ratio ",
        ("--rounds", "1", "--seconds", "0.3", "--concurrency", "4"),
    ),
    Bench(
        "fanout",
        "seven-department query vs a bare fan-out proxy",
        r"^(bare|gateway) |^ratio ",
        ("--rounds", "1", "--seconds", "0.3", "--concurrency", "4"),
    ),
    Bench(
        "mix",
        "free, paid consent-bound and refused queries vs a bare fan-out proxy",
        r"^(bare fan-out|gateway mix) |^ratio ",
        ("--rounds", "1", "--seconds", "0.3", "--concurrency", "4"),
    ),
    Bench(
        "decision_bench",
        "policy decisions",
        r"cached, with consent token|^== ",
        ("--lines", "100", "--decisions", "300"),
    ),
    Bench(
        "audit_bench",
        "audit log appends and offline verification",
        r"records/s|appends/s, 128",
        ("--records", "300", "--runs", "1", "--verify-records", "400"),
    ),
    Bench(
        "controls_bench",
        "live controls",
        r"propagation|per call",
        ("--calls", "200", "--trials", "2"),
    ),
    Bench("report_bench", "signed credit reports", r"/query|offline", ("--n", "2")),
    Bench(
        "screen_bench",
        "screening",
        r"/query",
        ("--subjects", "10", "--concurrency", "2", "--rounds", "1"),
    ),
    Bench("portal_bench", "the public page", r"page/query", ("--n", "3", "--concurrency", "2")),
    Bench(
        "workers_bench",
        "serve --workers",
        r"^ *[0-9]+ +[0-9]|NOT RUN",
        (
            "--workers",
            "1,2",
            "--rounds",
            "1",
            "--seconds",
            "0.3",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--no-fsync",
        ),
    ),
    Bench(
        "audit_pg_bench",
        "the shared audit log on PostgreSQL",
        r"writer process",
        ("--runs", "1", "--seconds", "0.5", "--concurrency", "4", "--no-fsync-on"),
    ),
    Bench(
        "stores_bench",
        "stores on SQLite and PostgreSQL",
        r" /s| us |NOT RUN",
        ("--queries", "50", "--trials", "1"),
    ),
    Bench(
        "soak",
        "resident memory over a long run",
        r"RSS|MiB",
        ("--queries", "300", "--subjects", "40", "--token-every", "100"),
    ),
)


def _run(bench: Bench, quick: bool) -> tuple[int, list[str], float]:
    """Run one bench, echoing its output; (exit status, its headline lines, seconds)."""
    cmd = [sys.executable, "-m", f"bench.{bench.name}", *(bench.quick if quick else ())]
    print(f"\n===== bench.{bench.name}: {bench.what}", flush=True)
    pattern = re.compile(bench.headline)
    started = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if pattern.search(line):
                lines.append(line.rstrip())
    return proc.returncode, lines, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Run the benches; 1 if any of them failed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smallest parameters (a smoke run)")
    names = [b.name for b in BENCHES]
    p.add_argument("--only", nargs="+", choices=names, metavar="NAME", default=None)
    p.add_argument("--skip", nargs="+", choices=names, metavar="NAME", default=())
    args = p.parse_args(argv)
    chosen = [
        b for b in BENCHES if (args.only is None or b.name in args.only) and b.name not in args.skip
    ]
    results = [(b, *_run(b, args.quick)) for b in chosen]
    print("\n===== summary (medians and ratios, each measured in its own run)")
    failed = []
    for bench, status, lines, seconds in results:
        # A bench that cannot run here says NOT RUN and exits 3 (no PostgreSQL) or 4 (no
        # profiler): not a failure, but said.
        not_run = status in (3, 4) and any("NOT RUN" in line for line in lines)
        state = "" if status == 0 else "  NOT RUN" if not_run else f"  FAILED (exit {status})"
        print(f"-- bench.{bench.name} ({seconds:.0f} s): {bench.what}{state}")
        for line in lines:
            print(f"   {line}")
        if status != 0 and not not_run:
            failed.append(bench.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
