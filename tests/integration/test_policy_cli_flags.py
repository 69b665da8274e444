"""``credit-gateway policy``: connection options before or after the command, and an
explicit flag wins over ``--demo``."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from gateway.cli.policy import policy_main
from gateway.dev.devstack import DevStack

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _policy(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(policy_main, list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_options_before_or_after_the_command(stack: DevStack, tmp_path: Path) -> None:
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(stack.describe()))
    before = await _policy("--demo", str(demo), "--officer", "officer_a", "list")
    after = await _policy("list", "--demo", str(demo), "--officer", "officer_a")
    assert before[0] == 0, before[2]
    assert before == after
    assert before[1].startswith("*   1  ") and "Z  by bootstrap" in before[1]


async def test_an_explicit_gateway_wins_over_demo(stack: DevStack, tmp_path: Path) -> None:
    described = stack.describe()
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(described | {"gateway_address": "127.0.0.1:9"}))
    base = ["--demo", str(stale), "--officer", "officer_a", "--timeout", "5"]
    code, _, err = await _policy(*base, "list")
    assert code == 2 and "UNAVAILABLE" in err  # the demo's address alone: nobody there
    code, out, err = await _policy(*base, "--gateway", described["gateway_address"], "list")
    assert code == 0, err
    assert "bootstrap" in out
