"""Trust anchors that are not keys: weak Ed25519 points refused at load.

The identity point ``AQAA...`` as a JWKS key makes the signature ``R = identity, S = 0``
verify for any token. Every small-order point, in every encoding, and every key with a
small-order component is refused where it is loaded, naming the file and the kid, for agency
tokens and consent issuers alike.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth.keys import (
    WeakKeyError,
    check_ed25519_public_key,
    ed25519_public_key_problem,
)
from gateway.auth.tokens import TokenVerifier, TrustedIssuer
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from gateway.policy.consent import ConsentVerifier
from gateway.policy.decider import build_decider

IDENTITY_B64 = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
L = 2**252 + 27742317777372353535851937790883648493


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- an independent, affine edwards25519 (the test does not reuse the module's code) ------


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P
    return x3, y3


def _mul(k: int, pt: tuple[int, int]) -> tuple[int, int]:
    out = (0, 1)
    while k:
        if k & 1:
            out = _add(out, pt)
        pt = _add(pt, pt)
        k >>= 1
    return out


def _x_for(y: int) -> int | None:
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if x * x % P != x2:
        x = x * pow(2, (P - 1) // 4, P) % P
    return x if x * x % P == x2 else None


def _encode(x: int, y: int) -> bytes:
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _torsion() -> list[tuple[int, int]]:
    """The 8 points of order dividing 8: [L]Q for a point Q of full order, and its multiples."""
    y = 2
    while True:
        x = _x_for(y)
        if x is not None:
            t = _mul(L, (x, y))
            if _mul(4, t) != (0, 1):  # order exactly 8
                return [_mul(k, t) for k in range(8)]
        y += 1


TORSION = _torsion()


def _small_order_encodings() -> list[bytes]:
    out: set[bytes] = set()
    for x, y in TORSION:
        out.add(_encode(x, y))
        for yy in (y, y + P):  # y + P is a non-canonical y when it still fits in 255 bits
            if yy < 2**255:
                out.add(_encode(x, yy))
                if x == 0:  # x = 0 with the sign bit set: non-canonical too
                    out.add((yy | (1 << 255)).to_bytes(32, "little"))
    return sorted(out)


SMALL_ORDER = _small_order_encodings()


def test_there_are_eight_small_order_points_and_more_encodings() -> None:
    assert len(set(TORSION)) == 8
    assert _unb64(IDENTITY_B64) in SMALL_ORDER
    assert len(SMALL_ORDER) > 8  # the non-canonical ones


@pytest.mark.parametrize("raw", SMALL_ORDER, ids=[r.hex()[:12] for r in SMALL_ORDER])
def test_every_small_order_encoding_is_refused(raw: bytes) -> None:
    problem = ed25519_public_key_problem(raw)
    assert problem is not None and "small order" in problem
    with pytest.raises(WeakKeyError, match="small order"):
        check_ed25519_public_key(raw)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 7))
def test_real_keys_pass_and_real_keys_plus_torsion_do_not(seed: bytes, k: int) -> None:
    public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert ed25519_public_key_problem(raw) is None
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    x = _x_for(y)
    assert x is not None
    if x & 1 != raw[31] >> 7:
        x = P - x
    mixed = _add((x, y), TORSION[k])
    assert "prime-order subgroup" in (ed25519_public_key_problem(_encode(*mixed)) or "")


def test_a_point_off_the_curve_and_a_wrong_length_are_refused() -> None:
    y = next(y for y in range(2, 100) if _x_for(y) is None)
    assert "not a point" in (ed25519_public_key_problem(y.to_bytes(32, "little")) or "")
    assert "32 bytes" in (ed25519_public_key_problem(b"\x01" * 31) or "")


def test_the_identity_key_really_accepts_a_forged_signature() -> None:
    """Why the check exists: OpenSSL verifies against the identity point without complaint."""
    key = ed25519.Ed25519PublicKey.from_public_bytes(_unb64(IDENTITY_B64))
    forged = _unb64(IDENTITY_B64) + bytes(32)  # R = identity, S = 0
    try:
        key.verify(forged, b"any header.any payload")
    except InvalidSignature:  # pragma: no cover - a stricter OpenSSL; the refusal still holds
        pytest.skip("this OpenSSL refuses small-order keys itself")


# --- where keys are loaded: agency-token JWKS and consent issuers --------------------------


def _jwks_file(tmp_path: Path, keys: list[dict[str, str]]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


WEAK = {"kty": "OKP", "crv": "Ed25519", "x": IDENTITY_B64, "kid": "forger-1", "alg": "EdDSA"}


def test_a_jwks_with_the_identity_point_is_refused_naming_file_and_kid(tmp_path: Path) -> None:
    path = _jwks_file(tmp_path, [WEAK])
    with pytest.raises(ConfigError) as exc:
        TrustedIssuer.from_jwks_file("urn:issuer", path)
    assert str(path) in exc.value.message and "'forger-1'" in exc.value.message
    assert "small order" in exc.value.message


@pytest.mark.parametrize("raw", SMALL_ORDER[:4], ids=lambda r: r.hex()[:12])
def test_a_weak_key_beside_a_good_one_still_refuses_the_file(tmp_path: Path, raw: bytes) -> None:
    good = ed25519.Ed25519PrivateKey.generate().public_key()
    good_x = _b64(good.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    path = _jwks_file(
        tmp_path,
        [
            {"kty": "OKP", "crv": "Ed25519", "x": good_x, "kid": "good", "alg": "EdDSA"},
            {**WEAK, "x": _b64(raw), "kid": "weak"},
        ],
    )
    with pytest.raises(ConfigError, match="kid 'weak'"):
        TrustedIssuer.from_jwks_file("urn:issuer", path)


def test_a_trusted_issuer_built_by_hand_is_refused_by_both_verifiers() -> None:
    import jwt

    issuer = TrustedIssuer("urn:issuer", {"forger-1": jwt.PyJWK(WEAK)})
    with pytest.raises(ConfigError, match="kid 'forger-1'.*small order"):
        TokenVerifier([issuer], audience="urn:test")
    with pytest.raises(ConfigError, match="kid 'forger-1'.*small order"):
        ConsentVerifier([issuer])


def test_a_consent_issuer_jwks_with_a_weak_key_stops_the_decider(tmp_path: Path) -> None:
    path = _jwks_file(tmp_path, [WEAK])
    with pytest.raises(ConfigError) as exc:
        build_decider(load_catalog(), consent_issuers=[("urn:consent", path)])
    assert str(path) in exc.value.message and "'forger-1'" in exc.value.message


def test_an_es256_point_off_the_curve_is_refused_naming_file_and_kid(tmp_path: Path) -> None:
    bad = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64((1).to_bytes(32, "big")),
        "y": _b64((1).to_bytes(32, "big")),
        "kid": "off-curve",
        "alg": "ES256",
    }
    path = _jwks_file(tmp_path, [bad])
    with pytest.raises(ConfigError) as exc:
        TrustedIssuer.from_jwks_file("urn:issuer", path)
    assert str(path) in exc.value.message and "'off-curve'" in exc.value.message


def test_the_key_check_imports_only_the_standard_library() -> None:
    """The auditors' tool may call it: no PyJWT, gRPC or Casbin comes with it."""
    code = (
        "import sys, gateway.auth.keys\n"
        "heavy = [m for m in ('jwt', 'grpc', 'casbin', 'google.protobuf', 'gateway.errors',\n"
        "    'gateway.auth.tokens', 'gateway.dev.pki') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""
