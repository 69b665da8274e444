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

from bench.all import BENCHES
from tests.pg import require_pg

REPO = Path(__file__).resolve().parents[2]

#: What each bench must print: the line of its figures.
EXPECTED = {
    "overhead": "gateway CPU us/query by thread: event loop",
    "fanout": "gateway CPU us/query by thread: event loop",
    "mix": "answered as expected",
    "soak": "RSS MiB",
    "audit_bench": "verified records/s, seven-department query records",
    "audit_pg_bench": "4 writer process(es)",
    "decision_bench": "cached, with consent token",
    "all": "-- bench.decision_bench",
    "controls_bench": "propagation between processes",
    "portal_bench": "page/query",
    "report_bench": "check-report (offline)",
    "screen_bench": "batch/query",
    "subject_bench": "full scan for one subject",
    "record_bench": "refused by the rate limiter",
    "profile": "top 5 by self",
    "stores_bench": "ledger: paid queries per second",
    "workers_bench": "gateway CPU us/q",
}

#: The smallest arguments of the benches ``make bench`` does not run; the others run with
#: the ``--quick`` parameters bench.all gives them (one table, so the two cannot drift).
OWN_ARGS = {
    # make bench: the runner and its summary (one quick bench is enough to prove them).
    "all": ["--quick", "--only", "decision_bench", "soak", "--skip", "soak"],
    "subject_bench": ["--records", "2000", "--subjects", "200", "--lookups", "20"],
    "record_bench": ["--runs", "1", "--n", "8"],
    "profile": ["--rounds", "1", "--seconds", "0.5", "--top", "5"],
}

CASES = {b.name: (list(b.quick), EXPECTED[b.name]) for b in BENCHES} | {
    name: (args, EXPECTED[name]) for name, args in OWN_ARGS.items()
}


def test_every_bench_is_run_here() -> None:
    """Each bench module (bench/*.py but the helpers, _*.py) is started below: a new bench
    left out of both tables would otherwise never be run."""
    modules = {p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(CASES) == set(EXPECTED)


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
