"""The metrics page: parsed by prometheus-client's own parser, accepted by
promtool, moving as queries run, and free of personal data."""

from __future__ import annotations

import asyncio
import shutil
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.dev.devstack import DevStack
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _scrape(stack: DevStack) -> str:
    def get() -> str:
        with urllib.request.urlopen(stack.gateway.metrics_url, timeout=10) as r:  # noqa: S310 - loopback
            return str(r.read().decode())

    return await asyncio.to_thread(get)


def _value(page: str, name: str, labels: dict[str, str], default: float | None = None) -> float:
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    if default is None:
        raise AssertionError(f"{name}{labels} is not on the page")
    return default


async def test_counters_move_and_no_identifier_leaks(stack: DevStack) -> None:
    enterprise = subject(stack, "enterprise_all_departments")
    before = await _scrape(stack)
    async with stack.client("procurement") as client:
        await client.query(enterprise=enterprise, purpose="government_procurement")
        await client.query(enterprise=enterprise, purpose="government_procurement")
    async with stack.client("ndrc") as client:
        await client.query(
            person=subject(stack, "person_with_loans"), purpose="supervision_inspection"
        )
    after = await _scrape(stack)
    name = "credit_gateway_queries_total"
    labels = {"agency": "procurement"}
    moved = sum(
        _value(after, name, labels | {"outcome": o}, 0.0)
        - _value(before, name, labels | {"outcome": o}, 0.0)
        for o in ("ok", "partial")
    )
    assert moved == 2
    assert (
        _value(
            after,
            "credit_gateway_department_requests_total",
            {"department": "market", "status": "ok"},
        )
        >= 2
    )
    assert _value(after, "credit_gateway_audit_records_total", {"kind": "query"}) >= 2
    assert _value(after, "credit_gateway_department_circuit_state", {"department": "tax"}) == 0
    assert (
        _value(
            after,
            "credit_gateway_fields_withheld_total",
            {"tier": "state_secret", "reason": "state_secret"},
        )
        >= 2
    )
    for key in ("enterprise_all_departments", "person_with_loans"):
        assert subject(stack, key) not in after


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)
async def test_promtool_accepts_the_page(stack: DevStack) -> None:
    page = await _scrape(stack)
    proc = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate(page.encode())
    # 0: well-formed and no lint warnings (promtool exits 3 for warnings, 1 for errors).
    assert proc.returncode == 0, out.decode()
