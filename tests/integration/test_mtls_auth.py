"""Agency authentication over real mutually authenticated TLS connections.

A small grpc.aio server requires client certificates from the development CA and runs
:class:`Authenticator` in a generic unary handler; clients connect with real certificates
and present real tokens. Every refusal is checked by gRPC status code and ErrorInfo reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.auth import Authenticator, TokenVerifier, TrustedIssuer, issue_token, load_registry
from gateway.auth.tokens import load_signing_key
from gateway.dev.pki import Pki, cert_thumbprint_pem
from gateway.errors import DOMAIN
from tests.helpers import make_pki, who_am_i_server

AUDIENCE = "urn:credit-gateway:test"
METHOD = "/test.Auth/WhoAmI"
AGENCIES = ["ndrc", "bank", "suspended_agency", "nogrants", "stranger"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(
        tmp_path_factory,
        departments=["tax"],
        agencies=AGENCIES,
        officers=["officer_a"],
        auditors=["auditor"],
    )


@pytest.fixture(scope="module")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA entirely: same names, not trusted by the gateway."""
    return make_pki(tmp_path_factory, agencies=["ndrc"], name="rogue")


@dataclass
class Server:
    port: int
    authenticator: Authenticator


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[Server]:
    verifier = TokenVerifier(
        [TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)],
        audience=AUDIENCE,
    )
    authenticator = Authenticator(load_registry(), verifier)

    async with who_am_i_server(pki, authenticator) as port:
        yield Server(port, authenticator)


def _identity(b: bytes) -> bytes:
    return b


# --- clients and tokens -----------------------------------------------------------------


