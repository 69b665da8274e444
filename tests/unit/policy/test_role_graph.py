"""Policies the engine cannot evaluate as the loader reads them are refused.

pycasbin's role manager follows at most ``max_hierarchy_level`` (10) levels of ``g`` links and
then answers "no link" silently: a deny on a role 10 links below the bank did not apply. The
loader now refuses such chains, role cycles and every matcher or model section other than the
one it understands, naming the file and line; policy drafts are refused the same way. A
property test draws random role graphs: each is either refused for a reason that really
holds, or Casbin and the compiled decider agree with a reference evaluation of the closure.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import casbin
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.auth.registry import Registry, Role, load_registry
from gateway.domain.catalog import Catalog, load_catalog
from gateway.domain.purposes import load_purposes
from gateway.errors import ConfigError
from gateway.pipeline.decision import QueryFacts
from gateway.policy import PolicyDecider
from gateway.policy.consent import ConsentVerifier
from gateway.policy.rules import (
    DEFAULT_MODEL_PATH,
    DEFAULT_POLICY_PATH,
    MAX_ROLE_DEPTH,
    PolicySet,
    parse_policy_set,
)
from gateway.policyadmin.admin import PolicyAdministrator, Serving
from gateway.policyadmin.errors import PolicyWorkflowError
from gateway.policyadmin.loading import DeciderRecipe, read_disk_files, validate_files
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore
from protos.credit.v1 import query_pb2

MODEL = DEFAULT_MODEL_PATH.read_text(encoding="utf-8")
SHIPPED = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
PURPOSES = tuple(load_purposes())


def parse(catalog: Catalog, registry: Registry, policy: str, model: str = MODEL) -> PolicySet:
    return parse_policy_set(
        model, policy, catalog, purposes=PURPOSES, agencies=registry.ids(Role.AGENCY)
    )


def chain(length: int, eft: str = "deny") -> str:
    """``g, bank, role:c1`` ... ``g, role:c<length-1>, role:c<length>`` and a line on the last."""
    lines = ["g, bank, role:c1"] + [f"g, role:c{i}, role:c{i + 1}" for i in range(1, length)]
    return "\n".join([*lines, f"p, role:c{length}, market/*, public, lending, any, {eft}"]) + "\n"


def decider(catalog: Catalog, policy: PolicySet) -> PolicyDecider:
    return PolicyDecider(catalog, policy, ConsentVerifier([]))


def registration_fields(catalog: Catalog, d: PolicyDecider) -> tuple[str, ...]:
    ds = catalog.dataset("market", "registration")
    assert ds is not None
    facts = QueryFacts(
        agency_id="bank",
        subject_type="enterprise",
        purpose="lending",
        mode=query_pb2.QUERY_MODE_PAID,
        datasets=(ds,),
        today=dt.date(2026, 11, 1),
    )
    return d.decide(facts).departments["market"].allowed.get("registration", ())


def test_the_engine_limit_is_read_from_pycasbin() -> None:
    assert MAX_ROLE_DEPTH == 9  # pycasbin 1.x: max_hierarchy_level = 10, distances 0..9


def test_the_issue_chain_of_ten_is_refused_naming_its_line(
    catalog: Catalog, registry: Registry
) -> None:
    shipped = parse(catalog, registry, SHIPPED)
    assert len(registration_fields(catalog, decider(catalog, shipped))) == 8
    policy = SHIPPED + chain(10)
    last_g = len(policy.splitlines()) - 1  # the line of "g, role:c9, role:c10"
    assert policy.splitlines()[last_g - 1] == "g, role:c9, role:c10"
    with pytest.raises(ConfigError) as exc:
        parse(catalog, registry, policy)
    assert exc.value.key == f"policy.csv:{last_g}"
    assert "role:c10 is 10 role links below an agency" in exc.value.message
    assert "at most 9" in exc.value.message


def test_a_chain_at_the_limit_loads_and_its_deny_wins(catalog: Catalog, registry: Registry) -> None:
    policy = parse(catalog, registry, SHIPPED + chain(MAX_ROLE_DEPTH))
    d = decider(catalog, policy)
    assert registration_fields(catalog, d) == ()
    assert not d.enforce("bank", "market/registration/name", "public", "lending", "paid")


@pytest.mark.parametrize(
    ("extra", "line_offset", "problem"),
    [
        ("g, bank, role:a\ng, role:a, role:b\ng, role:b, role:a\n", 3, "role:a would hold"),
        ("g, role:x, role:y\ng, role:y, role:x\n", 2, "role:x would hold"),
        ("g, bank, role:a\ng, role:a, role:b\ng, role:b, role:c\ng, role:c, role:a\n", 4, ""),
    ],
)
def test_role_cycles_are_refused_naming_the_closing_line(
    catalog: Catalog, registry: Registry, extra: str, line_offset: int, problem: str
) -> None:
    base = len(SHIPPED.splitlines())
    with pytest.raises(ConfigError, match="a role cycle") as exc:
        parse(catalog, registry, SHIPPED + extra)
    assert exc.value.key == f"policy.csv:{base + line_offset}"
    assert problem in exc.value.message


def test_the_longest_chain_counts_even_with_a_shortcut(
    catalog: Catalog, registry: Registry
) -> None:
    # bank reaches role:c10 in one link directly and in ten through the chain: which one the
    # engine walks decides nothing today, but a policy whose meaning hangs on it is refused.
    with pytest.raises(ConfigError, match="10 role links"):
        parse(catalog, registry, SHIPPED + "g, bank, role:c10\n" + chain(10))


# --- the model: only the meaning the loader reads ------------------------------------------

CANONICAL_M = (
    "m = g(r.sub, p.sub) && r.purpose == p.purpose && r.tier == p.tier && keyMatch(r.obj, p.obj)"
    ' && (p.mode == "any" || p.mode == r.mode)'
)


@pytest.mark.parametrize(
    "matcher",
    [
        "m = r.tier == p.tier && g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && "
        "(r.mode == p.mode || p.mode == 'any') && p.purpose == r.purpose",
        "m = (g(r.sub, p.sub)) && r.purpose==p.purpose && r.tier == p.tier && "
        'keyMatch(r.obj, p.obj) && ("any" == p.mode || p.mode == r.mode)',
    ],
)
def test_equivalent_spellings_of_the_matcher_load(
    catalog: Catalog, registry: Registry, matcher: str
) -> None:
    assert CANONICAL_M in MODEL
    parse(catalog, registry, SHIPPED, model=MODEL.replace(CANONICAL_M, matcher))


@pytest.mark.parametrize(
    ("old", "new", "section"),
    [
        # keyMatch reversed: "market/*" would match no request, though the loader says it does
        ("keyMatch(r.obj, p.obj)", "keyMatch(p.obj, r.obj)", "matchers"),
        # without the tier: lines of one tier would match fields of another
        (" && r.tier == p.tier", "", "matchers"),
        # without "any": a mode the loader accepts would match nothing
        ('(p.mode == "any" || p.mode == r.mode)', "p.mode == r.mode", "matchers"),
        # a literal the decider's per-tier grouping cannot see
        ("keyMatch(r.obj, p.obj)", 'keyMatch(r.obj, p.obj) && r.obj != "market/x/y"', "matchers"),
        ("g(r.sub, p.sub) &&", 'g(r.sub, p.sub) && r.sub != "bank" &&', "matchers"),
        ("g = _, _", "g = _, _, _", "role_definition"),
        ("g = _, _", "g = _, _\ng2 = _, _", "sections"),
        (
            "p = sub, obj, tier, purpose, mode, eft",
            "p = sub, obj, tier, purpose, mode, eft\np2 = sub, obj",
            "sections",
        ),
    ],
)
def test_a_matcher_or_section_of_another_meaning_is_refused(
    catalog: Catalog, registry: Registry, old: str, new: str, section: str
) -> None:
    assert old in MODEL
    with pytest.raises(ConfigError) as exc:
        parse(catalog, registry, SHIPPED, model=MODEL.replace(old, new, 1))
    assert exc.value.key == f"model.conf:{section}"


# --- drafts: validate and activate refuse the same ------------------------------------------


def test_a_draft_with_a_deep_chain_fails_validate(catalog: Catalog) -> None:
    files = read_disk_files()
    policy = files["policy.csv"] + chain(10)
    problems = validate_files({**files, "policy.csv": policy}, purposes=PURPOSES)
    line = len(policy.splitlines()) - 1
    assert any(p.startswith(f"policy.csv:{line}: role:c10 is 10 role links") for p in problems)


async def test_a_draft_with_a_deep_chain_cannot_be_activated(tmp_path: Path) -> None:
    files = read_disk_files()
    recipe = DeciderRecipe(purposes=PURPOSES)
    serving = Serving(load_catalog(), files["catalog.toml"], files["agencies.toml"])
    admin = PolicyAdministrator(
        SQLiteVersionStore(tmp_path / "v.sqlite"), recipe, serving=serving, poll_interval_s=0
    )
    try:
        admin.initial_decider(files)
        drafted = await admin.draft(
            "officer_a", {"policy.csv": files["policy.csv"] + chain(10)}, "deny the bank"
        )
        number = drafted.version.number
        _, problems = await admin.validate("officer_a", number)
        assert any("role:c10 is 10 role links" in p for p in problems)
        await admin.approve("officer_b", number, "looks fine")
        with pytest.raises(PolicyWorkflowError) as refused:
            await admin.activate("officer_a", number, "go")
        assert refused.value.reason in {"VALIDATION_FAILED", "LOAD_FAILED"}
        active = admin.store.active()
        assert active is not None and active.version == 1
    finally:
        await admin.close()


# --- property: random role graphs ------------------------------------------------------------

# Module-level, not fixtures: hypothesis prints its arguments, and a catalog is long.
CATALOG = load_catalog()
REGISTRY = load_registry()
AGENCIES = ("bank", "ndrc", "guarantor")
ROLES = tuple(f"role:r{i}" for i in range(14))
FIELDS = ("market/registration/name", "market/registration/legal_representative")


def _key_match(key: str, pattern: str) -> bool:
    star = pattern.find("*")
    return key == pattern if star < 0 else key[:star] == pattern[:star]


def _closure(links: list[tuple[str, str]], agency: str) -> set[str]:
    out, todo = {agency}, [agency]
    while todo:
        node = todo.pop()
        for member, role in links:
            if member == node and role not in out:
                out.add(role)
                todo.append(role)
    return out


def _longest(links: list[tuple[str, str]]) -> int | None:
    """The longest chain from an agency, or None if there is a cycle."""
    memo: dict[str, int] = {}
    on_stack: set[str] = set()

    def height(node: str) -> int | None:  # longest chain of links going up from node
        if node in memo:
            return memo[node]
        if node in on_stack:
            return None
        on_stack.add(node)
        best = 0
        for member, role in links:
            if member == node:
                h = height(role)
                if h is None:
                    return None
                best = max(best, h + 1)
        on_stack.discard(node)
        memo[node] = best
        return best

    members = {m for m, _ in links} | {r for _, r in links}
    heights = [height(n) for n in sorted(members)]
    if any(h is None for h in heights):
        return None
    return max((memo[a] for a in AGENCIES if a in memo), default=0)


graphs = st.lists(
    st.tuples(st.sampled_from(AGENCIES + ROLES), st.sampled_from(ROLES)).filter(
        lambda link: link[0] != link[1]
    ),
    min_size=1,
    max_size=24,
    unique=True,
)
lines = st.lists(
    st.tuples(
        st.sampled_from(AGENCIES + ROLES),
        st.sampled_from(("market/*", "market/registration/*", *FIELDS)),
        st.sampled_from(("allow", "deny")),
    ),
    min_size=1,
    max_size=8,
)
# A long chain often: fan-in and cycles come by themselves.
chains = st.integers(0, 12)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=graphs, grants=lines, chain_length=chains)
def test_property_refused_or_the_closure(
    graph: list[tuple[str, str]],
    grants: list[tuple[str, str, str]],
    chain_length: int,
) -> None:
    links = list(graph)
    if chain_length:
        path = ["bank", *ROLES[:chain_length]]
        links += [(a, b) for a, b in itertools.pairwise(path) if (a, b) not in links]
    # The loader refuses roles nobody holds; keep the draws about the graph itself.
    while True:
        held = {role for _, role in links}
        kept = [(m, r) for m, r in links if not m.startswith("role:") or m in held]
        if kept == links:
            break
        links = kept
    grants = [g for g in grants if not g[0].startswith("role:") or g[0] in held]
    text = "".join(f"g, {m}, {r}\n" for m, r in links) + "".join(
        f"p, {sub}, {obj}, public, lending, any, {eft}\n" for sub, obj, eft in grants
    )
    catalog, registry = CATALOG, REGISTRY
    longest = _longest(links)
    try:
        policy = parse(catalog, registry, text)
    except ConfigError as exc:
        event("refused: " + ("cycle" if "a role cycle" in exc.message else "depth"))
        if "a role cycle" in exc.message:
            assert longest is None
        else:
            assert "role links below an agency" in exc.message, exc.message
            assert longest is not None and longest > MAX_ROLE_DEPTH
        return
    assert longest is not None and longest <= MAX_ROLE_DEPTH
    event(f"loaded, longest chain {longest}")
    d = decider(catalog, policy)
    ds = catalog.dataset("market", "registration")
    assert ds is not None
    for agency in AGENCIES:
        subjects = _closure(links, agency)
        facts = QueryFacts(
            agency_id=agency,
            subject_type="enterprise",
            purpose="lending",
            mode=query_pb2.QUERY_MODE_FREE,
            datasets=(ds,),
            today=dt.date(2026, 11, 1),
        )
        compiled = set(d.decide(facts).departments["market"].allowed.get("registration", ()))
        for field in FIELDS:
            matching = [
                eft for sub, obj, eft in grants if sub in subjects and _key_match(field, obj)
            ]
            expected = "allow" in matching and "deny" not in matching
            assert d.enforce(agency, field, "public", "lending", "free") == expected
            assert (field.rsplit("/", 1)[1] in compiled) == expected, (agency, field)


def test_pycasbin_really_drops_the_tenth_link() -> None:
    """The fault itself, so that a pycasbin that changes is noticed here."""
    model = casbin.Enforcer.new_model(text=MODEL)
    e = casbin.Enforcer(model)
    path = ["bank", *[f"role:c{i}" for i in range(1, 11)]]
    for a, b in itertools.pairwise(path):
        e.add_grouping_policy(a, b)
    rm = e.get_role_manager()
    assert rm.has_link("bank", "role:c9")
    assert not rm.has_link("bank", "role:c10")
