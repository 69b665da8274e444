"""Loading the Casbin model and policy: every refusal names the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth.registry import Registry
from gateway.domain.catalog import Catalog
from gateway.domain.purposes import load_purposes
from gateway.errors import ConfigError
from gateway.policy import DEFAULT_MODEL_PATH, DEFAULT_POLICY_PATH, build_decider
from gateway.policy.rules import PolicySet, parse_policy_set

MODEL = DEFAULT_MODEL_PATH.read_text(encoding="utf-8")
ROLES = "g, bank, role:lender\n"


def parse(catalog: Catalog, registry: Registry, policy: str, model: str = MODEL) -> object:
    return parse_policy_set(
        model,
        policy,
        catalog,
        purposes=tuple(load_purposes()),
        agencies=registry.ids("agencies"),
    )


def test_shipped_policy_loads_with_a_content_hash_version(
    catalog: Catalog, registry: Registry, tmp_path: Path
) -> None:
    a = build_decider(catalog, registry=registry)
    b = build_decider(catalog, registry=registry)
    assert a.version == b.version and len(a.version) == 16
    assert len(a.policy.grants) > 10 and a.policy.links
    changed = tmp_path / "policy.csv"
    changed.write_text(DEFAULT_POLICY_PATH.read_text() + "\n# a comment changes the text\n")
    assert build_decider(catalog, registry=registry, policy=changed).version != a.version


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            "p, role:lender, hrss/social_security/medical_history, personal_privacy, lending,"
            " paid, allow",
            "prohibited item",
        ),
        ("p, role:lender, *, state_secret, lending, paid, allow", "state_secret tier"),
        (
            "p, role:lender, court/enforcement_cases/classified_particulars, state_secret,"
            " lending, paid, allow",
            "state_secret tier",
        ),
        (
            "p, role:lender, court/enforcement_cases/classified_particulars, government_shared,"
            " lending, paid, allow",
            "state secret",
        ),
        ("p, role:lender, nowhere/*, public, lending, paid, allow", "unknown department"),
        ("p, role:lender, tax/nothing/*, public, lending, paid, allow", "unknown dataset"),
        ("p, role:lender, tax/arrears/nothing, public, lending, paid, allow", "unknown field"),
        ("p, role:lender, tax/arrears/amount_fen, public, lending, paid, allow", "never matches"),
        ("p, role:lender, tax/arrears, public, lending, paid, allow", "must be *"),
        ("p, role:lender, tax*, public, lending, paid, allow", "unknown department"),
        ("p, role:lender, *, secretish, lending, paid, allow", "unknown tier"),
        ("p, role:lender, *, public, gambling, paid, allow", "unknown purpose"),
        ("p, role:lender, *, public, lending, sometimes, allow", "mode must be"),
        ("p, role:lender, *, public, lending, paid, maybe", "effect must be"),
        ("p, role:nobody, *, public, lending, paid, allow", "held by nobody"),
        ("p, stranger, *, public, lending, paid, allow", "unknown agency"),
        ("p, role:lender, *, public, lending, paid", "a p line is"),
        ("g, stranger, role:lender", "unknown agency"),
        ("g, bank, lender", "role:<name>"),
        ("g, role:ghost, role:lender", "unknown role"),
        ("q, bank, role:lender", "unknown line type"),
        ("p, role:lender, .*, public, lending, paid, allow", "unknown department"),
        ("p, role:lender, (*), public, lending, paid, allow", "malformed value"),
    ],
)
def test_bad_policy_lines_are_refused_naming_the_line(
    catalog: Catalog, registry: Registry, line: str, problem: str
) -> None:
    policy = ROLES + "# grants\n" + line + "\n"
    with pytest.raises(ConfigError) as err:
        parse(catalog, registry, policy)
    assert err.value.key == "policy.csv:3", err.value
    assert problem in err.value.problem
    assert line.split(",")[1].strip() in err.value.problem  # the line itself is quoted


def test_a_deny_may_name_a_state_secret_or_a_prohibited_item(
    catalog: Catalog, registry: Registry
) -> None:
    policy_set = parse(
        catalog,
        registry,
        ROLES
        + "p, role:lender, *, public, lending, paid, allow\n"
        + "p, role:lender, *, state_secret, lending, any, deny\n"
        + "p, role:lender, hrss/social_security/medical_history, personal_privacy, lending,"
        " any, deny\n",
    )
    # Denying what the law forbids anyway is harmless, so it loads, with both denies kept.
    assert isinstance(policy_set, PolicySet)
    denies = {(g.obj, g.tier) for g in policy_set.grants if g.eft == "deny"}
    assert denies == {
        ("*", "state_secret"),
        ("hrss/social_security/medical_history", "personal_privacy"),
    }


def test_refusal_names_the_policy_file(
    catalog: Catalog, registry: Registry, tmp_path: Path
) -> None:
    draft = tmp_path / "draft.csv"
    draft.write_text(ROLES + "p, role:lender, *, state_secret, lending, paid, allow\n")
    with pytest.raises(ConfigError) as err:
        build_decider(catalog, registry=registry, policy=draft)
    assert err.value.key == "draft.csv:2"
    with pytest.raises(ConfigError, match="cannot read"):
        build_decider(catalog, registry=registry, policy=tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("r = sub, obj, tier, purpose, mode", "r = sub, obj, act", "request_definition"),
        ("p = sub, obj, tier, purpose, mode, eft", "p = sub, obj, tier, purpose, mode", "policy"),
        (
            "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))",
            "e = some(where (p.eft == allow))",
            "policy_effect",
        ),
        ("keyMatch(r.obj, p.obj)", "regexMatch(r.obj, p.obj)", "matchers"),
        ("g(r.sub, p.sub) && ", "", "matchers"),
        ("r.purpose == p.purpose && ", "", "matchers"),
        ("g(r.sub, p.sub) &&", "(g(r.sub, p.sub) || r.sub == p.sub) &&", "matchers"),
        ("[role_definition]\ng = _, _", "", "role_definition"),
    ],
)
def test_a_model_of_another_shape_is_refused(
    catalog: Catalog, registry: Registry, old: str, new: str, where: str
) -> None:
    assert old in MODEL
    with pytest.raises(ConfigError) as err:
        parse(catalog, registry, ROLES, model=MODEL.replace(old, new))
    assert where in err.value.key or where in err.value.problem, err.value


def test_garbage_model_is_a_config_error(catalog: Catalog, registry: Registry) -> None:
    with pytest.raises(ConfigError, match="model"):
        parse(catalog, registry, ROLES, model="[matchers]\nm = (((\n")
