"""Validation, the test matrix, diff and replay over the shipped files and small changes."""

from __future__ import annotations

from typing import Any

from gateway.domain.catalog import load_catalog
from gateway.policyadmin.analysis import diff_versions, replay_records
from gateway.policyadmin.loading import (
    DeciderRecipe,
    run_tests,
    validate_files,
    version_label,
    version_number,
)

from .conftest import loaded, narrower, wider


def test_shipped_files_validate_and_pass(files: dict[str, str], recipe: DeciderRecipe) -> None:
    assert validate_files(files, purposes=recipe.purposes) == []
    cases, failures = run_tests(loaded(1, files, recipe), recipe)
    assert cases > 10 and failures == []


def test_validate_lists_every_problem(files: dict[str, str], recipe: DeciderRecipe) -> None:
    bad = {
        **files,
        "policy.csv": files["policy.csv"]
        + "p, role:lender, nosuch/*, public, lending, paid, allow\n"
        + "p, role:lender, hrss/social_security/medical_history, personal_privacy, lending,"
        " paid, allow\n" + "p, role:lender, *, public, no_such_purpose, paid, allow\n",
    }
    problems = validate_files(bad, purposes=recipe.purposes)
    assert len(problems) == 3
    assert "unknown department 'nosuch'" in problems[0]
    assert "prohibited item" in problems[1]
    assert "unknown purpose" in problems[2]
    regex = {**files, "model.conf": files["model.conf"].replace("keyMatch", "regexMatch")}
    [problem] = validate_files(regex, purposes=recipe.purposes)
    assert "regexMatch is not allowed" in problem
    broken_catalog = {**files, "catalog.toml": "version = "}
    assert validate_files(broken_catalog, purposes=recipe.purposes)[0].startswith("catalog.toml")


def test_a_draft_test_file_runs_and_can_fail(files: dict[str, str], recipe: DeciderRecipe) -> None:
    case = """
[[case]]
name = "procurement screens for joint punishment"
agency = "procurement"
purpose = "joint_punishment_screen"
datasets = ["court/dishonest_debtors"]
visible = ["*"]
"""
    with_case = {**wider(files), "tests/joint.toml": case}
    assert run_tests(loaded(2, with_case, recipe), recipe)[1] == []
    shipped_policy = {**files, "tests/joint.toml": case}
    failures = run_tests(loaded(3, shipped_policy, recipe), recipe)[1]
    assert failures and all("joint" in f for f in failures)
    assert run_tests(loaded(4, narrower(files), recipe), recipe)[1]


def test_diff_names_what_each_agency_gains_and_loses(
    files: dict[str, str], recipe: DeciderRecipe
) -> None:
    base, draft = loaded(1, files, recipe), loaded(2, wider(files), recipe)
    changes, compared = diff_versions(base, draft, recipe)
    assert compared == 8 * len(recipe.purposes) * 2 * 2  # agencies x purposes x modes x types
    assert {(c.agency, c.purpose, c.mode) for c in changes} == {
        ("procurement", "joint_punishment_screen", "free")
    }
    assert all(c.visible and not c.hidden for c in changes)
    assert "court/dishonest_debtors/case_number" in changes[0].visible
    reverse, _ = diff_versions(draft, base, recipe)
    assert all(c.hidden and not c.visible for c in reverse)
    same, _ = diff_versions(base, base, recipe, with_consent=True)
    assert same == []
    consented, _ = diff_versions(
        base, loaded(3, narrower(files), recipe), recipe, with_consent=True
    )
    assert {c.consent for c in consented} == {False, True}
    assert all(c.agency == "bank" and c.hidden for c in consented)


_DEBTORS = load_catalog().dataset("court", "dishonest_debtors")
assert _DEBTORS is not None
_DEBTOR_FIELDS = sorted(_DEBTORS.fields)


def _record(**kw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "query",
        "outcome": "partial",
        "request_id": "r-1",
        "agency_id": "procurement",
        "purpose": "joint_punishment_screen",
        "mode": "free",
        "subject_type": "enterprise",
        "policy_version": version_label(1, "0" * 16),
        "departments": {
            "court": {
                "datasets": [],
                "withheld": [
                    {"dataset": "dishonest_debtors", "field": f, "reason": "not_granted"}
                    for f in _DEBTOR_FIELDS
                ],
            }
        },
    }
    record.update(kw)
    return record


def test_replay_lists_flips(files: dict[str, str], recipe: DeciderRecipe) -> None:
    draft = loaded(2, wider(files), recipe)
    records = [
        (10, _record()),
        (11, {"kind": "billing"}),
        (12, _record(outcome="permission_denied")),
    ]
    replayed, flips = replay_records(records, draft, recipe)
    assert replayed == 1
    [flip] = flips
    assert flip.log_index == 10 and flip.agency == "procurement"
    assert "court/dishonest_debtors/case_number" in flip.granted and not flip.denied
    assert version_number(flip.decided_under) == 1
    unchanged, none = replay_records(records, loaded(1, files, recipe), recipe)
    # Re-decided under the policy it was decided under, nothing flips.
    assert unchanged == 1 and none == []
