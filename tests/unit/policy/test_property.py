"""Property: cached decisions agree with pycasbin asked directly, for random policies and
random requests.

The oracle is an enforcer Casbin builds itself from the model file and the policy text
(its own StringAdapter, not the decider's loader), asked once per field and mode; the law
(prohibited items, state secrets) and consent are applied on top exactly as the decider's
documented order says. Every request is decided twice, the second time from the cache.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import casbin
from casbin.persist.adapters.string_adapter import StringAdapter
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.auth.registry import Registry
from gateway.domain.catalog import Catalog, Dataset, Tier, load_catalog
from gateway.domain.purposes import load_purposes
from gateway.pipeline.decision import QueryFacts, _legal_block
from gateway.policy import DEFAULT_MODEL_PATH, DEFAULT_POLICY_PATH, PolicyDecider
from gateway.policy.consent import ConsentVerifier, issue_consent
from gateway.policy.rules import parse_policy_set
from gateway.policy.testing import MatrixIssuer
from protos.credit.v1 import query_pb2
from tests.unit.policy.conftest import ENTERPRISE, PERSON, outcome

CATALOG = load_catalog()
MODEL = DEFAULT_MODEL_PATH.read_text(encoding="utf-8")
PURPOSES = tuple(load_purposes())
ISSUER = MatrixIssuer()
AGENCIES = ("ndrc", "procurement", "bank", "guarantor", "self_service", "nogrants")
ROLES = ("role:a", "role:b", "role:c")
# Few purposes, so that random grants and random requests meet often.
HOT_PURPOSES = ("lending", "supervision_inspection", "self_query")
TIERS = tuple(t.value for t in Tier if t is not Tier.STATE_SECRET)
MODES = {"free": query_pb2.QUERY_MODE_FREE, "paid": query_pb2.QUERY_MODE_PAID}
DATASETS = tuple(CATALOG.datasets())
GRANTABLE_FIELDS = tuple(
    (ds, f)
    for ds in DATASETS
    for f in ds.fields.values()
    if _legal_block(f.tier, f.prohibited) is None
)
CONSENT_TIERS = {Tier.COMMERCIAL_SECRET, Tier.PERSONAL_PRIVACY}
R = query_pb2.WithholdReason


@dataclass(frozen=True)
class Target:
    """What one grant line speaks of, so that requests can be aimed at it."""

    agencies: tuple[str, ...]
    purpose: str
    datasets: tuple[Dataset, ...]


@dataclass(frozen=True)
class Policy:
    text: str
    targets: tuple[Target, ...]


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    lines: list[str] = []
    holders: dict[str, list[str]] = {}
    for role in ROLES:  # every role is held by someone (the loader insists)
        for agency in draw(st.lists(st.sampled_from(AGENCIES), min_size=1, max_size=3)):
            lines.append(f"g, {agency}, {role}")
            holders.setdefault(role, []).append(agency)
    if draw(st.booleans()):
        lines.append("g, role:a, role:b")  # a role hierarchy
        holders["role:b"] += holders["role:a"]
    targets: list[Target] = []
    for _ in range(draw(st.integers(1, 16))):
        sub = draw(st.sampled_from(ROLES + AGENCIES))
        # Aim at one field, at the chosen granularity: grants then meet requests often.
        ds, f = draw(st.sampled_from(GRANTABLE_FIELDS))
        tier = f.tier.value
        eft = draw(st.sampled_from(["allow", "allow", "allow", "deny"]))
        obj = draw(
            st.sampled_from(
                ["*", f"{ds.department}/*", f"{ds.department}/{ds.name}/*",
                 f"{ds.department}/{ds.name}/{f.name}"]
            )
        )  # fmt: skip
        purpose = draw(st.sampled_from(HOT_PURPOSES))
        mode = draw(st.sampled_from(["free", "paid", "any"]))
        lines.append(f"p, {sub}, {obj}, {tier}, {purpose}, {mode}, {eft}")
        agencies = tuple(holders.get(sub, [sub]))
        targets.append(Target(agencies, purpose, (ds,)))
    return Policy("\n".join(lines) + "\n", tuple(targets))


@dataclass(frozen=True)
class Request:
    agency: str
    purpose: str
    mode: str
    subject: str
    datasets: tuple[Dataset, ...]
    is_self: bool
    scope: tuple[str, ...] | None  # None: no consent token


@st.composite
def requests(draw: st.DrawFn, targets: tuple[Target, ...] = ()) -> Request:
    """Random requests; most aimed at one of ``targets`` so that grants are met often."""
    aim = bool(targets) and draw(st.integers(0, 3)) > 0
    target: Target | None = draw(st.sampled_from(targets)) if aim else None
    if target is not None:
        aimed = draw(st.sampled_from(target.datasets))
        subject = draw(st.sampled_from(sorted(aimed.subject_types)))
        agency = draw(st.sampled_from(target.agencies))
        purpose = target.purpose
    else:
        aimed = None
        subject = draw(st.sampled_from(["person", "enterprise"]))
        agency = draw(st.sampled_from((*AGENCIES, "stranger")))
        purpose = draw(st.sampled_from(HOT_PURPOSES + PURPOSES))
    candidates = [d for d in DATASETS if subject in d.subject_types]
    chosen = draw(
        st.lists(
            st.sampled_from(candidates),
            min_size=1,
            max_size=3,
            unique_by=lambda d: (d.department, d.name),
        )
    )
    if aimed is not None and aimed not in chosen:
        chosen.append(aimed)
    scope = None
    if draw(st.booleans()):
        entries = [f"{d.department}/{d.name}" for d in candidates] + [
            f"{d}/*" for d in CATALOG.departments
        ] + [f"tier:{t}" for t in TIERS]  # fmt: skip
        scope = tuple(draw(st.lists(st.sampled_from(entries), min_size=1, max_size=4)))
    return Request(
        agency=agency,
        purpose=purpose,
        mode=draw(st.sampled_from(sorted(MODES))),
        subject=subject,
        datasets=tuple(chosen),
        is_self=draw(st.booleans()),
        scope=scope,
    )


def facts_of(req: Request) -> QueryFacts:
    subject_id = PERSON if req.subject == "person" else ENTERPRISE
    token = ""
    if req.scope is not None:
        token = issue_consent(
            ISSUER.key,
            ISSUER.kid,
            issuer=ISSUER.issuer,
            subject_type=req.subject,
            subject_id=subject_id,
            grantee=req.agency,
            purpose=req.purpose,
            scope=req.scope,
        )
    return QueryFacts(
        agency_id=req.agency,
        subject_type=req.subject,
        purpose=req.purpose,
        mode=MODES[req.mode],
        datasets=req.datasets,
        today=dt.date(2026, 11, 1),
        is_self=req.is_self,
        consent_token=token,
        subject_id=subject_id,
    )


def covered(scope: Sequence[str], ds: Dataset, tier: Tier) -> bool:
    return (
        f"tier:{tier.value}" in scope
        or f"{ds.department}/{ds.name}" in scope
        or f"{ds.department}/*" in scope
    )


class Oracle:
    """Casbin asked directly (every policy line evaluated); answers remembered per request
    tuple only so that repeated random requests do not pay twice."""

    def __init__(self, enforcer: casbin.Enforcer) -> None:
        self.enforcer = enforcer
        self.memo: dict[tuple[str, ...], bool] = {}

    def enforce(self, *args: str) -> bool:
        if args not in self.memo:
            self.memo[args] = bool(self.enforcer.enforce(*args))
        return self.memo[args]


def expected(oracle: Oracle, req: Request) -> dict[str, int | str]:
    """What the documented rules say, with Casbin asked directly for every field."""
    out: dict[str, int | str] = {}
    self_query = req.purpose == "self_query"
    waived = req.is_self and self_query
    for ds in req.datasets:
        for f in ds.fields.values():
            key = f"{ds.department}/{ds.name}/{f.name}"
            block = _legal_block(f.tier, f.prohibited)
            if block is not None:
                out[key] = block[0]
                continue
            if self_query and not req.is_self:
                out[key] = R.WITHHOLD_REASON_NOT_GRANTED
                continue
            free, paid = (
                oracle.enforce(req.agency, key, f.tier.value, req.purpose, m)
                for m in ("free", "paid")
            )
            if not (free if req.mode == "free" else paid):
                if req.mode == "free" and paid:
                    out[key] = R.WITHHOLD_REASON_PAID_MODE_REQUIRED
                elif req.mode == "paid" and free:
                    out[key] = R.WITHHOLD_REASON_FREE_MODE_REQUIRED
                else:
                    out[key] = R.WITHHOLD_REASON_NOT_GRANTED
                continue
            bound = (
                f.tier in CONSENT_TIERS
                or f.consent_item
                or (ds.department == "pbccrc" and "enterprise" in ds.subject_types)
            )
            if bound and not waived and (req.scope is None or not covered(req.scope, ds, f.tier)):
                out[key] = R.WITHHOLD_REASON_CONSENT_REQUIRED
                continue
            out[key] = "visible"
    return out


def decider_for(policy_text: str, registry: Registry) -> PolicyDecider:
    policy = parse_policy_set(
        MODEL,
        policy_text,
        CATALOG,
        purposes=PURPOSES,
        agencies=registry.ids("agencies"),
    )
    return PolicyDecider(CATALOG, policy, ConsentVerifier([ISSUER.trusted]), cache_size=8)


def check(decider: PolicyDecider, oracle: Oracle, batch: Sequence[Request]) -> None:
    wanted = [expected(oracle, req) for req in batch]
    for req, want in zip([*batch, *batch], wanted * 2, strict=True):
        # The second round is served from the caches.
        got = {
            k: (v if v == "visible" else v[0])
            for k, v in outcome(decider.decide(facts_of(req))).items()
        }
        assert got == want, req
        for value in set(want.values()):
            name = value if isinstance(value, str) else R.Name(R.ValueType(value))
            event(f"outcome {name}")


SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(data=st.data(), policy=policies())
def test_random_policies_agree_with_casbin(
    registry: Registry, data: st.DataObject, policy: Policy
) -> None:
    batch = data.draw(st.lists(requests(policy.targets), min_size=1, max_size=3))
    decider = decider_for(policy.text, registry)
    oracle = Oracle(casbin.Enforcer(str(DEFAULT_MODEL_PATH), StringAdapter(policy.text)))
    check(decider, oracle, batch)
    # The decider's own window on the whole policy agrees with the oracle too.
    for req in batch:
        for ds in req.datasets:
            for f in ds.fields.values():
                obj = f"{ds.department}/{ds.name}/{f.name}"
                args = (req.agency, obj, f.tier.value, req.purpose, req.mode)
                assert decider.enforce(*args) == oracle.enforce(*args)
                break  # one field per dataset: the full policy is slow to ask


_CACHE: dict[str, object] = {}
#: The grants of the shipped policy, to aim requests at.
SHIPPED_TARGETS = tuple(
    Target(agencies, purpose, DATASETS)
    for agencies, purpose in [
        (("ndrc",), "supervision_inspection"),
        (("ndrc",), "administrative_licensing"),
        (("ndrc",), "joint_punishment_screen"),
        (("procurement",), "government_procurement"),
        (("bank",), "lending"),
        (("guarantor",), "guarantee"),
        (("self_service",), "self_query"),
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(requests(SHIPPED_TARGETS), min_size=1, max_size=6))
def test_the_shipped_policy_agrees_with_casbin(
    catalog: Catalog, registry: Registry, batch: list[Request]
) -> None:
    check(_shipped(registry), _shipped_oracle(), batch)


def _shipped(registry: Registry) -> PolicyDecider:
    # One decider for all examples: its caches fill up across them, as in production.
    if "decider" not in _CACHE:
        _CACHE["decider"] = decider_for(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"), registry)
    decider = _CACHE["decider"]
    assert isinstance(decider, PolicyDecider)
    return decider


def _shipped_oracle() -> Oracle:
    if "oracle" not in _CACHE:
        # Casbin's own file adapter reads the file, comments and all.
        enforcer = casbin.Enforcer(str(DEFAULT_MODEL_PATH), str(DEFAULT_POLICY_PATH))
        _CACHE["oracle"] = Oracle(enforcer)
    oracle = _CACHE["oracle"]
    assert isinstance(oracle, Oracle)
    return oracle
