"""``credit-gateway portal`` and ``demo --serve``'s page, through the installed console
script: the README's own portal line, run in the background against a ``demo --serve``
federation, serves the page and stops cleanly on SIGTERM.

The one substitution besides the README test's (``var/demo`` -> the work folder): the
README's ``--listen 127.0.0.1:8080`` becomes port 0 (a free port), since several test runs
may share a machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_readme_commands import README, ROOT, readme_lines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BIN = ROOT / ".venv" / "bin"
PORTAL_LINE = re.compile(r"^\.venv/bin/credit-gateway portal\b")


def _get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:  # noqa: S310 - loopback
            return r.status, r.read().decode("utf-8"), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8"), dict(exc.headers)


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)
    return proc.returncode


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    workdir = tmp_path_factory.mktemp("portal-demo")
    log = (workdir / "demo.log").open("w", encoding="utf-8")
    proc = subprocess.Popen(
        [str(BIN / "credit-gateway"), "--log-level", "WARNING", "demo", "--serve",
         "--workdir", str(workdir), "--subjects", "300"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (workdir / "demo.json").is_file():
            assert proc.poll() is None, (workdir / "demo.log").read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "demo --serve wrote no demo.json in 180 s"
            time.sleep(0.2)
        yield workdir, json.loads((workdir / "demo.json").read_text(encoding="utf-8"))
    finally:
        assert _stop(proc) == 0
        log.close()


def test_demo_serve_serves_the_page_at_portal_url(demo: tuple[Path, dict[str, Any]]) -> None:
    _, described = demo
    url = described["portal_url"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
    status, page, headers = _get(f"{url}enterprise/{described['examples']['enterprise']}")
    assert status == 200
    assert "红黑名单状态" in page and "公开信用记录" in page and "report.pdf" in page
    assert "set-cookie" not in {k.lower() for k in headers}
    status, page, _ = _get(f"{url}enterprise/{described['examples']['person']}")
    assert status == 400 and "不查询个人信息" in page
    assert described["examples"]["person"] not in page


def test_the_readme_portal_line_serves_and_stops_on_sigterm(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    workdir, described = demo
    [line] = [
        x for x in readme_lines(README.read_text(encoding="utf-8")) if PORTAL_LINE.match(x.text)
    ]
    assert "--listen 127.0.0.1:8080" in line.text, line
    command = line.text.replace("var/demo", str(workdir)).replace(
        "--listen 127.0.0.1:8080", "--listen 127.0.0.1:0"
    )
    errors = (workdir / "portal.log").open("w", encoding="utf-8")
    proc = subprocess.Popen(
        ["/bin/bash", "-c", f"exec {command}"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=errors, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        served = re.fullmatch(r"credit-gateway portal serving on (http://\S+)\n", first)
        assert served, f"{line}: {first} {(workdir / 'portal.log').read_text(encoding='utf-8')}"
        url = served.group(1)
        status, page, _ = _get(url)
        assert status == 200 and "统一社会信用代码" in page
        status, page, _ = _get(f"{url}enterprise/{described['examples']['enterprise']}")
        assert status == 200 and "红黑名单状态" in page
    finally:
        code = _stop(proc)
        errors.close()
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0, f"{line}: exit {code}"
