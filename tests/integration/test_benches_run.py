"""Every benchmark still runs (issue 13): each is started with the smallest parameters
and must finish, exit 0 and print its figures. Nothing here looks at a figure's value:
benchmarks measure, tests do not time. A bench that no longer ran (one did, after a
field it named was removed) would otherwise be found only by the next person to
measure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import require_pg

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "overhead": (
        ["--rounds", "1", "--seconds", "0.3", "--concurrency", "4"],
        "gateway CPU us/query by thread: event loop",
    ),
    "fanout": (
        ["--rounds", "1", "--seconds", "0.3", "--concurrency", "4"],
        "gateway CPU us/query by thread: event loop",
    ),
    "mix": (["--rounds", "1", "--seconds", "0.3", "--concurrency", "4"], "answered as expected"),
    "soak": (["--queries", "300", "--subjects", "40", "--token-every", "100"], "RSS MiB"),
    "audit_bench": (
        ["--records", "300", "--runs", "1", "--verify-records", "400"],
        "verified records/s, seven-department query records",
    ),
    "audit_pg_bench": (
        ["--runs", "1", "--seconds", "0.5", "--concurrency", "4", "--no-fsync-on"],
        "4 writer process(es)",
    ),
    "decision_bench": (["--lines", "100", "--decisions", "300"], "cached, with consent token"),
    # make bench: the runner and its summary (one quick bench is enough to prove them).
    "all": (
        ["--quick", "--only", "decision_bench", "soak", "--skip", "soak"],
        "-- bench.decision_bench",
    ),
    "controls_bench": (["--calls", "200", "--trials", "2"], "propagation between processes"),
    "portal_bench": (["--n", "3", "--concurrency", "2"], "page/query"),
    "report_bench": (["--n", "2"], "check-report (offline)"),
    "screen_bench": (["--subjects", "10", "--concurrency", "2", "--rounds", "1"], "batch/query"),
    "subject_bench": (
        ["--records", "2000", "--subjects", "200", "--lookups", "20"],
        "full scan for one subject",
    ),
    "record_bench": (["--runs", "1", "--n", "8"], "refused by the rate limiter"),
    "profile": (["--rounds", "1", "--seconds", "0.5", "--top", "5"], "top 5 by self"),
    "stores_bench": (["--queries", "50", "--trials", "1"], "ledger: paid queries per second"),
    "workers_bench": (
        [
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
        ],
        "gateway CPU us/q",
    ),
}


def test_make_bench_quick_runs_are_the_ones_tested() -> None:
    """bench.all --quick passes each bench the parameters this suite starts it with (one
    table would drift; this holds the two equal)."""
    from bench.all import BENCHES

    for bench in BENCHES:
        assert list(bench.quick) == CASES[bench.name][0], bench.name


@pytest.mark.slow
@pytest.mark.parametrize("bench", sorted(CASES))
def test_the_bench_runs(bench: str) -> None:
    args, expected = CASES[bench]
    run = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if run.returncode == 3 and "NOT RUN" in run.stdout:  # workers_bench without PostgreSQL
        require_pg(run.stdout.strip().splitlines()[-1])
    if run.returncode == 4 and "NOT RUN" in run.stderr:  # profile without py-spy or ptrace
        pytest.skip(run.stderr.strip().splitlines()[-1])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert expected in run.stdout, run.stdout[-2000:]
    assert "Traceback" not in run.stderr
