"""Every command line of README.md runs, as written, through the installed console scripts
(documented commands that exited 2 once went unnoticed).

The main test reads every fenced ``sh`` block of the README, starts the federation once with
the README's own ``credit-gateway demo --serve --workdir var/demo --portal-listen ...`` line
(in the background, in a temporary folder, ready once ``demo.json`` appears), and runs every
other command line in README order, from the repository root, through ``bash`` and the
installed console scripts (``.venv/bin/...``). A non-zero exit fails the test and names the
README line. Commands that change state (a top-up, policy draft, approve, activate, rollback,
a consent issued, used and revoked) depend on that order and must succeed, as a reader running
the README top to bottom on a fresh demo would see them.

Substitutions, the only ones a reader makes:
- ``var/demo`` -> the temporary work folder;
- ``<demo.json: KEY>`` -> the value of KEY (dotted) in the demo's ``demo.json``; any other
  ``<...>`` placeholder fails the test;
- the serve line's ``--portal-listen`` port -> a free one (test runs may share a machine);
  demo.json's ``portal_url`` must then name that port.

Lines the main test does not run, and what runs them instead:
- ``make ...`` (``make demo``, ``make test``): they build the venv and run this very suite;
- ``.venv/bin/python -m bench...``: benchmarks run for minutes and assert nothing;
  tests/integration/test_benches_run.py starts each with its smallest parameters, and
  :func:`test_the_readme_bench_flags_run` below starts each with every flag its README
  comment names;
- ``.venv/bin/credit-gateway portal ...``: it serves until stopped;
  ``tests/integration/test_portal_cli.py`` runs the README's own line in the background
  against a ``demo --serve`` federation and stops it;
- lines on ``postgresql://auditor@db.example/gateway``: :func:`test_the_readme_postgresql_lines`
  runs them against a log a federation on PostgreSQL wrote, as a role ``auditor`` that may
  only ``SELECT`` (NOT RUN without PostgreSQL; a failure under ``.ci/run``);
- comments, and ``NAME="..."`` assignments, which are instead prefixed to every later
  command of the same block (``$P ...``).
Every other line must start with ``.venv/bin/``, a variable assigned one, or ``cat``.

Commands named in the README's prose (an inline code span starting with a console script)
must each be covered: the same script, subcommand words and ``--flags`` on a line that runs,
or listed in :data:`RUN_ELSEWHERE` with the test that runs it
(:func:`test_every_command_the_prose_names_is_run`). The table of commands is a synopsis and
is not checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.dev.pgcluster import find_bindir
from protos.credit.v1 import report_pb2
from tests.integration.test_benches_run import CASES as BENCH_CASES
from tests.pg import PgCluster, require_pg

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SERVE = re.compile(
    r"^\.venv/bin/credit-gateway demo --serve --workdir var/demo"
    r" --portal-listen 127\.0\.0\.1:(\d+)$"
)
PLACEHOLDER = re.compile(r"<demo\.json: ([\w.]+)>")
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S.*)$")
BENCH = re.compile(r"^\.venv/bin/python -m bench\.(\w+)")
PG_LINE = re.compile(r"postgresql://auditor@db\.example/gateway")
NOT_RUN = (
    re.compile(r"^make\b"),
    BENCH,
    re.compile(r"^\.venv/bin/credit-gateway portal\b"),
    PG_LINE,
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
    run = [x for x in lines if not any(p.search(x.text) for p in NOT_RUN)]
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Federation:
    """The README's demo federation: its folder, its demo.json and the page's port."""

    workdir: Path
    demo: dict[str, Any]
    portal_port: int


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """The README's demo line, run once in the background until demo.json appears."""
    assert (ROOT / ".venv" / "bin" / "credit-gateway").exists(), "run make .venv/.installed"
    workdir = tmp_path_factory.mktemp("readme") / "demo"
    [serve] = [x for x in readme_lines(README.read_text()) if SERVE.match(x.text)]
    port = _free_port()
    text = serve.text.replace("var/demo", str(workdir))
    text = re.sub(r"(--portal-listen 127\.0\.0\.1:)\d+$", rf"\g<1>{port}", text)
    log = workdir.parent / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", "exec " + text],
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
        yield Federation(workdir, json.loads(demo_json.read_text(encoding="utf-8")), port)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the demo stops its departments and signs
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


#: What some lines must print, beyond exiting 0 (README line text fragment -> check of the
#: output, given the work folder).
EXPECT: dict[str, Callable[[str, Path], bool]] = {
    # The published bases, from policies/legal_bases.toml without a gateway.
    "legal-basis list": lambda out, _: "supervision_law_art26: " in out,
    # The archived consent is the very token the bank's query sent.
    "consent readme-consent-1": lambda out, wd: (
        (wd / "consent.jwt").read_text(encoding="utf-8").strip() in out
    ),
}


