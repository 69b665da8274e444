"""The minting commands and the verifiers agree on the longest lifetime: one constant each,
a command never mints a token the gateway refuses (``token issue
--lifetime 7200`` once minted one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth.tokens import MAX_LIFETIME_S, TokenVerifier, TrustedIssuer, token_main
from gateway.cli.consent import consent_main
from gateway.dev.pki import DEV_CONSENT_ISSUER, Pki, cert_thumbprint_pem
from gateway.policy.consent import MAX_CONSENT_LIFETIME_S, ConsentVerifier

AUD = "urn:credit-gateway:unit"
PERSON = "360426199101010071"


def _token_args(pki: Pki, out: Path, lifetime: int) -> list[str]:
    return [
        "issue",
        "--issuer-key", str(pki.agency_token.key()),
        "--kid", pki.agency_token.signing_kid,
        "--iss", pki.agency_token.issuer,
        "--aud", AUD,
        "--sub", "bank",
        "--cert", str(pki.agency_cert("bank")),
        "--lifetime", str(lifetime),
        "--out", str(out),
    ]  # fmt: skip


def test_token_issue_refuses_what_the_gateway_refuses(
    auth_pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bank.jwt"
    assert token_main(_token_args(auth_pki, out, 7200)) == 2
    err = capsys.readouterr().err
    assert f"1 to {MAX_LIFETIME_S} s" in err and "refuses" in err
    assert not out.exists()
    assert token_main(_token_args(auth_pki, out, MAX_LIFETIME_S + 1)) == 2

    # The longest the command mints is what a default verifier (the gateway's) accepts.
    assert token_main(_token_args(auth_pki, out, MAX_LIFETIME_S)) == 0
    issuer = TrustedIssuer.from_jwks_file(auth_pki.agency_token.issuer, auth_pki.agency_token.jwks)
    verifier = TokenVerifier([issuer], audience=AUD)
    assert verifier.max_lifetime_s == MAX_LIFETIME_S
    thumb = cert_thumbprint_pem(auth_pki.agency_cert("bank").read_bytes())
    verified = verifier.verify(out.read_text().strip(), thumb)
    assert verified.expires_at - verified.issued_at == MAX_LIFETIME_S


def test_consent_issue_refuses_what_the_gateway_refuses(
    auth_pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "consent.jwt"
    longest = MAX_CONSENT_LIFETIME_S // 86400
    base = [
        "issue",
        "--issuer-key", str(auth_pki.consent.key()),
        "--kid", auth_pki.consent.signing_kid,
        "--iss", DEV_CONSENT_ISSUER,
        "--subject-type", "person", "--subject", PERSON,
        "--grantee", "bank", "--purpose", "lending", "--scope", "tax/arrears",
        "--out", str(out),
    ]  # fmt: skip
    assert consent_main([*base, "--lifetime-days", str(longest + 1)]) == 2
    assert f"1 to {longest}" in capsys.readouterr().err
    assert not out.exists()
    assert consent_main([*base, "--lifetime-days", str(longest)]) == 0
    verifier = ConsentVerifier(
        [TrustedIssuer.from_jwks_file(DEV_CONSENT_ISSUER, auth_pki.consent.jwks)]
    )
    assert verifier.max_lifetime_s == MAX_CONSENT_LIFETIME_S
    consent = verifier.verify(out.read_text().strip())
    assert consent.expires_at - consent.issued_at == longest * 86400
