"""The console scripts as a person runs them."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from pathlib import Path

import pytest

from gateway.dev.devstack import DevStack
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bad_config_stops_startup_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[gateway]\ninsecure_dev_plaintext = true\n[departments.tax]\ntimeout_ms = 5\n"
    )
    code, _, err = await _run("-m", "gateway.cli.gateway", "serve", "--config", str(config))
    assert code == 2
    assert err.strip() == "credit-gateway: departments.tax.address: missing"
    assert "Traceback" not in err


async def test_unreachable_departments_do_not_stop_startup(tmp_path: Path) -> None:
    """Every department down: the gateway still starts and serves (their sections say
    unavailable), and says which departments are not reached, one line each."""
    lines = [
        "[gateway]",
        "insecure_dev_plaintext = true",
        'listen = "127.0.0.1:0"',
        "[federation]",
        "describe_timeout_ms = 300",
    ]
    from gateway.domain.catalog import load_catalog

    for dept in load_catalog().departments:
        lines += [f"[departments.{dept}]", 'address = "127.0.0.1:9"']
    config = tmp_path / "gateway.toml"
    config.write_text("\n".join(lines) + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "gateway.cli.gateway", "serve", "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("credit-gateway serving on 127.0.0.1:")
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert "Traceback" not in text
    for dept in load_catalog().departments:
        assert f"department {dept} is unavailable: not reached" in text


async def test_certs_init_writes_private_keys_0600(tmp_path: Path) -> None:
    code, _, err = await _run("-m", "gateway.cli.gateway", "certs", "init", str(tmp_path / "pki"))
    assert code == 0, err
    keys = list((tmp_path / "pki").rglob("*.key"))
    assert any(k.parent.name == "departments" and k.stem == "tax" for k in keys)
    assert keys and all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)


async def test_credit_query_table_and_json(stack: DevStack, tmp_path: Path) -> None:
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(stack.describe()))
    enterprise = subject(stack, "enterprise_all_departments")
    base = ["-m", "gateway.cli.query", "--demo", str(demo), "--agency", "procurement",
            "--enterprise", enterprise, "--purpose", "government_procurement"]  # fmt: skip
    code, out, err = await _run(*base)
    assert code == 0, err
    assert "[market] ok" in out and "audit receipt" in out
    code, out, err = await _run(*base, "--json", "--dataset", "tax/credit_rating")
    assert code == 0, err
    answer = json.loads(out)
    assert [s["department"] for s in answer["sections"]] == ["tax"]
    code, out, err = await _run(*base[:-4], "--enterprise", enterprise[:-1] + "Z", "--purpose", "x")
    assert code == 1 and err.startswith("credit-query: INVALID_ARGUMENT")
