"""The one compact-JWS verifier: each check in order, and nothing from an unverified token kept."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.auth.jws import CompactJWSVerifier, JWSError, JWSFailure

KID = "k1"


def _pub(private: ed25519.Ed25519PrivateKey) -> jwt.PyJWK:
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    return jwt.PyJWK({**jwk, "kid": KID, "alg": "EdDSA"})


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _verifier(key: ed25519.Ed25519PrivateKey, typ: str | None = None) -> CompactJWSVerifier:
    return CompactJWSVerifier({KID: ("iss-1", _pub(key))}, algorithms=("EdDSA", "ES256"), typ=typ)


def _sign(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
    payload: bytes | dict[str, object],
    **headers: object,
) -> str:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jwt.PyJWS().encode(body, key, algorithm=str(headers.pop("alg", "EdDSA")),
                              headers={"kid": KID, **headers})  # fmt: skip


def test_a_good_token_yields_its_claims_key_and_issuer(key: ed25519.Ed25519PrivateKey) -> None:
    got = _verifier(key, typ="x+jwt").verify(_sign(key, {"sub": "a"}, typ="x+jwt"))
    assert (got.claims, got.kid, got.issuer, got.alg) == ({"sub": "a"}, KID, "iss-1", "EdDSA")


def test_each_check_names_its_failure(key: ed25519.Ed25519PrivateKey) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    cases = {
        JWSFailure.NOT_COMPACT: "a.b",
        JWSFailure.HEADER_NOT_JSON: "!!!.e30.sig",
        JWSFailure.HEADER_NOT_OBJECT: f"{_b64([1])}.e30.sig",
        JWSFailure.CRIT: _sign(key, {}, typ="x+jwt", crit=["exp"]),
        JWSFailure.WRONG_TYP: _sign(key, {}, typ="JWT"),
        JWSFailure.ALG_NOT_ALLOWED: f"{_b64({'alg': 'none', 'typ': 'x+jwt'})}.e30.x",
        JWSFailure.NO_KID: f"{_b64({'alg': 'EdDSA', 'typ': 'x+jwt'})}.e30.x",
        JWSFailure.UNKNOWN_KID: _sign(key, {}, typ="x+jwt", kid="nope"),
        JWSFailure.ALG_NOT_THE_KEYS: _sign(
            ec.generate_private_key(ec.SECP256R1()), {}, typ="x+jwt", alg="ES256"
        ),
        JWSFailure.BAD_SIGNATURE: _sign(other, {}, typ="x+jwt"),
        JWSFailure.UNDECODABLE: f"{_b64({'alg': 'EdDSA', 'kid': KID, 'typ': 'x+jwt'})}.!!!.x",
        JWSFailure.PAYLOAD_NOT_JSON: _sign(key, b"not json", typ="x+jwt"),
        JWSFailure.PAYLOAD_NOT_OBJECT: _sign(key, b"[1]", typ="x+jwt"),
    }
    for failure, token in cases.items():
        with pytest.raises(JWSError) as err:
            _verifier(key, typ="x+jwt").verify(token)
        assert err.value.failure is failure, failure


def test_no_token_value_is_kept_before_the_signature_verifies(
    key: ed25519.Ed25519PrivateKey,
) -> None:
    forged = _sign(ed25519.Ed25519PrivateKey.generate(), {"sub": "secret-subject"})
    with pytest.raises(JWSError) as err:
        _verifier(key).verify(forged)
    assert err.value.kid is None
    assert "secret-subject" not in str(err.value) and KID not in str(err.value)
    with pytest.raises(JWSError) as err:
        _verifier(key).verify(_sign(key, b"[1]"))
    assert err.value.kid == KID  # verified: the key may name the token
