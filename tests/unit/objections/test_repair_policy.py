"""The credit-repair periods (policies/repair.toml): parsing, severities, month arithmetic."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from gateway.objections.repair import add_months, load_repair_policy, parse_repair_policy


def test_the_packaged_policy_agrees_with_the_catalog() -> None:
    policy = load_repair_policy()
    policy.check_catalog(load_catalog())
    assert {s: (v.min_months, v.max_months) for s, v in policy.severities.items()} == {
        "minor": (0, 3),
        "general": (3, 12),
        "serious": (12, 36),
    }
    rule = policy.rule("market", "administrative_penalties")
    assert rule is not None
    assert rule.severity_of({"penalty": "警告", "fine_fen": None}) == "minor"
    assert rule.severity_of({"penalty": "罚款", "fine_fen": 5_000_000}) == "general"
    assert rule.severity_of({"penalty": "罚款", "fine_fen": 10_000_000}) == "serious"
    assert policy.rule("market", "registration") is None  # not public credit information
    assert policy.allowed_from("general", dt.date(2026, 1, 31)) == dt.date(2026, 4, 30)
    assert policy.allowed_from("minor", dt.date(2026, 1, 31)) == dt.date(2026, 1, 31)
    assert policy.allowed_from("serious", dt.date(2024, 2, 29)) == dt.date(2025, 2, 28)


@given(st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2090, 1, 1)),
       st.integers(min_value=0, max_value=120))  # fmt: skip
def test_adding_months_never_shortens_a_period(day: dt.date, months: int) -> None:
    later = add_months(day, months)
    assert (later.year - day.year) * 12 + later.month - day.month == months
    assert later.day <= day.day
    # Clamped only when the target month is shorter: at least 28 days a month.
    assert (later - day).days >= 28 * months
    assert add_months(later, 1) >= add_months(day, months + 1) - dt.timedelta(days=3)


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"severities": {}}, "severities"),
        ({"severities": {"minor": {"min_months": 4, "max_months": 3}}}, "severities.minor"),
        ({"severities": {"minor": {"min_months": -1, "max_months": 3}}}, "severities.minor"),
        (
            {"severities": {"minor": {"min_months": 0, "max_months": 3}},
             "datasets": {"market": {"published_on": "x", "default": "minor"}}},
            'datasets."market"',
        ),
        (
            {"severities": {"minor": {"min_months": 0, "max_months": 3}},
             "datasets": {"market/x": {"published_on": "d", "default": "grave"}}},
            'datasets."market/x".default',
        ),
        (
            {"severities": {"minor": {"min_months": 0, "max_months": 3}},
             "datasets": {"market/x": {"published_on": "d", "default": "minor",
                                       "rules": [{"field": "f", "severity": "minor"}]}}},
            'datasets."market/x".rules[0]',
        ),
        ({"severities": {"minor": {"min_months": 0, "max_months": 3}}, "extra": 1}, "extra"),
    ],
)  # fmt: skip
def test_a_bad_policy_names_its_key(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_repair_policy(doc)
    assert err.value.key == key


def test_a_rule_on_a_field_the_catalog_lacks_is_refused() -> None:
    policy = parse_repair_policy(
        {
            "severities": {"minor": {"min_months": 0, "max_months": 3}},
            "datasets": {"market/administrative_penalties": {"published_on": "published",
                                                             "default": "minor"}},
        }
    )  # fmt: skip
    with pytest.raises(ConfigError, match="published"):
        policy.check_catalog(load_catalog())


def test_a_rule_for_a_dataset_the_catalog_lacks_is_left_unused() -> None:
    policy = parse_repair_policy(
        {
            "severities": {"minor": {"min_months": 0, "max_months": 3}},
            "datasets": {"customs/penalties": {"published_on": "decided_on", "default": "minor"}},
        }
    )
    policy.check_catalog(load_catalog())  # no department customs: nothing to check
