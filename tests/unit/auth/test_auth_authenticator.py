"""Authenticator against a fake ServicerContext (the real TLS path is in tests/integration)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography import x509

from gateway.auth import (
    Authenticator,
    CallerAuthenticator,
    Identity,
    Role,
    TokenVerifier,
    TrustedIssuer,
    identity,
    issue_token,
)
from gateway.auth.authenticator import bearer_token
from gateway.auth.registry import AgencyKind, load_registry
from gateway.dev.pki import Pki, cert_thumbprint_pem
from gateway.errors import AuthenticationError, PermissionDeniedError
from tests.helpers import FakeContext

AUD = "urn:credit-gateway:unit"


def make(pki: Pki, **kw: Any) -> Authenticator:
    issuer = TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)
    return Authenticator(load_registry(), TokenVerifier([issuer], audience=AUD), **kw)


def ctx(pki: Pki, principal: str = "ndrc", role_dir: str = "agencies", **kw: Any) -> FakeContext:
    cert = pki.principal_cert(role_dir, principal).read_bytes()
    kw.setdefault("subject", principal)
    kw.setdefault("cert_thumbprint", cert_thumbprint_pem(cert))
    token = issue_token(
        pki.agency_token.key(),
        pki.agency_token.signing_kid,
        issuer=pki.agency_token.issuer,
        audience=AUD,
        **kw,
    )
    return FakeContext(cert, [("authorization", f"Bearer {token}")])


def test_identity(auth_pki: Pki) -> None:
    ident = make(auth_pki).authenticate(ctx(auth_pki, "bank"))
    assert isinstance(ident, Identity)
    assert ident.agency_id == ident.principal_id == "bank"
    assert ident.role is Role.AGENCY and ident.kind is AgencyKind.FINANCIAL_INSTITUTION
    assert ident.token_kid == auth_pki.agency_token.signing_kid
    assert ident.cert_thumbprint == cert_thumbprint_pem(auth_pki.agency_cert("bank").read_bytes())
    assert "(" in ident.display_name


def test_staff_roles_when_allowed(auth_pki: Pki) -> None:
    auth = make(auth_pki, roles={Role.OFFICER, Role.AUDITOR})
    officer = auth.authenticate(ctx(auth_pki, "officer_a", "officers"))
    assert officer.role is Role.OFFICER and officer.kind is None
    assert auth.authenticate(ctx(auth_pki, "auditor", "auditors")).role is Role.AUDITOR
    with pytest.raises(PermissionDeniedError) as info:
        auth.authenticate(ctx(auth_pki, "ndrc"))
    assert info.value.reason == "ROLE_NOT_ALLOWED"


def test_no_certificate(auth_pki: Pki) -> None:
    with pytest.raises(AuthenticationError) as info:
        make(auth_pki).authenticate(FakeContext(None))
    assert info.value.reason == "CERT_MISSING"


def test_unparseable_certificate(auth_pki: Pki) -> None:
    with pytest.raises(AuthenticationError) as info:
        make(auth_pki).authenticate(FakeContext(b"-----BEGIN CERTIFICATE-----\nAA==\n"))
    assert info.value.reason == "CERT_INVALID"


def test_certificate_parsed_once(auth_pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make(auth_pki)
    context = ctx(auth_pki)
    auth.authenticate(context)

    def no_parsing(_: bytes) -> None:
        raise AssertionError("the certificate of a known connection must not be parsed again")

    monkeypatch.setattr(x509, "load_pem_x509_certificate", no_parsing)
    assert auth.authenticate(context).agency_id == "ndrc"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([], None),
        ([("authorization", "Bearer abc")], "abc"),
        ([("authorization", "bearer  abc ")], "abc"),
        ([("authorization", b"Bearer abc")], "abc"),
        ([("x-other", "1"), ("authorization", "Bearer ")], None),
    ],
)
def test_bearer_token(metadata: list[tuple[str, str | bytes]], expected: str | None) -> None:
    assert bearer_token(metadata) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", "Basic abc")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ],
)
def test_bearer_token_refused(metadata: list[tuple[str, str | bytes]]) -> None:
    with pytest.raises(AuthenticationError) as info:
        bearer_token(metadata)
    assert info.value.reason == "TOKEN_MALFORMED"


def test_suspended_unregistered_and_mismatched(auth_pki: Pki) -> None:
    auth = make(auth_pki)
    with pytest.raises(PermissionDeniedError) as denied:
        auth.authenticate(ctx(auth_pki, "suspended_agency"))
    assert denied.value.reason == "AGENCY_SUSPENDED"
    assert denied.value.metadata == {"principal_id": "suspended_agency"}
    with pytest.raises(PermissionDeniedError) as denied:
        auth.authenticate(ctx(auth_pki, "stranger"))
    assert denied.value.reason == "AGENCY_UNREGISTERED"
    # the stranger's certificate, with a token claiming to be ndrc
    with pytest.raises(AuthenticationError) as refused:
        auth.authenticate(ctx(auth_pki, "stranger", subject="ndrc"))
    assert refused.value.reason == "TOKEN_SUBJECT_MISMATCH"


def test_refusals_are_logged_without_the_token(
    auth_pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.auth")
    context = ctx(auth_pki, "bank", cert_thumbprint="A" * 43)
    with pytest.raises(AuthenticationError):
        make(auth_pki).authenticate(context)
    token = str(context.metadata[0][1]).removeprefix("Bearer ")
    assert "TOKEN_CERT_MISMATCH" in caplog.text and "bank" in caplog.text
    assert auth_pki.agency_token.signing_kid in caplog.text
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_caller_adapter_fits_the_query_service_seam(auth_pki: Pki) -> None:
    seam: identity.CallerSource = CallerAuthenticator(make(auth_pki))  # checked by mypy
    caller = seam.authenticate(ctx(auth_pki, "bank"))  # type: ignore[arg-type]
    assert caller == identity.Caller(
        agency_id="bank",
        kind="financial_institution",
        cert_thumbprint=cert_thumbprint_pem(auth_pki.agency_cert("bank").read_bytes()),
    )
