"""The policy test matrix (policies/tests/*.toml) against the shipped policy, and the runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth.registry import Registry
from gateway.domain.catalog import Catalog
from gateway.errors import ConfigError
from gateway.policy import DEFAULT_POLICY_PATH
from gateway.policy.testing import (
    CONSENT_STATES,
    DEFAULT_MATRIX_PATH,
    default_factory,
    load_cases,
    run_matrix,
)
from tests.unit.policy.conftest import write


def test_the_shipped_policy_passes_the_matrix(catalog: Catalog, registry: Registry) -> None:
    failures = run_matrix(default_factory(catalog, registry=registry), catalog=catalog)
    assert failures == [], "\n".join(map(str, failures))


def test_the_matrix_covers_every_agency_consent_state_and_reason(registry: Registry) -> None:
    cases = [c for f in sorted(DEFAULT_MATRIX_PATH.glob("*.toml")) for c in load_cases(f)]
    assert len(cases) >= 30
    assert {c.consent for c in cases} == set(CONSENT_STATES)
    assert {c.agency for c in cases} >= {
        a for a in registry.ids("agencies") if a != "suspended_agency"
    }
    reasons = {r for c in cases for r in c.withheld.values()}
    assert reasons == {
        "not_granted",
        "consent_required",
        "paid_mode_required",
        "free_mode_required",
        "prohibited_item",
        "state_secret",
    }


CASE = """
[[case]]
name = "bank sees public court records"
agency = "bank"
purpose = "lending"
mode = "paid"
subject = "person"
datasets = ["court/dishonest_debtors"]
visible = ["*"]
called = ["court"]
"""


def test_a_wrong_expectation_is_reported(
    catalog: Catalog, registry: Registry, tmp_path: Path
) -> None:
    factory = default_factory(catalog, registry=registry)
    path = write(tmp_path, "cases.toml", CASE)
    assert run_matrix(factory, path, catalog=catalog) == []
    wrong = write(tmp_path, "wrong.toml", CASE.replace('mode = "paid"', 'mode = "free"'))
    failures = run_matrix(factory, wrong, catalog=catalog)
    assert failures and all(f.case == "bank sees public court records" for f in failures)
    assert "expected visible (by *), got paid_mode_required" in str(failures[0])
    assert "department court would not be asked" in str(failures[-1])
    partial = write(tmp_path, "partial.toml", CASE.replace('visible = ["*"]', ""))
    assert "not covered by the case" in str(run_matrix(factory, partial, catalog=catalog)[0])
    loose = write(tmp_path, "loose.toml", CASE.replace('visible = ["*"]', "exact = false"))
    assert run_matrix(factory, loose, catalog=catalog) == []
    unknown = write(tmp_path, "unknown.toml", CASE.replace("court/dishonest", "court/honest"))
    assert "not in the catalog" in str(run_matrix(factory, unknown, catalog=catalog)[0])


def test_a_draft_policy_is_run_against_the_matrix(
    catalog: Catalog, registry: Registry, tmp_path: Path
) -> None:
    draft = write(
        tmp_path,
        "draft.csv",
        DEFAULT_POLICY_PATH.read_text()
        + "p, role:lender, court/dishonest_debtors/*, public, lending, any, deny\n",
    )
    factory = default_factory(catalog, policy=draft, registry=registry)
    failures = run_matrix(factory, write(tmp_path, "c.toml", CASE), catalog=catalog)
    assert "expected visible (by *), got not_granted" in str(failures[0])
    bad = write(tmp_path, "bad.csv", "p, role:lender, *, state_secret, lending, paid, allow\n")
    with pytest.raises(ConfigError) as err:
        run_matrix(default_factory(catalog, policy=bad, registry=registry), DEFAULT_MATRIX_PATH)
    assert err.value.key == "bad.csv:1"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "c.toml:case"),
        ("[[case]]\nagency = 'bank'\npurpose = 'lending'\n", "c.toml:case[0].name"),
        (CASE + "colour = 'red'\n", "c.toml:case[0].colour"),
        (CASE.replace('mode = "paid"', 'mode = "cheap"'), "c.toml:case[0].mode"),
        (CASE.replace('subject = "person"', 'subject = "robot"'), "c.toml:case[0].subject"),
        (CASE + "consent = 'maybe'\n", "c.toml:case[0].consent"),
        (CASE + "withheld = { '*' = 'because' }\n", "c.toml:case[0].withheld.*"),
        (CASE + "self = 'yes'\n", "c.toml:case[0].self"),
        (CASE + "scope = 'tier:public'\n", "c.toml:case[0].scope"),
        ("[[case]\n", None),
    ],
)
def test_malformed_case_files(tmp_path: Path, text: str, key: str | None) -> None:
    path = write(tmp_path, "c.toml", text)
    with pytest.raises(ConfigError) as err:
        load_cases(path)
    assert err.value.key == (key or str(path))
