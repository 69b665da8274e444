"""Nothing a caller chose is logged or echoed before it is verified.

A refused token's header (``kid``, ``alg``, ``typ``...) and claims are the caller's words
until a trusted issuer's signature over them has verified. Here such values carry an
identity number and a forged log line; over real mutual TLS, the refusal's status message,
ErrorInfo metadata and the gateway's log must hold none of them. A property test drives the
token and consent verifiers with random headers and claims to the same end.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth import Authenticator, TokenVerifier, TrustedIssuer, load_registry
from gateway.auth.tokens import load_signing_key
from gateway.dev.pki import Pki, cert_thumbprint_pem
from gateway.errors import AuthenticationError
from gateway.policy.consent import CONSENT_TYP, ConsentVerifier
from tests.helpers import make_pki, who_am_i_server

AUDIENCE = "urn:credit-gateway:test"
METHOD = "/test.Auth/WhoAmI"
PERSONAL = "11010519491231002X"
INJECTED = f'{PERSONAL}\n{{"level": "info", "msg": "forged"}}'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory, agencies=["ndrc"])


@pytest.fixture
async def port(pki: Pki) -> AsyncIterator[int]:
    verifier = TokenVerifier(
        [TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)],
        audience=AUDIENCE,
    )
    authenticator = Authenticator(load_registry(), verifier)

    async with who_am_i_server(pki, authenticator) as bound:
        yield bound


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(pki: Pki, header: dict[str, Any], *, key: ed25519.Ed25519PrivateKey | None = None) -> str:
    now = int(time.time())
    claims = {
        "iss": pki.agency_token.issuer,
        "aud": AUDIENCE,
        "sub": "ndrc",
        "iat": now,
        "exp": now + 600,
        "jti": PERSONAL,
        "cnf": {"x5t#S256": cert_thumbprint_pem(pki.agency_cert("ndrc").read_bytes())},
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if key is None:
        loaded, _ = load_signing_key(pki.agency_token.key())
        assert isinstance(loaded, ed25519.Ed25519PrivateKey)
        key = loaded
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


async def refusal(pki: Pki, port: int, token: str) -> tuple[str, str, dict[str, str]]:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.agency_key("ndrc").read_bytes(),
        certificate_chain=pki.agency_cert("ndrc").read_bytes(),
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        stub = channel.unary_unary(METHOD, request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub(b"", metadata=[("authorization", f"Bearer {token}")], timeout=10)
    err = info.value
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    status = rpc_status.from_call(err)
    assert status is not None
    errinfo = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(errinfo)
    return errinfo.reason, err.details() or "", dict(errinfo.metadata)


@pytest.mark.parametrize(
    ("header", "reason", "signed_by_issuer"),
    [
        # the issue's case: an unknown kid
        ({"alg": "EdDSA", "kid": INJECTED}, "TOKEN_UNKNOWN_KEY", True),
        # a real kid with another key's signature: the kid is still unverified
        (None, "TOKEN_BAD_SIGNATURE", False),
        ({"alg": INJECTED, "kid": INJECTED}, "TOKEN_ALG_NOT_ALLOWED", True),
        ({"alg": "ES256", "kid": None}, "TOKEN_ALG_NOT_ALLOWED", True),
        ({"alg": "EdDSA", "kid": INJECTED, "crit": [INJECTED]}, "TOKEN_CRIT_UNSUPPORTED", True),
    ],
)
async def test_a_refused_token_echoes_and_logs_nothing_it_chose(
    pki: Pki,
    port: int,
    caplog: pytest.LogCaptureFixture,
    header: dict[str, Any] | None,
    reason: str,
    signed_by_issuer: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    kid = pki.agency_token.signing_kid
    if header is None:
        header = {"alg": "EdDSA", "kid": kid, "typ": PERSONAL}
    elif header.get("kid") is None:
        header = {**header, "kid": kid}  # the ES256 header on the Ed25519 kid
    signer = None if signed_by_issuer else ed25519.Ed25519PrivateKey.generate()
    token = craft(pki, header, key=signer)
    got_reason, message, metadata = await refusal(pki, port, token)
    assert got_reason == reason
    echoed = " ".join([message, *metadata.keys(), *metadata.values()])
    for chosen in (PERSONAL, "forged", kid):
        assert chosen not in echoed, (chosen, echoed)
        assert chosen not in caplog.text, (chosen, caplog.text)
    assert "kid" not in metadata


async def test_a_verified_token_may_be_named_by_its_kid(
    pki: Pki, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed by the trusted issuer and then refused (wrong audience): the kid is the
    issuer's word now, and names the token; the claims still appear nowhere."""
    caplog.set_level(logging.DEBUG)
    kid = pki.agency_token.signing_kid
    now = int(time.time())
    header = {"alg": "EdDSA", "kid": kid}
    claims = {
        "iss": pki.agency_token.issuer,
        "aud": "urn:elsewhere",
        "sub": "ndrc",
        "iat": now,
        "exp": now + 600,
        "jti": PERSONAL,
        "cnf": {"x5t#S256": "x"},
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    key, _ = load_signing_key(pki.agency_token.key())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    token = f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"
    got_reason, message, metadata = await refusal(pki, port, token)
    assert got_reason == "TOKEN_WRONG_AUDIENCE"
    assert metadata.get("kid") == kid
    assert kid in caplog.text
    assert PERSONAL not in message + caplog.text


# --- property: no header or claim value of an unverified token ever comes back -------------

# "§" marks a value as the caller's (the verifiers' fixed words never contain it); the
# algorithm names are there to reach the later checks.
values = st.one_of(
    st.text(max_size=30).map(lambda t: f"§{t}"),
    st.sampled_from([PERSONAL, INJECTED, "EdDSA", "ES256", "none", "HS256"]),
)
headers = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5u", "cty"]), values, max_size=5
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, claims=st.dictionaries(values, values, max_size=5))
def test_property_unverified_values_never_reach_a_refusal(
    pki: Pki, header: dict[str, str], claims: dict[str, str]
) -> None:
    verifier = TokenVerifier(
        [TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)],
        audience=AUDIENCE,
    )
    consents = ConsentVerifier([TrustedIssuer.from_jwks_file(pki.consent.issuer, pki.consent.jwks)])
    stranger = ed25519.Ed25519PrivateKey.generate()  # never a trusted key
    for typ in (None, CONSENT_TYP):
        h = dict(header) if typ is None else {**header, "typ": typ}
        signing_input = f"{_b64(json.dumps(h).encode())}.{_b64(json.dumps(claims).encode())}"
        token = f"{signing_input}.{_b64(stranger.sign(signing_input.encode()))}"
        chosen = [
            v for v in [*h.values(), *claims.values(), *claims.keys()] if "§" in v or PERSONAL in v
        ]
        with pytest.raises(AuthenticationError) as exc:
            verifier.verify(token, "thumb")
        echoed = " ".join([exc.value.message, *exc.value.metadata.values()])
        assert "kid" not in exc.value.metadata
        check = consents.check(
            token, agency="ndrc", purpose="lending", subject_type="person", subject_id=PERSONAL
        )
        assert check.consent is None
        echoed += " " + check.detail
        assert "§" not in echoed and PERSONAL not in echoed, (chosen, echoed)