def test_every_readme_command_succeeds(federation: Federation) -> None:
    workdir, demo = federation.workdir, federation.demo
    # --portal-listen picks the page's address, and demo.json names it.
    assert demo["portal_url"] == f"http://127.0.0.1:{federation.portal_port}/"
    lines = readme_lines(README.read_text(encoding="utf-8"))
    assignments: dict[int, list[str]] = {}
    checked: set[str] = set()
    ran = 0
    for line in lines:
        if SERVE.match(line.text) or any(p.search(line.text) for p in NOT_RUN):
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
        for fragment, check in EXPECT.items():
            if fragment in line.text:
                assert check(proc.stdout, workdir), f"{line}\nstdout: {proc.stdout[-2000:]}"
                checked.add(fragment)
        ran += 1
    assert ran > 20
    assert checked == set(EXPECT), f"no README line holds {set(EXPECT) - checked}"


def bench_flags(text: str) -> dict[str, list[str]]:
    """Per README bench line (``bench.NAME``), the ``--flags`` its trailing comment lines
    name (``# (--plaintext, --no-audit ... to take parts away)``)."""
    found: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        stripped = raw.strip()
        m = BENCH.match(stripped)
        if m:
            current = m.group(1)
            found[current] = re.findall(r"--[a-z][a-z-]*", stripped.partition("#")[2])
        elif current is not None and stripped.startswith("#"):
            found[current] += re.findall(r"--[a-z][a-z-]*", stripped)
        else:
            current = None
    return found


def _bench_flag_cases() -> list[tuple[str, str]]:
    flags = bench_flags(README.read_text(encoding="utf-8"))
    return [(bench, flag) for bench, named in sorted(flags.items()) for flag in named]


def test_the_readme_names_bench_flags() -> None:
    """The parse above finds what the README says of bench.overhead (cannot pass empty)."""
    assert ("overhead", "--no-live-checks") in _bench_flag_cases()
    assert set(bench_flags(README.read_text(encoding="utf-8"))) <= set(BENCH_CASES)


