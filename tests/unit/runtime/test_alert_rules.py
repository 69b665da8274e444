"""The shipped Prometheus alert rules: `promtool test rules` on recorded series where a
harvesting pattern fires and a normal agency does not, and every metric they read is one
the gateway exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.runtime.metrics import Metrics

RULES_DIR = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
RULES = RULES_DIR / "credit-gateway-rules.yml"
RULE_TESTS = RULES_DIR / "credit-gateway-rules.test.yml"
ALERTS = {
    "CreditGatewayAgencyAboveBaseline",
    "CreditGatewayManySubjectsWithoutCaseReference",
    "CreditGatewayQueriesWithoutCaseReference",
    "CreditGatewayPersistentRefusals",
    "CreditGatewayObjectionsOverdue",
}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        # Loud, never a silent pass: .ci/run installs Debian's prometheus for it.
        pytest.skip(
            "SKIPPED, NOT PASSED: promtool is not installed (Debian package prometheus); "
            "the alert rules are untested here"
        )
    return path


def _code(path: Path) -> str:
    """The YAML without its comments (no YAML parser in the dependencies; the files are
    simple enough, and promtool itself parses them in the tests below)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _alerts() -> set[str]:
    return set(re.findall(r"- alert: (\w+)", _code(RULES)))


def _eval_cases() -> list[str]:
    return _code(RULE_TESTS).split("- eval_time:")[1:]


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_check_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_to_fire() -> None:
    assert _alerts() == ALERTS
    fired = set()
    for case in _eval_cases():
        name = re.search(r"alertname: (\w+)", case)
        assert name is not None
        if "exp_alerts: []" not in case:
            fired.add(name.group(1))
            # One agency (or department) fires; the normal ones beside it stay quiet.
            assert case.count("exp_labels:") == 1, case
    assert fired == ALERTS
    # And each test group has a normal agency beside the harvesting one.
    assert _code(RULE_TESTS).count('agency="bank"') >= 3


def test_rules_read_only_exported_metrics() -> None:
    exported = set()
    for family in Metrics().registry.collect():
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
    exported |= {f"{n}_{s}" for n in list(exported) for s in ("bucket", "count", "sum", "total")}
    used = set(re.findall(r"\b(credit_gateway_[a-z_]+)", _code(RULES)))
    assert used, "the rules read nothing"
    assert used <= exported, sorted(used - exported)


def test_rules_group_by_agency_or_department_only() -> None:
    # Alerts name agencies (or, for objections, the published departments), never anything
    # finer (and no label holds a subject anyway).
    assert set(re.findall(r"by \(([^)]*)\)", _code(RULES))) == {"agency", "department"}
