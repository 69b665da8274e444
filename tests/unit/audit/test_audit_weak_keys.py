"""An audit verifier key that is not a proper Ed25519 key
(a small-order point, a non-canonical encoding) is refused at load, naming it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.errors import KeyFormatError, UnverifiedNoteError
from gateway.audit.log import AuditLog
from gateway.audit.note import (
    ALG_ED25519,
    SMALL_ORDER_POINTS,
    Ed25519Signer,
    Verifier,
    check_public_key,
    generate_key,
    key_id,
    load_verifiers,
    open_note,
)
from gateway.audit.store import MemoryStore
from gateway.errors import ConfigError
from tests.unit.audit.audit_testkit import ORIGIN

_P = 2**255 - 19
IDENTITY_B64 = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # the identity point, unpadded


def _vkey(name: str, point: bytes) -> str:
    """A verifier key string for ``point`` with a correct key ID (what an attacker writes)."""
    data = bytes([ALG_ED25519]) + point
    return f"{name}+{key_id(name, data):08x}+{base64.b64encode(data).decode()}"


def _forged_note(name: str, kid: int) -> str:
    # R = identity, S = 0: [S]B = R + [k]A holds when A is the identity.
    sig = kid.to_bytes(4, "big") + bytes([1]) + bytes(31) + bytes(32)
    return f"forged tree head\n\n\u2014 {name} {base64.b64encode(sig).decode()}\n"


def test_the_identity_key_from_the_issue_is_refused_naming_it() -> None:
    point = base64.urlsafe_b64decode(IDENTITY_B64 + "=")
    assert point == bytes([1]) + bytes(31)
    vkey = _vkey(ORIGIN, point)
    # Without the check the forgery verifies: the library alone does not stop it.
    kid = int(vkey.split("+")[1], 16)
    note = _forged_note(ORIGIN, kid)
    raw = Ed25519PublicKey.from_public_bytes(bytes([1]) + bytes(31))
    raw.verify(base64.b64decode(note.split(" ")[-1])[4:], b"forged tree head\n")
    with pytest.raises(KeyFormatError, match=rf"{ORIGIN}\+{kid:08x}.*small order"):
        Verifier.from_key_string(vkey)


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_every_small_order_point_is_refused(point: bytes) -> None:
    with pytest.raises(KeyFormatError, match="weak key|non-canonical"):
        Verifier.from_key_string(_vkey("k", point))


@pytest.mark.parametrize(
    "y",
    [_P, _P + 1, _P - 1 + 2**255 - _P, 2**255 - 1],  # y >= p: every non-canonical y
    ids=["p", "p+1", "2^255-20", "2^255-1"],
)
@pytest.mark.parametrize("sign", [0, 1])
def test_non_canonical_encodings_are_refused(y: int, sign: int) -> None:
    point = (y | (sign << 255)).to_bytes(32, "little")
    with pytest.raises(KeyFormatError):
        check_public_key(point)


def test_negative_zero_x_is_refused() -> None:
    # The identity (x = 0) with its sign bit set: a second encoding of one point.
    with pytest.raises(KeyFormatError, match="weak key"):
        check_public_key(bytes([1]) + bytes(30) + bytes([0x80]))


def test_mixed_order_point_is_refused() -> None:
    """An honest key plus a small-order point: not in the prime-order subgroup."""
    from gateway.auth import keys as n

    honest = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    y = int.from_bytes(honest, "little") & ((1 << 255) - 1)
    # Decode honest and the order-2 point (0, -1), add, re-encode.
    x = _recover_x(y, honest[31] >> 7)
    s = n._add((x, y, 1, x * y % _P), (0, _P - 1, 1, 0))
    zi = pow(s[2], -1, _P)
    sx, sy = s[0] * zi % _P, s[1] * zi % _P
    mixed = (sy | ((sx & 1) << 255)).to_bytes(32, "little")
    check_public_key(honest)
    with pytest.raises(KeyFormatError, match="small-order component"):
        check_public_key(mixed)


def _recover_x(y: int, sign: int) -> int:
    from gateway.auth import keys as n

    u, v = (y * y - 1) % _P, (n._D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P != u:
        x = x * n._SQRT_M1 % _P
    return x if x & 1 == sign else _P - x


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_honest_keys_always_load(seed: bytes) -> None:
    signer = Ed25519Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(seed))
    assert Verifier.from_key_string(signer.verifier_key()).name == ORIGIN


def test_load_verifiers_names_the_file_and_line(tmp_path: Path) -> None:
    good = generate_key(ORIGIN)[1]
    path = tmp_path / "audit.pub"
    path.write_text(f"# keys\n{good}\n{_vkey(ORIGIN, bytes([1]) + bytes(31))}\n{good}\n")
    with pytest.raises(KeyFormatError, match=rf"{path}, line 3: verifier key {ORIGIN}\+"):
        load_verifiers(path)
    path.write_text(f"{good}\n{good}\n")
    assert len(load_verifiers(path)) == 1  # the same key twice is one key


def test_forged_note_never_verifies_under_a_refused_key() -> None:
    """The attack end to end: a key file with the identity key is refused, so
    the auditor never holds a verifier the forgery could satisfy."""
    honest = Verifier.from_key_string(generate_key(ORIGIN)[1])
    with pytest.raises(UnverifiedNoteError):
        open_note(_forged_note(ORIGIN, honest.key_id ^ 1), [honest])


async def test_audit_log_refuses_a_weak_trusted_key() -> None:
    signer = Ed25519Signer.from_key_string(generate_key(ORIGIN)[0])
    with pytest.raises(ConfigError, match="audit.trusted_keys.*small order"):
        await AuditLog.open(
            None,
            signer,
            store=MemoryStore(),
            trusted_keys=[_vkey(ORIGIN, bytes([1]) + bytes(31))],
        )