@pytest.mark.parametrize(("bench", "flag"), _bench_flag_cases())
def test_the_readme_bench_flags_run(bench: str, flag: str) -> None:
    """Each flag a README bench comment names runs, as the README line gives it
    (``.venv/bin/python -m bench.NAME``), with the smallest parameters of
    tests/integration/test_benches_run.py; the bench prints its figures and exits 0."""
    args, expected = BENCH_CASES[bench]
    command = shlex.join([".venv/bin/python", "-m", f"bench.{bench}", *args, flag])
    proc = subprocess.run(
        ["/bin/bash", "-c", command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert expected in proc.stdout, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr


async def _report_of_a_postgresql_federation(
    tmp_path: Path, pg_url: str
) -> tuple[report_pb2.ReportResponse, str]:
    """A federation with every store on ``pg_url`` makes one report; returns it and the
    log's verifier key."""
    from gateway.cli.connect import build_request
    from gateway.dev.devstack import DevStack
    from tests.integration.conftest import subject

    async with await DevStack.create(
        tmp_path / "s", subjects=60, storage_url=pg_url, sqlite_stores=()
    ) as stack:
        request = build_request(
            enterprise=subject(stack, "enterprise_clean"), purpose="government_procurement"
        )
        async with stack.client("procurement") as client:
            made = await client.report(request)
        return made, Path(stack.audit["verifier_key"]).read_text(encoding="utf-8")


def test_the_readme_postgresql_lines(tmp_path: Path, pg_url: str, pg_cluster: PgCluster) -> None:
    """The README's lines on ``postgresql://auditor@db.example/gateway``, run as written
    from a folder holding ``pg.pass``, ``log.vkey`` and ``report.json``: the host and
    database become the test cluster's (its Unix socket; the cluster trusts local
    connections, so the password file is read but not checked), the log is the one a
    federation on PostgreSQL wrote (a report made through it), and ``auditor`` is a role
    that may only ``SELECT``."""
    import psycopg

    from gateway.errors import ConfigError
    from gateway.report import find_font

    try:
        find_font()
    except ConfigError as err:
        pytest.skip(f"NOT RUN: the report line needs the CJK font: {err.problem}")
    made, vkey = asyncio.run(_report_of_a_postgresql_federation(tmp_path, pg_url))
    here = tmp_path / "auditor"
    here.mkdir()
    (here / "report.json").write_bytes(made.json)
    (here / "log.vkey").write_text(vkey, encoding="utf-8")
    (here / "pg.pass").write_text("auditor-password\n", encoding="utf-8")
    (here / "pg.pass").chmod(0o600)
    dbname = pg_url.split("/", 3)[3].split("?", 1)[0]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'auditor') THEN "
            "CREATE ROLE auditor LOGIN PASSWORD 'auditor-password'; END IF; END $$"
        )
        admin.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO auditor")
    url = f"postgresql://auditor@/{dbname}?host={pg_cluster.socket_dir}"
    lines = [x for x in readme_lines(README.read_text(encoding="utf-8")) if PG_LINE.search(x.text)]
    assert len(lines) >= 2
    outputs: dict[str, str] = {}
    for line in lines:
        proc = subprocess.run(
            ["/bin/bash", "-c", PG_LINE.sub(shlex.quote(url), line.text).replace(
                ".venv/bin/", f"{ROOT}/.venv/bin/"
            )],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr
        outputs[line.text.split()[1]] = proc.stdout
    index = made.response.receipt.log_index
    assert outputs["verify"].startswith("OK: "), outputs["verify"]
    exported = (here / "exported" / "records.jsonl").read_bytes().splitlines()
    assert len(exported) > index and outputs["export"].startswith(f"exported {len(exported)} ")
    assert f"receipt entry {index} is in" in outputs["check-report"]
    assert "agrees" in outputs["check-report"], outputs["check-report"]
    # The auditor's role may read and nothing more.
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM audit_entries")


#: Commands the README's prose names that no README line runs, and the test that runs each
#: through the installed console script (a README span -> that test's file).
RUN_ELSEWHERE = {
    "credit-gateway serve": "tests/integration/test_live_postgres.py",
    "credit-gateway serve --config gateway.toml": "tests/integration/test_live_postgres.py",
    "credit-gateway serve --config FILE --workers N": "tests/integration/test_workers.py",
    "credit-gateway db migrate --config gateway.toml": (
        "tests/integration/test_pg_federation_e2e.py"
    ),
    "credit-gateway db migrate": "tests/integration/test_pg_federation_e2e.py",
    "credit-audit digest FILE": "tests/unit/audit/test_audit_digest.py",
    "credit-query objection repair": "tests/integration/test_objections.py",
    "credit-adapter objection answer --id ID --outcome corrected|confirmed|undetermined --note N": (
        "tests/integration/test_objections.py"
    ),
}
SCRIPT_SPAN = re.compile(r"`((?:credit-(?:gateway|audit|query|adapter)|python -m bench\.\w+)"
                         r"(?:\s[^`]*)?)`")  # fmt: skip
WORD = re.compile(r"^[a-z][a-z-]*$")


def prose_commands(text: str) -> list[str]:
    """Inline code spans of the README's prose (not its ``sh`` blocks, not its table of
    commands) that start with a console script or ``python -m bench.NAME``; a span may run
    over a line end."""
    prose: list[str] = []
    in_block = False
    for raw in text.splitlines():
        if raw.startswith("```"):
            in_block = not in_block
            continue
        if not in_block and not raw.startswith("|"):
            prose.append(raw)
    return [" ".join(m.group(1).split()) for m in SCRIPT_SPAN.finditer("\n".join(prose))]


def _shape(command: str) -> tuple[str, set[str], set[str]]:
    """(script, subcommand words, --flags) of a command line or span."""
    tokens = command.split()
    script = tokens[0].removeprefix(".venv/bin/")
    if script.endswith("python"):  # python -m bench.NAME
        script, tokens = tokens[2], tokens[2:]
    words = {t for t in tokens[1:] if WORD.match(t)}
    flags = {t.split("=", 1)[0] for t in tokens[1:] if t.startswith("--")}
    return script, words, flags


def _run_lines() -> list[str]:
    """Every README command line some test runs, ``$VAR`` expanded, comments dropped."""
    out: list[str] = []
    values: dict[str, str] = {}
    for line in readme_lines(README.read_text(encoding="utf-8")):
        m = ASSIGNMENT.match(line.text)
        if m:
            values[m.group(1)] = m.group(2).strip('"')
            continue
        text = re.sub(r"\$([A-Z_][A-Z0-9_]*)", lambda v: values.get(v.group(1), v.group(0)),
                      line.text)  # fmt: skip
        out.append(" ".join(text.replace("\\\n", " ").partition(" #")[0].split()))
    return out


def test_every_command_the_prose_names_is_run() -> None:
    text = README.read_text(encoding="utf-8")
    spans = prose_commands(text)
    assert any(s.startswith("credit-gateway legal-basis --auditor") for s in spans)
    lines = [_shape(x) for x in _run_lines()]
    uncovered = []
    for span in spans:
        script, words, flags = _shape(span)
        if script.startswith("bench."):
            if script.removeprefix("bench.") not in BENCH_CASES:
                uncovered.append(span)
            continue
        if any(s == script and words <= w and flags <= f for s, w, f in lines):
            continue
        if span in RUN_ELSEWHERE:
            test = (ROOT / RUN_ELSEWHERE[span]).read_text(encoding="utf-8")
            missing = [t for t in sorted(words | flags) if f'"{t}"' not in test]
            assert not missing, f"{RUN_ELSEWHERE[span]} does not run {span!r}: no {missing}"
            continue
        uncovered.append(span)
    assert not uncovered, f"README prose names commands no test runs: {uncovered}"
    stale = set(RUN_ELSEWHERE) - set(spans)
    assert not stale, f"RUN_ELSEWHERE names what the README no longer says: {stale}"
