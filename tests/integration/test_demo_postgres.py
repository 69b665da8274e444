"""``credit-gateway demo --postgres``: the demo with every store on a throwaway local
PostgreSQL cluster, run through the installed console script; the cluster is stopped
and removed at the end, and a missing PostgreSQL is one clear line (exit 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import gateway as gateway_cli
from gateway.dev import pgcluster
from tests.pg import require_pg

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_postgres_runs_through_the_console_script(tmp_path: Path) -> None:
    if pgcluster.find_bindir() is None:
        require_pg("initdb not found")
    work = tmp_path / "demo"
    done = subprocess.run(
        [str(BIN / "credit-gateway"), "--log-level", "WARNING", "demo", "--postgres",
         "--subjects", "300", "--workdir", str(work)],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    found = re.search(r"PostgreSQL cluster up in (\S+): every store lives there", out)
    assert found, out[-2000:]
    assert not Path(found.group(1)).exists()  # stopped and removed at the end
    # The auditor verified the log every process shared on PostgreSQL, not a file.
    assert "credit-audit verify postgresql://" in out
    assert "demo finished" in out
    assert not (work / "audit" / "audit.sqlite").exists()
    assert not (work / "ledger.sqlite").exists()
    config = (work / "gateway.toml").read_text(encoding="utf-8")
    assert "[storage]" in config and 'path = "' not in config.split("[audit]")[1].split("[")[0]


def test_demo_postgres_without_postgres_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: None)  # no PostgreSQL installed
    rc = gateway_cli.main(["demo", "--postgres", "--workdir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "PostgreSQL is not available" in err, err
    assert "initdb not found" in err
    assert not (tmp_path / "d" / "pki").exists()  # nothing was generated first