async def call(
    srv: Server,
    pki: Pki,
    token: str | None,
    *,
    cert: tuple[Path, Path] | None = None,
    ca: Path | None = None,
    as_agency: str = "ndrc",
    metadata: list[tuple[str, str]] | None = None,
) -> bytes:
    """One RPC; raises grpc.aio.AioRpcError on failure."""
    if cert is None:
        cert = (pki.agency_cert(as_agency), pki.agency_key(as_agency))
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ca or pki.ca_cert).read_bytes(),
        private_key=cert[1].read_bytes() if cert[1] else None,
        certificate_chain=cert[0].read_bytes() if cert[0] else None,
    )
    md = list(metadata or [])
    if token is not None:
        md.append(("authorization", f"Bearer {token}"))
    async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds) as channel:
        stub = channel.unary_unary(
            METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        result: bytes = await stub(b"", metadata=md or None, timeout=10)
        return result


async def refused(
    srv: Server, pki: Pki, token: str | None, code: grpc.StatusCode, reason: str, **kw: Any
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(srv, pki, token, **kw)
    err = info.value
    assert err.code() == code, err.details()
    status = rpc_status.from_call(err)
    assert status is not None, "no grpc-status-details-bin trailer"
    errinfo = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(errinfo)
    assert errinfo.domain == DOMAIN
    assert errinfo.reason == reason, (errinfo.reason, status.message)
    return err


def mint(pki: Pki, agency: str = "ndrc", **kw: Any) -> str:
    """A good token for ``agency``'s certificate, overridable."""
    kid = kw.pop("kid", pki.agency_token.signing_kid)
    kw.setdefault("issuer", pki.agency_token.issuer)
    kw.setdefault("audience", AUDIENCE)
    kw.setdefault("subject", agency)
    kw.setdefault("cert_thumbprint", cert_thumbprint_pem(pki.agency_cert(agency).read_bytes()))
    return issue_token(pki.agency_token.key(kid), kid, **kw)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _ed25519_key(pki: Pki) -> ed25519.Ed25519PrivateKey:
    key, alg = load_signing_key(pki.agency_token.key())
    assert isinstance(key, ed25519.Ed25519PrivateKey) and alg == "EdDSA"
    return key


def craft(
    pki: Pki,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    sign: Callable[[bytes], bytes] | None = None,
    agency: str = "ndrc",
) -> str:
    """A hand-built compact JWS (for what issue_token will not make)."""
    now = int(time.time())
    h: dict[str, Any] = {"alg": "EdDSA", "kid": pki.agency_token.signing_kid, "typ": "JWT"}
    h.update(header or {})
    c: dict[str, Any] = {
        "iss": pki.agency_token.issuer,
        "aud": AUDIENCE,
        "sub": agency,
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "cnf": {"x5t#S256": cert_thumbprint_pem(pki.agency_cert(agency).read_bytes())},
    }
    c.update(claims or {})
    for name in drop:
        c.pop(name)
    signing_input = f"{_b64(json.dumps(h).encode())}.{_b64(json.dumps(c).encode())}".encode()
    signature = (sign or _ed25519_key(pki).sign)(signing_input)
    return f"{signing_input.decode()}.{_b64(signature)}"


U = grpc.StatusCode.UNAUTHENTICATED
P = grpc.StatusCode.PERMISSION_DENIED


# --- accepted -----------------------------------------------------------------------------


async def test_valid_eddsa_token_identifies_the_agency(server: Server, pki: Pki) -> None:
    assert await call(server, pki, mint(pki)) == b"ndrc"


async def test_second_key_in_jwks_is_accepted_rotation(server: Server, pki: Pki) -> None:
    es256 = next(k for k in pki.agency_token.keys if k.startswith("es256-"))
    assert await call(server, pki, mint(pki, "bank", kid=es256), as_agency="bank") == b"bank"


async def test_same_token_on_every_call_is_normal_reuse(server: Server, pki: Pki) -> None:
    token = mint(pki)
    for _ in range(3):
        assert await call(server, pki, token) == b"ndrc"


async def test_registered_agency_without_grants_still_authenticates(
    server: Server, pki: Pki
) -> None:
    # Grants are the policy's business; authentication only says who is calling.
    assert await call(server, pki, mint(pki, "nogrants"), as_agency="nogrants") == b"nogrants"


# --- token refused: UNAUTHENTICATED ---------------------------------------------------------


async def test_no_token(server: Server, pki: Pki) -> None:
    err = await refused(server, pki, None, U, "TOKEN_MISSING")
    assert "no bearer token" in (err.details() or "")


async def test_malformed_token(server: Server, pki: Pki) -> None:
    await refused(server, pki, "not-a-jwt", U, "TOKEN_MALFORMED")


async def test_wrong_authorization_scheme(server: Server, pki: Pki) -> None:
    await refused(
        server, pki, None, U, "TOKEN_MALFORMED", metadata=[("authorization", "Basic bmRyYzp4")]
    )


async def test_bad_signature(server: Server, pki: Pki) -> None:
    impostor = ed25519.Ed25519PrivateKey.generate()  # right kid, wrong key
    await refused(server, pki, craft(pki, sign=impostor.sign), U, "TOKEN_BAD_SIGNATURE")


async def test_tampered_payload(server: Server, pki: Pki) -> None:
    head, _, sig = mint(pki).split(".")
    forged = _b64(json.dumps({"sub": "ndrc", "aud": AUDIENCE}).encode())
    await refused(server, pki, f"{head}.{forged}.{sig}", U, "TOKEN_BAD_SIGNATURE")


async def test_unknown_kid(server: Server, pki: Pki) -> None:
    # Signed by the consent issuer: a real key of the PKI, but not one agency tokens trust.
    consent = pki.consent
    token = issue_token(
        consent.key(),
        consent.signing_kid,
        issuer=pki.agency_token.issuer,
        audience=AUDIENCE,
        subject="ndrc",
        cert_thumbprint=cert_thumbprint_pem(pki.agency_cert("ndrc").read_bytes()),
    )
    await refused(server, pki, token, U, "TOKEN_UNKNOWN_KEY")


async def test_expired(server: Server, pki: Pki) -> None:
    token = mint(pki, now=time.time() - 3600 - 120, lifetime_s=3600)
    await refused(server, pki, token, U, "TOKEN_EXPIRED")


async def test_issued_in_the_future(server: Server, pki: Pki) -> None:
    await refused(server, pki, mint(pki, now=time.time() + 600), U, "TOKEN_NOT_YET_VALID")


async def test_nbf_in_the_future(server: Server, pki: Pki) -> None:
    token = craft(pki, claims={"nbf": int(time.time()) + 600})
    await refused(server, pki, token, U, "TOKEN_NOT_YET_VALID")


async def test_wrong_audience(server: Server, pki: Pki) -> None:
    token = mint(pki, audience="urn:some-other-service")
    await refused(server, pki, token, U, "TOKEN_WRONG_AUDIENCE")


async def test_wrong_issuer(server: Server, pki: Pki) -> None:
    token = mint(pki, issuer="urn:evil:issuer")
    await refused(server, pki, token, U, "TOKEN_WRONG_ISSUER")


async def test_token_bound_to_another_certificate(server: Server, pki: Pki) -> None:
    bank_thumb = cert_thumbprint_pem(pki.agency_cert("bank").read_bytes())
    token = mint(pki, "ndrc", cert_thumbprint=bank_thumb)
    await refused(server, pki, token, U, "TOKEN_CERT_MISMATCH")


async def test_token_of_agency_a_over_agency_b_connection(server: Server, pki: Pki) -> None:
    token = mint(pki, "ndrc")  # bound to ndrc's certificate
    await refused(server, pki, token, U, "TOKEN_CERT_MISMATCH", as_agency="bank")
    # and stays refused on the fast path, once the token is cached from a good call
    assert await call(server, pki, token) == b"ndrc"
    await refused(server, pki, token, U, "TOKEN_CERT_MISMATCH", as_agency="bank")


async def test_token_sub_names_another_agency(server: Server, pki: Pki) -> None:
    # Bound to ndrc's certificate, but claiming to be bank: certificate and token disagree.
    ndrc_thumb = cert_thumbprint_pem(pki.agency_cert("ndrc").read_bytes())
    token = mint(pki, "bank", cert_thumbprint=ndrc_thumb)
    await refused(server, pki, token, U, "TOKEN_SUBJECT_MISMATCH")


async def test_replayed_jti_in_a_different_token(server: Server, pki: Pki) -> None:
    jti = str(uuid.uuid4())
    first = mint(pki, jti=jti)
    second = mint(pki, jti=jti, now=time.time() - 5)  # same jti, different string
    assert first != second
    assert await call(server, pki, first) == b"ndrc"
    await refused(server, pki, second, U, "TOKEN_REPLAYED")
    assert await call(server, pki, first) == b"ndrc"  # the original stays usable


async def test_alg_none(server: Server, pki: Pki) -> None:
    token = craft(pki, header={"alg": "none"}, sign=lambda _: b"")
    await refused(server, pki, token, U, "TOKEN_ALG_NOT_ALLOWED")


def _hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


async def test_hs256_keyed_with_the_issuer_public_key(server: Server, pki: Pki) -> None:
    jwks = json.loads(pki.agency_token.jwks.read_text())
    secret = json.dumps(jwks["keys"][0]).encode()
    pem = (
        _ed25519_key(pki)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for key in (secret, pem):
        token = craft(pki, header={"alg": "HS256"}, sign=_hs256(key))
        await refused(server, pki, token, U, "TOKEN_ALG_NOT_ALLOWED")


async def test_unknown_crit_header(server: Server, pki: Pki) -> None:
    token = craft(
        pki, header={"crit": ["urn:example:must-understand"], "urn:example:must-understand": 1}
    )
    await refused(server, pki, token, U, "TOKEN_CRIT_UNSUPPORTED")


async def test_token_without_exp(server: Server, pki: Pki) -> None:
    await refused(server, pki, craft(pki, drop=("exp",)), U, "TOKEN_CLAIM_MISSING")


async def test_token_without_cnf_is_not_bound(server: Server, pki: Pki) -> None:
    await refused(server, pki, craft(pki, drop=("cnf",)), U, "TOKEN_CLAIM_MISSING")


async def test_lifetime_over_one_hour(server: Server, pki: Pki) -> None:
    await refused(server, pki, mint(pki, lifetime_s=3600 + 1), U, "TOKEN_LIFETIME_TOO_LONG")


# --- registry refused: PERMISSION_DENIED -------------------------------------------------------


async def test_suspended_agency(server: Server, pki: Pki) -> None:
    token = mint(pki, "suspended_agency")
    await refused(server, pki, token, P, "AGENCY_SUSPENDED", as_agency="suspended_agency")


async def test_unregistered_agency(server: Server, pki: Pki) -> None:
    # A CA-signed certificate and a valid token, but not in policies/agencies.toml.
    token = mint(pki, "stranger")
    await refused(server, pki, token, P, "AGENCY_UNREGISTERED", as_agency="stranger")


async def test_officer_certificate_on_the_agency_service(server: Server, pki: Pki) -> None:
    cert = (pki.officer_cert("officer_a"), pki.officer_key("officer_a"))
    thumb = cert_thumbprint_pem(cert[0].read_bytes())
    token = mint(pki, subject="officer_a", cert_thumbprint=thumb)
    await refused(server, pki, token, P, "ROLE_NOT_ALLOWED", cert=cert)


# --- TLS refused: the handshake fails ----------------------------------------------------------


async def test_client_certificate_from_an_untrusted_ca(
    server: Server, pki: Pki, rogue_pki: Pki
) -> None:
    cert = (rogue_pki.agency_cert("ndrc"), rogue_pki.agency_key("ndrc"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(server, pki, mint(pki), cert=cert)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_no_client_certificate(server: Server, pki: Pki) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
        stub = channel.unary_unary(
            METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub(b"", metadata=[("authorization", f"Bearer {mint(pki)}")], timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# --- hygiene -----------------------------------------------------------------------------------


async def test_logs_name_the_agency_and_kid_never_the_token(
    server: Server, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.auth")
    good = mint(pki)
    bad = mint(pki, audience="urn:elsewhere")
    assert await call(server, pki, good) == b"ndrc"
    await refused(server, pki, bad, U, "TOKEN_WRONG_AUDIENCE")
    text = caplog.text
    assert "ndrc" in text and pki.agency_token.signing_kid in text
    cert_b64 = "".join(pki.agency_cert("ndrc").read_text().splitlines()[1:-1])
    for secret in (good, bad, *good.split("."), *bad.split("."), cert_b64[:40]):
        assert secret not in text
