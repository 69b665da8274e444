"""The Casbin decider: each withholding reason, consent, mode, self-query, caching."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.auth.registry import Registry
from gateway.domain.catalog import Catalog, load_catalog
from gateway.errors import ConfigError
from gateway.pipeline.decision import Decider
from gateway.policy import PolicyDecider, build_decider
from gateway.policy.testing import MatrixIssuer
from tests.helpers import make_pki
from tests.unit.policy.conftest import (
    ENTERPRISE,
    OTHER_PERSON,
    PERSON,
    FactsMaker,
    R,
    consent,
    outcome,
    write,
)

LOANS = "pbccrc/personal_loans"


def test_it_is_a_decider(decider: PolicyDecider) -> None:
    seam: Decider = decider  # checked by mypy
    assert seam is decider


def test_bank_with_consent_sees_personal_loans_and_reports_the_consent_id(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer
) -> None:
    token = consent(issuer, scope=[LOANS], cid="consent-42")
    d = decider.decide(facts("bank", "lending", LOANS, mode="paid", token=token))
    assert d.consent_id == "consent-42"
    assert d.policy_version == decider.version
    pbccrc = d.departments["pbccrc"]
    assert set(pbccrc.allowed["personal_loans"]) == set(
        decider.catalog.departments["pbccrc"].datasets["personal_loans"].fields
    )
    assert pbccrc.withheld == ()


@pytest.mark.parametrize(
    ("make_token", "words"),
    [
        (lambda i: "", "consent missing"),
        (lambda i: consent(i, now=time.time() - 100 * 86400, lifetime_s=86400), "consent expired"),
        (lambda i: consent(i, cid="revoked-1"), "consent revoked"),
        (lambda i: consent(i, grantee="guarantor"), "consent other agency"),
        (lambda i: consent(i, purpose="guarantee"), "consent other purpose"),
        (lambda i: consent(i, subject_id=OTHER_PERSON), "consent other subject"),
        (lambda i: consent(i, subject_type="enterprise", subject_id=ENTERPRISE), "other subject"),
        (lambda i: consent(i, scope=["pbccrc/overdue_records"]), "consent out of scope"),
        (lambda i: "not.a.jws", "consent invalid"),
        (
            lambda i: consent(MatrixIssuer(kid=i.kid, issuer=i.issuer)),
            "consent invalid: the consent signature is invalid",
        ),
    ],
)
def test_a_consent_problem_withholds_only_consent_bound_fields(
    catalog: Catalog,
    registry: Registry,
    issuer: MatrixIssuer,
    facts: FactsMaker,
    make_token: object,
    words: str,
) -> None:
    decider = build_decider(
        catalog, consent_issuers=[issuer.trusted], registry=registry, revoked=["revoked-1"]
    )
    token = make_token(issuer)  # type: ignore[operator]
    d = decider.decide(
        facts("bank", "lending", LOANS, "court/dishonest_debtors", mode="paid", token=token)
    )
    out = outcome(d)
    # A consent bound to this query is recorded (audit) even where its scope falls short.
    assert (d.consent_id != "") == (words == "consent out of scope")
    for key, value in out.items():
        if key.startswith("court/"):
            assert value == "visible"
        else:
            assert value[0] == R.WITHHOLD_REASON_CONSENT_REQUIRED, key
            assert words in value[1]
            assert PERSON not in value[1] and OTHER_PERSON not in value[1]
    assert not d.departments["pbccrc"].allowed  # the department is not asked at all
    assert d.departments["court"].allowed


def test_each_legal_and_policy_reason(decider: PolicyDecider, facts: FactsMaker) -> None:
    d = decider.decide(
        facts(
            "bank",
            "lending",
            "court/enforcement_cases",
            "hrss/social_security",
            "court/dishonest_debtors",
            mode="paid",
        )
    )
    out = outcome(d)
    assert (
        out["court/enforcement_cases/classified_particulars"][0] == R.WITHHOLD_REASON_STATE_SECRET
    )
    assert out["court/enforcement_cases/case_number"][0] == R.WITHHOLD_REASON_NOT_GRANTED
    assert out["hrss/social_security/medical_history"][0] == R.WITHHOLD_REASON_PROHIBITED_ITEM
    assert out["hrss/social_security/employer"][0] == R.WITHHOLD_REASON_CONSENT_REQUIRED
    assert out["court/dishonest_debtors/court"] == "visible"


def test_mode_reasons(decider: PolicyDecider, facts: FactsMaker) -> None:
    free = outcome(decider.decide(facts("bank", "lending", "court/dishonest_debtors")))
    assert {v[0] for v in free.values()} == {R.WITHHOLD_REASON_PAID_MODE_REQUIRED}
    assert "paid" in next(iter(free.values()))[1]
    paid = outcome(
        decider.decide(
            facts("procurement", "public_bidding", "court/dishonest_debtors", mode="paid")
        )
    )
    assert {v[0] for v in paid.values()} == {R.WITHHOLD_REASON_FREE_MODE_REQUIRED}


def test_self_query_sees_every_tier_but_state_secret_without_consent(
    decider: PolicyDecider, facts: FactsMaker
) -> None:
    out = outcome(decider.decide(facts("self_service", "self_query", is_self=True)))
    withheld = {k: v for k, v in out.items() if v != "visible"}
    assert withheld == {
        "court/enforcement_cases/classified_particulars": (
            R.WITHHOLD_REASON_STATE_SECRET,
            "state secret never leaves the department",
        ),
        "hrss/social_security/medical_history": (
            R.WITHHOLD_REASON_PROHIBITED_ITEM,
            "Art. 14 prohibited item",
        ),
    }
    assert out["pbccrc/overdue_records/overdue_amount_fen"] == "visible"
    assert out["hrss/income/annual_wage_fen"] == "visible"  # a consent item


def test_self_query_purpose_about_someone_else_is_not_granted(
    decider: PolicyDecider, facts: FactsMaker
) -> None:
    out = outcome(decider.decide(facts("self_service", "self_query", LOANS, is_self=False)))
    assert {v[0] for v in out.values()} == {R.WITHHOLD_REASON_NOT_GRANTED}
    assert all("only for a subject querying itself" in v[1] for v in out.values())


def test_is_self_waives_consent_only_for_the_self_query_purpose(
    decider: PolicyDecider, facts: FactsMaker
) -> None:
    # A bank that somehow had is_self set gets no waiver for lending.
    out = outcome(decider.decide(facts("bank", "lending", LOANS, mode="paid", is_self=True)))
    assert {v[0] for v in out.values()} == {R.WITHHOLD_REASON_CONSENT_REQUIRED}


def test_nogrants_asks_no_department(decider: PolicyDecider, facts: FactsMaker) -> None:
    for subject in ("person", "enterprise"):
        d = decider.decide(facts("nogrants", "supervision_inspection", subject=subject))
        assert d.departments
        assert all(not dd.allowed for dd in d.departments.values())
        reasons = {w.reason for dd in d.departments.values() for w in dd.withheld}
        assert R.WITHHOLD_REASON_NOT_GRANTED in reasons
        assert reasons <= {
            R.WITHHOLD_REASON_NOT_GRANTED,
            R.WITHHOLD_REASON_STATE_SECRET,
            R.WITHHOLD_REASON_PROHIBITED_ITEM,
        }


def test_unknown_agency_is_not_granted_anything(decider: PolicyDecider, facts: FactsMaker) -> None:
    d = decider.decide(facts("stranger", "lending", LOANS, mode="paid"))
    assert all(not dd.allowed for dd in d.departments.values())


def test_decisions_are_cached_and_the_consent_id_is_per_query(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer
) -> None:
    f1 = facts("bank", "lending", LOANS, mode="paid", token=consent(issuer, cid="c-1"))
    f2 = facts("bank", "lending", LOANS, mode="paid", token=consent(issuer, cid="c-2"))
    d1 = decider.decide(f1)
    d2 = decider.decide(f2)
    assert (d1.consent_id, d2.consent_id) == ("c-1", "c-2")
    assert d1.departments is d2.departments  # one compiled decision, two consents
    info = decider.cache_info()
    assert info["decisions"] == 1 and info["decision_hits"] == 1
    no_consent = decider.decide(facts("bank", "lending", LOANS, mode="paid"))
    assert no_consent.departments is not d1.departments
    assert decider.cache_info()["decisions"] == 2


def test_cache_is_bounded(catalog: Catalog, registry: Registry, facts: FactsMaker) -> None:
    decider = build_decider(catalog, registry=registry, cache_size=2)
    refs = [f"{d.department}/{d.name}" for d in catalog.datasets() if "person" in d.subject_types]
    for ref in refs:
        decider.decide(facts("bank", "lending", ref, mode="paid"))
    assert decider.cache_info()["decisions"] == 2


def test_revocation_takes_effect_for_a_cached_consent(
    catalog: Catalog, registry: Registry, issuer: MatrixIssuer, facts: FactsMaker, tmp_path: Path
) -> None:
    decider = build_decider(catalog, consent_issuers=[issuer.trusted], registry=registry)
    f = facts("bank", "lending", LOANS, mode="paid", token=consent(issuer, cid="c-77"))
    assert decider.decide(f).departments["pbccrc"].allowed
    revocations = write(tmp_path, "rev.toml", '[[revoked]]\ncid = "c-77"\nnote = "withdrawn"\n')
    decider.reload_revocations(revocations)
    d = decider.decide(f)
    assert not d.departments["pbccrc"].allowed and d.consent_id == ""
    assert "revoked" in d.departments["pbccrc"].withheld[0].detail
    bad = write(tmp_path, "bad.toml", '[[revoked]]\nid = "c-77"\n')
    with pytest.raises(ConfigError, match=r"revoked\[0\]"):
        decider.reload_revocations(bad)
    assert "c-77" in decider.consent.revoked  # the old list stays


def test_consent_issuers_from_jwks_files(
    catalog: Catalog, registry: Registry, facts: FactsMaker, tmp_path: Path
) -> None:
    from gateway.dev.pki import DEV_CONSENT_ISSUER
    from gateway.policy.consent import issue_consent

    pki = make_pki(tmp_path, departments=["tax"], agencies=["bank"])
    decider = build_decider(
        catalog, consent_issuers=[(DEV_CONSENT_ISSUER, pki.consent.jwks)], registry=registry
    )
    for kid in pki.consent.keys:  # both the Ed25519 and the P-256 key
        token = issue_consent(
            pki.consent.key(kid),
            kid,
            issuer=DEV_CONSENT_ISSUER,
            subject_type="person",
            subject_id=PERSON,
            grantee="bank",
            purpose="lending",
            scope=[LOANS],
        )
        d = decider.decide(facts("bank", "lending", LOANS, mode="paid", token=token))
        assert d.departments["pbccrc"].allowed, kid


def test_enterprise_credit_is_consent_bound_even_if_public(
    catalog: Catalog, registry: Registry, facts: FactsMaker, tmp_path: Path
) -> None:
    # A catalog where enterprise loans were (wrongly) made public: Art. 40(3) still applies.
    text = (Path(__file__).resolve().parents[3] / "policies" / "catalog.toml").read_text()
    text = text.replace(
        'lender = { type = "text", tier = "commercial_secret", title = "授信机构" }',
        'lender = { type = "text", tier = "public", title = "授信机构" }',
    )
    public_loans = load_catalog(write(tmp_path, "catalog.toml", text))
    assert public_loans.field("pbccrc", "enterprise_loans", "lender").tier.value == "public"  # type: ignore[union-attr]
    decider = build_decider(public_loans, registry=registry)
    enterprise = tuple(d for d in public_loans.datasets() if "enterprise" in d.subject_types)
    f = replace(facts("bank", "lending", mode="paid", subject="enterprise"), datasets=enterprise)
    out = outcome(decider.decide(f))
    assert out["pbccrc/enterprise_loans/lender"][0] == R.WITHHOLD_REASON_CONSENT_REQUIRED
    assert out["market/registration/name"] == "visible"
