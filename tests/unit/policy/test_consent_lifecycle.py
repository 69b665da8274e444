"""Consent lifecycle: max_uses claims, live revocation, counted uses in the decider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.auth.tokens import TrustedIssuer
from gateway.cli.consent import consent_main
from gateway.controls import ControlsStore
from gateway.dev.pki import DEV_CONSENT_ISSUER, Pki
from gateway.pipeline.decision import with_consent_counted
from gateway.policy import PolicyDecider
from gateway.policy.consent import MAX_CONSENT_USES, ConsentProblem, ConsentVerifier, issue_consent
from gateway.policy.testing import MatrixIssuer
from gateway.stores.sqlite.controls import SQLiteControlsStore
from tests.helpers import make_pki
from tests.unit.policy.conftest import PERSON, FactsMaker, consent

PRIVATE = "pbccrc/personal_loans"


@pytest.fixture
def store(tmp_path: Path) -> SQLiteControlsStore:
    return SQLiteControlsStore(tmp_path / "controls.sqlite")


def _visible(decider: PolicyDecider, facts: Any) -> tuple[bool, str, int]:
    d = with_consent_counted(decider.decide(facts))
    pbccrc = d.departments["pbccrc"]
    details = {w.detail for w in pbccrc.withheld}
    return bool(pbccrc.allowed), "; ".join(sorted(details)), d.consent_uses


def test_a_one_time_consent_is_used_once_then_spent(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer, store: ControlsStore
) -> None:
    decider.attach_controls(store)
    token = consent(issuer, scope=["pbccrc/*"], max_uses=1, cid="once-1")
    f = facts("bank", "lending", PRIVATE, mode="paid", token=token)
    allowed, _, uses = _visible(decider, f)
    assert allowed and uses == 1
    allowed, details, uses = _visible(decider, f)
    assert not allowed and uses == 0
    assert "consent revoked/spent: the consent has been used up" in details
    assert store.consent_status("once-1").uses == 1


def test_an_unlimited_consent_is_counted(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer, store: ControlsStore
) -> None:
    decider.attach_controls(store)
    token = consent(issuer, scope=["pbccrc/*"], cid="many")
    f = facts("bank", "lending", PRIVATE, mode="paid", token=token)
    assert [_visible(decider, f)[2] for _ in range(3)] == [1, 2, 3]
    assert store.consent_status("many").max_uses is None


def test_a_consent_bound_to_another_query_is_not_counted(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer, store: ControlsStore
) -> None:
    decider.attach_controls(store)
    token = consent(issuer, scope=["pbccrc/*"], max_uses=1, cid="other-purpose")
    _visible(decider, facts("bank", "guarantee", PRIVATE, mode="paid", token=token))
    assert store.consent_status("other-purpose").uses == 0


def test_a_live_revocation_is_refused_at_once_and_the_cache_dropped(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer, tmp_path: Path
) -> None:
    ours = SQLiteControlsStore(tmp_path / "c.sqlite")
    theirs = SQLiteControlsStore(tmp_path / "c.sqlite")
    decider.attach_controls(ours)
    token = consent(issuer, scope=["pbccrc/*"], cid="to-revoke")
    f = facts("bank", "lending", PRIVATE, mode="paid", token=token)
    assert _visible(decider, f)[0]
    assert decider.consent.cached_consents == 1
    theirs.revoke_consent("to-revoke", by="officer_a", via="officer")
    allowed, details, _ = _visible(decider, f)
    assert not allowed and "consent revoked" in details
    assert decider.consent.cached_consents == 0


@pytest.mark.parametrize("bad", [0, -1, MAX_CONSENT_USES + 1, True, "3", 1.5])
def test_a_malformed_max_uses_is_invalid(issuer: MatrixIssuer, bad: Any) -> None:
    import jwt

    from gateway.policy.consent import CONSENT_TYP

    claims = {
        "iss": issuer.issuer,
        "cid": "c",
        "sub_type": "person",
        "sub": PERSON,
        "grantee": "bank",
        "purpose": "lending",
        "scope": ["pbccrc/*"],
        "iat": 1_800_000_000,
        "exp": 1_800_086_400,
        "max_uses": bad,
    }
    token = jwt.encode(
        claims, issuer.key, algorithm="EdDSA", headers={"kid": issuer.kid, "typ": CONSENT_TYP}
    )
    v = ConsentVerifier([issuer.trusted], clock=lambda: 1_800_000_100.0)
    with pytest.raises(Exception) as exc:
        v.verify(token)
    assert getattr(exc.value, "problem", None) is ConsentProblem.INVALID


def test_issue_refuses_a_bad_limit(issuer: MatrixIssuer) -> None:
    with pytest.raises(ValueError, match="max_uses"):
        consent(issuer, max_uses=0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory, departments=["tax"], agencies=["bank"], name="lifecycle")


@pytest.mark.parametrize(("flags", "expected"), [(["--once"], 1), (["--max-uses", "5"], 5)])
def test_cli_mints_limited_consents(
    pki: Pki, tmp_path: Path, flags: list[str], expected: int
) -> None:
    out = tmp_path / "c.jwt"
    argv = [
        "issue",
        "--issuer-key", str(pki.consent.key()),
        "--kid", pki.consent.signing_kid,
        "--iss", DEV_CONSENT_ISSUER,
        "--subject-type", "person",
        "--subject", PERSON,
        "--grantee", "bank",
        "--purpose", "lending",
        "--scope", "pbccrc/*",
        "--out", str(out),
        *flags,
    ]  # fmt: skip
    assert consent_main(argv) == 0
    v = ConsentVerifier([TrustedIssuer.from_jwks_file(DEV_CONSENT_ISSUER, pki.consent.jwks)])
    assert v.verify(out.read_text().strip()).max_uses == expected


def test_cli_refuses_a_bad_limit(pki: Pki, tmp_path: Path) -> None:
    base = [
        "issue",
        "--issuer-key", str(pki.consent.key()),
        "--kid", pki.consent.signing_kid,
        "--iss", DEV_CONSENT_ISSUER,
        "--subject-type", "person",
        "--subject", PERSON,
        "--grantee", "bank",
        "--purpose", "lending",
        "--scope", "pbccrc/*",
    ]  # fmt: skip
    assert consent_main([*base, "--max-uses", "0"]) == 2
    assert consent_main([*base, "--once", "--max-uses", "2"]) == 2


def test_issue_consent_writes_the_claim(issuer: MatrixIssuer) -> None:
    token = issue_consent(
        issuer.key,
        issuer.kid,
        issuer=issuer.issuer,
        subject_type="person",
        subject_id=PERSON,
        grantee="bank",
        purpose="lending",
        scope=["pbccrc/*"],
        max_uses=2,
    )
    assert ConsentVerifier([issuer.trusted]).verify(token).max_uses == 2


def test_a_consent_that_grants_no_field_is_not_counted(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer, store: ControlsStore
) -> None:
    decider.attach_controls(store)
    token = consent(issuer, scope=["tax/*"], max_uses=1, cid="elsewhere")
    d = decider.decide(facts("bank", "lending", PRIVATE, mode="paid", token=token))
    assert d.count_use is None  # nothing to count
    assert d.consent_id == "elsewhere" and d.consent_uses == 0
    assert store.consent_status("elsewhere").uses == 0


def test_deciding_writes_nothing_the_caller_counts_the_use(
    decider: PolicyDecider, facts: FactsMaker, issuer: MatrixIssuer, store: ControlsStore
) -> None:
    """decide() runs on the event loop: the durable count is left to Decision.count_use,
    which the pipeline runs in a worker thread before anything is asked."""
    decider.attach_controls(store)
    token = consent(issuer, scope=["pbccrc/*"], max_uses=1, cid="later")
    f = facts("bank", "lending", PRIVATE, mode="paid", token=token)
    d = decider.decide(f)
    assert d.count_use is not None and d.consent_uses == 0
    assert store.consent_status("later").uses == 0
    counted = d.count_use()
    assert counted.consent_uses == 1 and counted.count_use is None
    assert store.consent_status("later").uses == 1
    # The second decision is granted again (the cache knows nothing of uses); its count
    # finds the consent spent and gives the decision without it.
    spent = with_consent_counted(decider.decide(f))
    assert not spent.departments["pbccrc"].allowed and spent.consent_uses == 0
