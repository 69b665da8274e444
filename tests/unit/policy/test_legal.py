"""Access by law: the published list, who may cite what, and the decider opening tiers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit.schema import QueryRecord, SubjectAccessRecord
from gateway.domain.catalog import Catalog, Tier
from gateway.domain.purposes import load_purposes
from gateway.errors import ConfigError, InvalidArgumentError, PermissionDeniedError
from gateway.pipeline.validation import Validator
from gateway.policy import PolicyDecider
from gateway.policy.legal import LegalBases, load_legal_bases, parse_legal_bases
from protos.credit.v1 import common_pb2, query_pb2
from tests.unit.policy.conftest import FactsMaker, R

LOANS = "pbccrc/personal_loans"


def _basis(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "statute": "S",
        "article": "A",
        "title_en": "T",
        "agency_kinds": ["government_body"],
        "tiers": ["personal_privacy"],
        "purposes": ["supervision_inspection"],
        "case_reference_required": True,
        "confidentiality_days": 0,
    }
    base.update(over)
    return base


def test_the_published_list_loads_and_names_only_known_purposes() -> None:
    bases = load_legal_bases(purposes=frozenset(load_purposes()))
    assert "supervision_law_art26" in bases.codes()
    for code in bases.codes():
        b = bases.get(code)
        assert b is not None and b.statute and b.article
        assert Tier.STATE_SECRET not in b.tiers
        if b.confidentiality_days:
            assert b.case_reference_required


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"tiers": ["state_secret"]}, "legal_bases.x.tiers"),
        ({"tiers": ["nope"]}, "legal_bases.x.tiers"),
        ({"tiers": []}, "legal_bases.x.tiers"),
        ({"purposes": ["no_such_purpose"]}, "legal_bases.x.purposes"),
        ({"statute": ""}, "legal_bases.x.statute"),
        ({"case_reference_required": "yes"}, "legal_bases.x.case_reference_required"),
        ({"confidentiality_days": -1}, "legal_bases.x.confidentiality_days"),
        ({"confidentiality_days": True}, "legal_bases.x.confidentiality_days"),
        ({"confidentiality_days": 5000}, "legal_bases.x.confidentiality_days"),
        (
            {"confidentiality_days": 30, "case_reference_required": False},
            "legal_bases.x.confidentiality_days",
        ),
        ({"surprise": 1}, "legal_bases.x.surprise"),
    ],
)
def test_a_malformed_basis_is_refused_naming_the_setting(over: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_legal_bases({"bases": {"x": _basis(**over)}}, purposes=frozenset(load_purposes()))
    assert caught.value.key == key


def test_a_code_must_be_lower_snake() -> None:
    with pytest.raises(ConfigError):
        parse_legal_bases({"bases": {"Bad-Code": _basis()}})


def _bases() -> LegalBases:
    return parse_legal_bases(
        {
            "bases": {
                "open": _basis(case_reference_required=False),
                "cased": _basis(confidentiality_days=365),
                "named": _basis(agencies=["court_a"], case_reference_required=False),
            }
        }
    )


def test_resolve_refuses_with_the_reason() -> None:
    bases = _bases()
    kw = {"agency_id": "ndrc", "purpose": "supervision_inspection", "case_reference": ""}
    assert bases.resolve("open", agency_kind="government_body", **kw).code == "open"
    with pytest.raises(PermissionDeniedError) as kind:
        bases.resolve("open", agency_kind="financial_institution", **kw)
    assert kind.value.reason == "LEGAL_BASIS_NOT_CITABLE"
    assert "government_body" in kind.value.message
    assert "financial_institution" in kind.value.message
    with pytest.raises(PermissionDeniedError) as named:
        bases.resolve("named", agency_kind="government_body", **kw)
    assert named.value.reason == "LEGAL_BASIS_NOT_CITABLE"
    with pytest.raises(PermissionDeniedError) as purpose:
        bases.resolve(
            "open", agency_kind="government_body", agency_id="ndrc", purpose="lending",
            case_reference="",
        )  # fmt: skip
    assert purpose.value.reason == "LEGAL_BASIS_PURPOSE"
    with pytest.raises(InvalidArgumentError) as case:
        bases.resolve("cased", agency_kind="government_body", **kw | {"case_reference": "  "})
    assert case.value.reason == "CASE_REFERENCE_REQUIRED"
    assert case.value.field == "case_reference"
    with pytest.raises(InvalidArgumentError) as unknown:
        bases.resolve("nope", agency_kind="government_body", **kw)
    assert unknown.value.reason == "UNKNOWN_LEGAL_BASIS"


def test_a_refusal_never_repeats_an_identifier_the_caller_sent_as_the_code() -> None:
    code = "x110105194912310021"
    with pytest.raises(InvalidArgumentError) as caught:
        _bases().resolve(
            code, agency_kind="government_body", agency_id="ndrc",
            purpose="supervision_inspection", case_reference="",
        )  # fmt: skip
    assert "110105194912310021" not in caught.value.message


@given(days=st.integers(1, 3653), day=st.dates(dt.date(2000, 1, 1), dt.date(2090, 1, 1)))
def test_confidential_until_is_the_query_day_plus_the_period(days: int, day: dt.date) -> None:
    basis = dataclasses.replace(_bases().get("cased"), confidentiality_days=days)  # type: ignore[type-var]
    assert dt.date.fromisoformat(basis.confidential_until(day)) - day == dt.timedelta(days=days)
    assert dataclasses.replace(basis, confidentiality_days=0).confidential_until(day) == ""


def test_the_decider_grants_the_opened_tier_without_consent(
    decider: PolicyDecider, facts: FactsMaker
) -> None:
    plain = decider.decide(facts("ndrc", "supervision_inspection", LOANS))
    assert {w.reason for w in plain.departments["pbccrc"].withheld} == {
        R.WITHHOLD_REASON_CONSENT_REQUIRED
    }
    opened = decider.decide(
        dataclasses.replace(
            facts("ndrc", "supervision_inspection", LOANS),
            legal_tiers=frozenset({Tier.PERSONAL_PRIVACY}),
        )
    )
    assert opened.departments["pbccrc"].withheld == ()
    assert opened.departments["pbccrc"].allowed["personal_loans"]
    assert opened.consent_id == ""
    # The cache keys on the opened tiers: the plain decision is unchanged afterwards.
    again = decider.decide(facts("ndrc", "supervision_inspection", LOANS))
    assert again.departments["pbccrc"].withheld == plain.departments["pbccrc"].withheld


def test_a_legal_basis_never_opens_what_the_policy_does_not_grant(
    decider: PolicyDecider, facts: FactsMaker
) -> None:
    # procurement holds no personal_privacy grant: the law stands in for consent only.
    d = decider.decide(
        dataclasses.replace(
            facts("procurement", "government_procurement", LOANS),
            legal_tiers=frozenset({Tier.PERSONAL_PRIVACY}),
        )
    )
    assert not d.departments["pbccrc"].allowed
    assert {w.reason for w in d.departments["pbccrc"].withheld} == {R.WITHHOLD_REASON_NOT_GRANTED}


_TIERS = [Tier.PUBLIC, Tier.GOVERNMENT_SHARED, Tier.COMMERCIAL_SECRET, Tier.PERSONAL_PRIVACY]


# The decider is shared on purpose: its caches must key on the opened tiers.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    agency=st.sampled_from(["ndrc", "procurement", "bank", "guarantor", "nogrants"]),
    purpose=st.sampled_from(["supervision_inspection", "lending", "government_procurement"]),
    mode=st.sampled_from(["free", "paid"]),
    tiers=st.sets(st.sampled_from(_TIERS)),
    subject=st.sampled_from(["person", "enterprise"]),
)
def test_opened_tiers_only_ever_lift_consent_refusals_of_those_tiers(
    decider: PolicyDecider,
    facts: FactsMaker,
    catalog: Catalog,
    agency: str,
    purpose: str,
    mode: str,
    tiers: set[Tier],
    subject: str,
) -> None:
    base = facts(agency, purpose, mode=mode, subject=subject)
    plain = decider.decide(base)
    opened = decider.decide(dataclasses.replace(base, legal_tiers=frozenset(tiers)))
    for dept, dd in opened.departments.items():
        before = plain.departments[dept]
        lifted = {(w.dataset, w.field) for w in before.withheld} - {
            (w.dataset, w.field) for w in dd.withheld
        }
        for ds, field in lifted:
            f = catalog.departments[dept].datasets[ds].fields[field]
            reason = next(w.reason for w in before.withheld if (w.dataset, w.field) == (ds, field))
            assert reason == R.WITHHOLD_REASON_CONSENT_REQUIRED
            assert f.tier in tiers
        # Nothing newly withheld, nothing allowed that was not lifted.
        for ds, fields in dd.allowed.items():
            for field in fields:
                assert field in before.allowed.get(ds, ()) or (ds, field) in lifted


@pytest.mark.parametrize("code", ["Supervision", "a b", "1abc", "x" * 65, "案件", "a-b"])
def test_validation_refuses_a_malformed_code_without_echoing_it(
    catalog: Catalog, code: str
) -> None:
    request = query_pb2.QueryRequest(
        request_id=str(uuid.uuid4()),
        purpose="supervision_inspection",
        mode=query_pb2.QUERY_MODE_FREE,
        legal_basis=code,
    )
    request.subject.type = common_pb2.SUBJECT_TYPE_PERSON
    request.subject.id = "360426199101010071"
    with pytest.raises(InvalidArgumentError) as caught:
        Validator(catalog, load_purposes()).validate(request)
    assert caught.value.field == "legal_basis"
    assert code not in caught.value.message


def test_the_audit_schema_reads_back_the_basis_fields() -> None:
    record = QueryRecord(legal_basis="supervision_law_art26", confidential_until="2027-11-30")
    back = QueryRecord.from_json(record.to_json())
    assert (back.legal_basis, back.confidential_until) == ("supervision_law_art26", "2027-11-30")
    assert "legal_basis" not in QueryRecord().to_json()  # absent, never null
    access = SubjectAccessRecord(action="list_query_records", principal="self_service", count=3)
    assert SubjectAccessRecord.from_json(access.to_json()) == access
