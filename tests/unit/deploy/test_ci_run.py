"""``.ci/run``, CI's entry point, run with fake ``apt-get`` and ``make`` on a bare PATH: the
package index is refreshed once however many tools are missing, each missing group is
installed on its own, one group that cannot be installed does not stop the others, and
``make check`` runs last with ``CREDIT_GATEWAY_REQUIRE_PG=1``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
#: What the script needs from the system besides the fakes (no promtool, npm, chromium,
#: pdftoppm: those are found missing).
TOOLS = ("bash", "dirname", "ls", "cat")


def _fake(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!/bin/bash\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


Run = tuple[subprocess.CompletedProcess[str], list[str]]


def _run(tmp_path: Path, *, failing: str = "") -> Run:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"NOT RUN: {tool} is not installed")
        (bindir / tool).symlink_to(found)
    calls = tmp_path / "calls"
    # apt-get: logs its arguments; an install naming ``failing`` exits 100 as apt does.
    _fake(
        bindir,
        "apt-get",
        f'echo "apt-get $*" >> {calls}\n'
        f'if [ -n "{failing}" ] && [[ " $* " == *" {failing} "* ]]; then exit 100; fi',
    )
    _fake(bindir, "make", f'echo "make $* REQUIRE_PG=$CREDIT_GATEWAY_REQUIRE_PG" >> {calls}')
    proc = subprocess.run(
        ["/bin/bash", str(ROOT / ".ci" / "run")],
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc, calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []


def test_the_package_index_is_refreshed_once(tmp_path: Path) -> None:
    proc, calls = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [c for c in calls if c.startswith("apt-get update")] == ["apt-get update -qq"]
    installs = [c.split(" --no-install-recommends ", 1)[1] for c in calls if " install " in c]
    # promtool, Node and Chromium are never on the bare PATH; the report tools and
    # PostgreSQL are looked up by file path and may be installed on this machine.
    assert {"prometheus", "nodejs npm", "chromium fonts-wqy-zenhei"} <= set(installs)
    assert set(installs) <= {
        "prometheus",
        "fonts-wqy-zenhei poppler-utils",
        "nodejs npm",
        "postgresql",
        "chromium fonts-wqy-zenhei",
    }
    assert calls.index("apt-get update -qq") < calls.index(next(c for c in calls if "install" in c))
    assert calls[-1] == "make check REQUIRE_PG=1"


def test_one_group_that_cannot_be_installed_leaves_the_others(tmp_path: Path) -> None:
    proc, calls = _run(tmp_path, failing="prometheus")
    assert proc.returncode == 0, proc.stderr
    assert "note: could not install promtool; its check will be skipped" in proc.stdout
    assert any(c.endswith("nodejs npm") for c in calls)
    assert any(c.endswith("chromium fonts-wqy-zenhei") for c in calls)
    assert calls[-1] == "make check REQUIRE_PG=1"


def test_nothing_missing_means_no_apt_get_at_all(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    proc, calls = _run(tmp_path)  # first run creates the bin folder with the fakes
    assert proc.returncode == 0
    for tool in ("promtool", "npm", "chromium", "pdftoppm"):
        _fake(bindir, tool, "exit 0")
    (tmp_path / "calls").unlink()
    env = {"PATH": str(bindir), "HOME": str(tmp_path)}
    fonts = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
    pg = list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not fonts.exists() or not pg:
        pytest.skip("NOT RUN: needs the CJK font and PostgreSQL installed at their Debian paths")
    proc = subprocess.run(
        ["/bin/bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert calls == ["make check REQUIRE_PG=1"]
