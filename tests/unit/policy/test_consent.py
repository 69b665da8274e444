"""Consent tokens: issuing, verifying, binding, revocation, the CLI."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.cli.consent import consent_main
from gateway.dev.pki import DEV_CONSENT_ISSUER, Pki
from gateway.errors import ConfigError
from gateway.policy.consent import (
    CONSENT_TYP,
    ConsentError,
    ConsentProblem,
    ConsentVerifier,
    issue_consent,
    load_revocations,
    parse_scope,
)
from gateway.policy.testing import MatrixIssuer
from tests.helpers import Clock, make_pki
from tests.unit.policy.conftest import OTHER_PERSON, PERSON, consent, write

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory, departments=["tax"], agencies=["bank"], name="consent")


def verifier(issuer: MatrixIssuer, **kw: Any) -> ConsentVerifier:
    kw.setdefault("clock", Clock(NOW))
    return ConsentVerifier([issuer.trusted], **kw)


def sign(issuer: MatrixIssuer, claims: dict[str, Any], **headers: Any) -> str:
    headers = {"kid": issuer.kid, "typ": CONSENT_TYP, **headers}
    return jwt.encode(claims, issuer.key, algorithm="EdDSA", headers=headers)


def claims(issuer: MatrixIssuer, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": issuer.issuer,
        "cid": "c-1",
        "sub_type": "person",
        "sub": PERSON,
        "grantee": "bank",
        "purpose": "lending",
        "scope": ["pbccrc/personal_loans", "tier:personal_privacy"],
        "iat": int(NOW),
        "exp": int(NOW) + 86400,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_round_trip_and_binding(issuer: MatrixIssuer) -> None:
    v = verifier(issuer)
    token = consent(issuer, cid="c-9", now=NOW, scope=["pbccrc/*", "tier:commercial_secret"])
    c = v.verify(token)
    assert (c.cid, c.grantee, c.purpose, c.subject_type) == ("c-9", "bank", "lending", "person")
    assert PERSON not in repr(c)  # the identifier is kept out of logs and reprs
    assert c.datasets == {("pbccrc", "*")} and c.tiers == {"commercial_secret"}
    check = v.check(
        token, agency="bank", purpose="lending", subject_type="person", subject_id=PERSON
    )
    assert check.consent == c and check.problem is None and check.detail == ""
    assert v.cached_consents == 1
    bindings = {
        ConsentProblem.OTHER_AGENCY: {"agency": "guarantor"},
        ConsentProblem.OTHER_PURPOSE: {"purpose": "guarantee"},
        ConsentProblem.OTHER_SUBJECT: {"subject_id": OTHER_PERSON},
    }
    for problem, over in bindings.items():
        args = {
            "agency": "bank",
            "purpose": "lending",
            "subject_type": "person",
            "subject_id": PERSON,
            **over,
        }
        out = v.check(token, **args)
        assert out.problem is problem and out.consent is None
        assert out.detail.startswith(f"consent {problem.value}: ")
    wrong_type = v.check(
        token, agency="bank", purpose="lending", subject_type="enterprise", subject_id=PERSON
    )
    assert wrong_type.problem is ConsentProblem.OTHER_SUBJECT
    none = v.check("", agency="bank", purpose="lending", subject_type="person", subject_id=PERSON)
    assert none.problem is ConsentProblem.MISSING


def test_es256_consent_from_the_dev_pki(pki: Pki) -> None:
    from gateway.auth.tokens import TrustedIssuer

    v = ConsentVerifier([TrustedIssuer.from_jwks_file(DEV_CONSENT_ISSUER, pki.consent.jwks)])
    for kid in pki.consent.keys:
        token = issue_consent(
            pki.consent.key(kid),
            kid,
            issuer=DEV_CONSENT_ISSUER,
            subject_type="enterprise",
            subject_id="91350200MA2YJ1XR9G",
            grantee="bank",
            purpose="lending",
            scope=["pbccrc/enterprise_loans"],
        )
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header["typ"] == CONSENT_TYP and header["alg"] in {"EdDSA", "ES256"}
        assert v.verify(token).subject_type == "enterprise"


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"cid": None}, "'cid'"),
        ({"cid": "has spaces in it"}, "'cid' is malformed"),
        ({"sub_type": "robot"}, "sub_type"),
        ({"sub": None}, "'sub'"),
        ({"grantee": ""}, "'grantee'"),
        ({"purpose": 7}, "'purpose'"),
        ({"scope": []}, "'scope'"),
        ({"scope": "tier:public"}, "'scope'"),
        ({"scope": ["tier:state_secret"]}, "'scope' has a malformed entry"),
        ({"scope": ["pbccrc"]}, "'scope' has a malformed entry"),
        ({"scope": ["pbccrc/.*"]}, "'scope' has a malformed entry"),
        ({"iss": "urn:someone-else"}, "another issuer"),
        ({"iat": None}, "'iat'"),
        ({"iat": True}, "'iat'"),
        ({"exp": int(NOW) - 1}, "expires before"),
        ({"exp": int(NOW) + 400 * 86400}, "lifetime exceeds"),
        ({"iat": int(NOW) + 3600, "exp": int(NOW) + 7200}, "not yet valid"),
        ({"nbf": int(NOW) + 3600}, "not yet valid"),
    ],
)
def test_malformed_claims_are_invalid(
    issuer: MatrixIssuer, over: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConsentError) as err:
        verifier(issuer).verify(sign(issuer, claims(issuer, **over)))
    assert err.value.problem is ConsentProblem.INVALID
    assert words in err.value.message


def test_header_checks(issuer: MatrixIssuer) -> None:
    v = verifier(issuer)
    good = claims(issuer)
    cases = {
        "typed": sign(issuer, good, typ="JWT"),
        "'crit'": sign(issuer, good, crit=["exp"]),
        "unknown key": sign(issuer, good, kid="nope"),
        "signature": sign(MatrixIssuer(kid=issuer.kid), good),
        "algorithm": jwt.encode(
            good, "secret-secret-secret-secret-32by", algorithm="HS256",
            headers={"kid": issuer.kid, "typ": CONSENT_TYP},
        ),
        "not match its key": jwt.encode(
            good, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
            headers={"kid": issuer.kid, "typ": CONSENT_TYP},
        ),
        "compact JWS": "a.b",
        "base64url JSON": "!!!.e30.sig",
        "too long": "x" * 20000,
    }  # fmt: skip
    unsigned = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": CONSENT_TYP}).encode())
    payload = base64.urlsafe_b64encode(json.dumps(good).encode())
    cases["algorithm is not"] = f"{unsigned.decode().rstrip('=')}.{payload.decode().rstrip('=')}.x"
    for words, token in cases.items():
        with pytest.raises(ConsentError) as err:
            v.verify(token)
        assert err.value.problem is ConsentProblem.INVALID, words
        assert words in err.value.message, (words, err.value.message)
        assert PERSON not in err.value.message


def test_expiry_with_leeway_and_cache_eviction(issuer: MatrixIssuer) -> None:
    clock = Clock(NOW)
    v = verifier(issuer, clock=clock, leeway_s=60)
    token = sign(issuer, claims(issuer, exp=int(NOW) + 100))
    v.verify(token)
    clock.now = NOW + 159  # within the leeway: still good, from the cache
    v.verify(token)
    assert v.cached_consents == 1
    clock.now = NOW + 160
    with pytest.raises(ConsentError) as err:
        v.verify(token)
    assert err.value.problem is ConsentProblem.EXPIRED
    assert v.cached_consents == 0


def test_cache_is_bounded(issuer: MatrixIssuer) -> None:
    v = verifier(issuer, cache_size=3)
    for i in range(5):
        v.verify(sign(issuer, claims(issuer, cid=f"c-{i}")))
    assert v.cached_consents == 3


def test_audience_when_configured(issuer: MatrixIssuer) -> None:
    v = verifier(issuer, audience="credit-gateway")
    with pytest.raises(ConsentError, match="audience"):
        v.verify(sign(issuer, claims(issuer)))
    assert v.verify(sign(issuer, claims(issuer, aud=["x", "credit-gateway"]))).cid == "c-1"


def test_revocation(issuer: MatrixIssuer) -> None:
    v = verifier(issuer, revoked=["c-1"])
    token = sign(issuer, claims(issuer))
    with pytest.raises(ConsentError) as err:
        v.verify(token)
    assert err.value.problem is ConsentProblem.REVOKED
    v.set_revoked([])
    v.verify(token)
    v.set_revoked(["c-1"])  # a cached consent is revoked too
    with pytest.raises(ConsentError):
        v.verify(token)


def test_revocation_file(tmp_path: Path) -> None:
    assert load_revocations() == frozenset()  # the shipped list is empty
    path = write(
        tmp_path,
        "r.toml",
        '[[revoked]]\ncid = "a-1"\nrevoked_on = 2026-03-01\nnote = "desk"\n'
        '[[revoked]]\ncid = "b-2"\n',
    )
    assert load_revocations(path) == {"a-1", "b-2"}
    for text, key in [
        ('revoked = "a"\n', "revoked"),
        ("[[revoked]]\nnote = 'no cid'\n", "revoked[0].cid"),
        ("[[revoked]]\ncid = 'a'\ncolour = 'red'\n", "revoked[0].colour"),
        ("[other]\n", "other"),
        ("not toml", str(tmp_path / "bad.toml")),
    ]:
        with pytest.raises(ConfigError) as err:
            load_revocations(write(tmp_path, "bad.toml", text))
        assert err.value.key == key
    with pytest.raises(ConfigError, match="cannot read"):
        load_revocations(tmp_path / "missing.toml")


def test_scope_parsing() -> None:
    datasets, tiers = parse_scope(["tax/tax_paid", "hrss/*", "tier:public"])
    assert datasets == {("tax", "tax_paid"), ("hrss", "*")} and tiers == {"public"}
    for bad in ["tier:state_secret", "tier:everything", "*", "tax", "tax/a/b", "Tax/x"]:
        with pytest.raises(ValueError):
            parse_scope([bad])


def test_issue_consent_refuses_nonsense(issuer: MatrixIssuer) -> None:
    common: dict[str, Any] = {
        "issuer": issuer.issuer,
        "subject_id": PERSON,
        "grantee": "bank",
        "purpose": "lending",
    }
    with pytest.raises(ValueError):
        issue_consent(issuer.key, issuer.kid, subject_type="alien", scope=["tier:public"], **common)
    with pytest.raises(ValueError):
        issue_consent(issuer.key, issuer.kid, subject_type="person", scope=[], **common)
    with pytest.raises(ValueError):
        issue_consent(
            issuer.key, issuer.kid, subject_type="person", scope=["x"], lifetime_s=0, **common
        )


def test_cli_issues_a_verifiable_consent(pki: Pki, tmp_path: Path) -> None:
    from gateway.auth.tokens import TrustedIssuer

    out = tmp_path / "consent.jwt"
    argv = [
        "issue",
        "--issuer-key", str(pki.consent.key()),
        "--kid", pki.consent.signing_kid,
        "--iss", DEV_CONSENT_ISSUER,
        "--subject-type", "person",
        "--subject", PERSON,
        "--grantee", "bank",
        "--purpose", "lending",
        "--scope", "pbccrc/personal_loans",
        "--scope", "tier:personal_privacy",
        "--lifetime-days", "90",
        "--cid", "cli-1",
        "--out", str(out),
    ]  # fmt: skip
    assert consent_main(argv) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    v = ConsentVerifier([TrustedIssuer.from_jwks_file(DEV_CONSENT_ISSUER, pki.consent.jwks)])
    c = v.verify(out.read_text().strip())
    assert c.cid == "cli-1" and c.expires_at - c.issued_at == 90 * 86400
    assert c.datasets == {("pbccrc", "personal_loans")} and c.tiers == {"personal_privacy"}


def test_cli_errors(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [
        "issue", "--issuer-key", str(pki.consent.key()), "--kid", "k", "--iss", "i",
        "--subject-type", "person", "--subject", PERSON, "--grantee", "bank",
        "--purpose", "lending",
    ]  # fmt: skip
    assert consent_main([*base, "--scope", "tier:state_secret"]) == 2
    assert consent_main([*base, "--scope", "tax/arrears", "--lifetime-days", "0"]) == 2
    assert consent_main([*base, "--scope", "tax/arrears", "--cid", "a b"]) == 2
    assert consent_main(["issue"]) == 2
    missing = [*base, "--scope", "tax/arrears"]
    missing[2] = str(tmp_path / "nope.key")
    assert consent_main(missing) == 1
    assert consent_main([*base, "--scope", "tax/arrears"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.count(".") == 2
