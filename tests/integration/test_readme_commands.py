"""Every command line of README.md runs, as written, against a running demo federation
(documented commands that exited 2 once went unnoticed).

The test reads every fenced ``sh`` block of the README, starts the federation once with the
README's own ``credit-gateway demo --serve --workdir var/demo`` line (in the background, in a
temporary folder, ready once ``demo.json`` appears), and runs every other command line in
README order, from the repository root, through ``bash`` and the installed console scripts
(``.venv/bin/...``). A non-zero exit fails the test and names the README line. Commands that
change state (a top-up, policy draft, approve, activate, rollback) depend on that order and
must succeed, as a reader running the README top to bottom on a fresh demo would see them.

Substitutions, the only ones a reader makes:
- ``var/demo`` -> the temporary work folder;
- ``<demo.json: KEY>`` -> the value of KEY (dotted) in the demo's ``demo.json``; any other
  ``<...>`` placeholder fails the test.

Lines the test does NOT run, and why:
- ``make ...`` (``make demo``, ``make test``): they build the venv and run this very suite;
- ``.venv/bin/python -m bench...``: benchmarks run for minutes and assert nothing
  (tests/integration/test_benches_run.py starts each with its smallest parameters);
- ``.venv/bin/credit-gateway portal ...``: it serves until stopped;
  ``tests/integration/test_portal_cli.py`` runs the README's own line in the background
  against a ``demo --serve`` federation and stops it;
- comments, and ``NAME="..."`` assignments, which are instead prefixed to every later
  command of the same block (``$P ...``).
Every other line must start with ``.venv/bin/``, a variable assigned one, or ``cat``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.dev.pgcluster import find_bindir
from tests.pg import require_pg

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SERVE = re.compile(r"^\.venv/bin/credit-gateway demo --serve --workdir var/demo$")
PLACEHOLDER = re.compile(r"<demo\.json: ([\w.]+)>")
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S.*)$")
NOT_RUN = (
    re.compile(r"^make\b"),
    re.compile(r"^\.venv/bin/python -m bench\."),
    re.compile(r"^\.venv/bin/credit-gateway portal\b"),
)
SHELL_TOOLS = ("cat",)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line of README.md where the command starts
    block: int
    text: str  # continuation lines joined as bash would read them

    def __str__(self) -> str:
        return f"README.md:{self.number}: {self.text}"


def readme_lines(text: str) -> list[Line]:
    """Every logical command line of every ```sh block, in README order."""
    lines: list[Line] = []
    in_block, block = False, 0
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("```"):
            if not in_block and raw.strip() == "```sh":
                in_block, block = True, block + 1
            elif in_block:
                assert not pending, f"README.md:{start}: block ends inside a continued line"
                in_block = False
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        pending.append(raw)
        if raw.endswith("\\"):
            continue
        joined = "\n".join(pending).strip()
        pending = []
        if joined and not joined.startswith("#"):
            lines.append(Line(start, block, joined))
    return lines


def _lookup(demo: dict[str, Any], key: str) -> str:
    value: Any = demo
    for part in key.split("."):
        assert isinstance(value, dict) and part in value, f"demo.json has no {key}"
        value = value[part]
    return str(value)


def substitute(text: str, workdir: Path, demo: dict[str, Any]) -> str:
    text = PLACEHOLDER.sub(lambda m: _lookup(demo, m.group(1)), text)
    unknown = re.search(r"<[a-z][^<>]*>", text)
    assert unknown is None, f"placeholder {unknown.group(0)} has no machine-readable source"
    return text.replace("var/demo", str(workdir))


def test_readme_parsing_finds_the_commands() -> None:
    """The rules above, held against the README itself (cannot pass on an empty parse)."""
    lines = readme_lines(README.read_text(encoding="utf-8"))
    serve = [x for x in lines if SERVE.match(x.text)]
    assert len(serve) == 1, "the README starts the demo federation exactly once"
    run = [x for x in lines if not any(p.match(x.text) for p in NOT_RUN)]
    assert len(run) > 20
    assigned: set[str] = set()
    for line in run:
        m = ASSIGNMENT.match(line.text)
        if m:
            assert m.group(2).strip('"').startswith(".venv/bin/"), str(line)
            assigned.add(m.group(1))
            continue
        first = line.text.split()[0]
        ok = first.startswith(".venv/bin/") or first.lstrip("$") in assigned or first in SHELL_TOOLS
        assert ok, f"{line}: not an installed console script"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The README's demo line, run once in the background until demo.json appears."""
    assert (ROOT / ".venv" / "bin" / "credit-gateway").exists(), "run make .venv/.installed"
    workdir = tmp_path_factory.mktemp("readme") / "demo"
    [serve] = [x for x in readme_lines(README.read_text()) if SERVE.match(x.text)]
    log = workdir.parent / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", "exec " + serve.text.replace("var/demo", str(workdir))],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its department processes too, for the clean-up below
        )
    try:
        demo_json = workdir / "demo.json"
        deadline = time.monotonic() + 300
        while not demo_json.exists():
            if proc.poll() is not None:
                pytest.fail(f"{serve}: exited {proc.returncode}\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{serve}: no demo.json after 300 s\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield workdir, json.loads(demo_json.read_text(encoding="utf-8"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the demo stops its departments and signs
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_every_readme_command_succeeds(federation: tuple[Path, dict[str, Any]]) -> None:
    workdir, demo = federation
    lines = readme_lines(README.read_text(encoding="utf-8"))
    assignments: dict[int, list[str]] = {}
    ran = 0
    for line in lines:
        if SERVE.match(line.text) or any(p.match(line.text) for p in NOT_RUN):
            continue
        if "demo --postgres" in line.text and find_bindir() is None:
            # Says so (a failure where .ci/run installed PostgreSQL), never passes silently.
            require_pg(f"{line}: initdb not found")
        command = substitute(line.text, workdir, demo)
        if ASSIGNMENT.match(line.text):
            assignments.setdefault(line.block, []).append(command)
            continue
        script = "\n".join([*assignments.get(line.block, []), command])
        proc = subprocess.run(
            ["/bin/bash", "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"{line}\nexit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\n"
                f"stderr: {proc.stderr[-2000:]}"
            )
        assert "Traceback" not in proc.stderr, f"{line}\n{proc.stderr[-2000:]}"
        ran += 1
    assert ran > 20
