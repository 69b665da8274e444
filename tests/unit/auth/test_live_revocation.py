"""Live controls in authentication: dropped token verifications keep their jti, and the
authenticator refuses revoked certificates and suspended principals it had served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.auth import Authenticator, TokenVerifier, TrustedIssuer, load_registry
from gateway.auth.tokens import issue_token
from gateway.dev.pki import Pki, cert_thumbprint_pem
from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.stores.sqlite.controls import SQLiteControlsStore
from tests.helpers import Clock

AUD = "urn:credit-gateway:unit"
T0 = 1_900_000_000.0


def _verifier(pki: Pki) -> TokenVerifier:
    issuer = TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)
    return TokenVerifier([issuer], audience=AUD, clock=Clock(T0))


def _mint(pki: Pki, agency: str = "ndrc", **kw: Any) -> str:
    return issue_token(
        pki.agency_token.key(),
        pki.agency_token.signing_kid,
        issuer=pki.agency_token.issuer,
        audience=AUD,
        subject=agency,
        cert_thumbprint=cert_thumbprint_pem(pki.agency_cert(agency).read_bytes()),
        now=T0,
        **kw,
    )


def test_a_forgotten_token_keeps_its_jti(auth_pki: Pki) -> None:
    v = _verifier(auth_pki)
    thumb = cert_thumbprint_pem(auth_pki.agency_cert("ndrc").read_bytes())
    first = _mint(auth_pki, jti="j-1")
    v.verify(first, thumb)
    assert v.forget(lambda t: t.subject == "ndrc") == 1 and v.cached_tokens == 0
    replay = _mint(auth_pki, jti="j-1", lifetime_s=1200)
    with pytest.raises(AuthenticationError) as exc:
        v.verify(replay, thumb)
    assert exc.value.reason == "TOKEN_REPLAYED"
    v.verify(first, thumb)  # the same string verifies again
    assert v.forget(lambda t: False) == 0


class _Context:
    def __init__(self, pem: bytes, token: str) -> None:
        self._pem = pem
        self._token = token

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]}

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token}")]


def test_the_authenticator_follows_the_store(auth_pki: Pki, tmp_path: Path) -> None:
    store = SQLiteControlsStore(tmp_path / "controls.sqlite")
    other = SQLiteControlsStore(tmp_path / "controls.sqlite")  # another process's view
    verifier = _verifier(auth_pki)
    auth = Authenticator(load_registry(), verifier, controls=store)
    pem = auth_pki.agency_cert("ndrc").read_bytes()
    ctx = _Context(pem, _mint(auth_pki))
    assert auth.authenticate(ctx).principal_id == "ndrc"
    assert verifier.cached_tokens == 1
    other.suspend_agency("ndrc", officer="officer_a", reason="r")
    with pytest.raises(PermissionDeniedError) as denied:
        auth.authenticate(ctx)
    assert denied.value.reason == "AGENCY_SUSPENDED"
    assert verifier.cached_tokens == 0  # dropped when the change was seen
    other.request_reinstatement("ndrc", officer="officer_a", reason="r")
    other.approve_reinstatement("ndrc", officer="officer_b")
    assert auth.authenticate(ctx).principal_id == "ndrc"
    from cryptography import x509

    serial = format(x509.load_pem_x509_certificate(pem).serial_number, "x")
    other.revoke_certificates("serial", [serial], by="officer_a")
    with pytest.raises(AuthenticationError) as revoked:
        auth.authenticate(ctx)
    assert revoked.value.reason == "CERT_REVOKED"
    assert verifier.cached_tokens == 0
