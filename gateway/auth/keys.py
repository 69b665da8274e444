"""Trust anchors that are not keys: refuse weak Ed25519 public keys before trusting them.

An Ed25519 public key is a point on edwards25519. OpenSSL (and so ``cryptography``) verifies
signatures without checking the key: for a point of small order every signature equation
collapses, and a signature anyone can write verifies for *every* message. With the identity
point ``AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`` (``01 00 .. 00``) as key, the signature
``R = identity, S = 0`` is accepted for any token. So a key must be checked once, where it is
loaded, and a weak one refused with the file and key id that brought it.

:func:`ed25519_public_key_problem` decodes the 32 bytes as RFC 8032 section 5.1.3 does and
says what is wrong, or ``None`` for a good key:

* not 32 bytes;
* not the encoding of a curve point (no square root for x);
* of small order: one of the 8 points of order 1, 2, 4 or 8 (``[8]P`` is the identity), in
  any of its encodings, canonical or not;
* a non-canonical encoding (``y >= p``, or ``x = 0`` with the sign bit set): a key made from
  a private key is always canonical, so a non-canonical one was made by hand;
* not in the prime-order subgroup (``[L]P`` is not the identity: a small-order part was added
  to a good key, which makes signatures malleable between verifiers).

:func:`check_ed25519_public_key` raises :class:`WeakKeyError` (a ``ValueError``) instead.
This module imports only the standard library, so that the auditors' tool (which may depend on
``cryptography`` and the standard library alone) can call it for the audit verifier key::

    from gateway.auth.keys import check_ed25519_public_key
    check_ed25519_public_key(raw_32_bytes)         # raises WeakKeyError for a weak key

ECDSA P-256 keys need no such check here: ``cryptography`` refuses a point that is not on the
curve, and the point at infinity has no encoding it accepts.
"""

from __future__ import annotations

__all__ = ["WeakKeyError", "check_ed25519_public_key", "ed25519_public_key_problem"]

# edwards25519 (RFC 8032 section 5.1): -x^2 + y^2 = 1 + d x^2 y^2 over GF(p).
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
#: The order of the prime-order subgroup (the base point's order).
_L = 2**252 + 27742317777372353535851937790883648493

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z
_IDENTITY: _Point = (0, 1, 1, 0)


class WeakKeyError(ValueError):
    """An Ed25519 public key that must not be trusted; the message says why."""


def _add(p1: _Point, p2: _Point) -> _Point:
    # RFC 8032 section 5.1.4: complete (unified) addition, valid for doubling too.
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * 2 * _D * t2 % _P
    d = z1 * 2 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _multiply(scalar: int, point: _Point) -> _Point:
    result = _IDENTITY
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _is_identity(point: _Point) -> bool:
    x, y, z, _ = point
    return x % _P == 0 and (y - z) % _P == 0


def ed25519_public_key_problem(raw: bytes) -> str | None:
    """What makes ``raw`` (a 32-byte RFC 8032 public key) untrustworthy, or ``None``.

    Pure integer arithmetic; about a millisecond a key (keys are checked once, at load).
    """
    if len(raw) != 32:
        return f"an Ed25519 public key has 32 bytes, not {len(raw)}"
    encoded = int.from_bytes(raw, "little")
    sign = encoded >> 255
    y_raw = encoded & ((1 << 255) - 1)
    y = y_raw % _P
    # RFC 8032 section 5.1.3, step 2: x^2 = (y^2 - 1) / (d y^2 + 1).
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P != u:
        if v * x * x % _P != -u % _P:
            return "not a point on edwards25519 (no x for this y)"
        x = x * _SQRT_M1 % _P
    non_canonical = y_raw >= _P or (x == 0 and sign == 1)
    if x & 1 != sign:
        x = _P - x if x else 0
    point: _Point = (x, y, 1, x * y % _P)
    if _is_identity(_multiply(8, point)):
        return "a point of small order (weak key: a forged signature verifies for any message)"
    if non_canonical:
        return "a non-canonical point encoding (no real key is encoded so)"
    if not _is_identity(_multiply(_L, point)):
        return "a point outside the prime-order subgroup (a small-order component was added)"
    return None


def check_ed25519_public_key(raw: bytes) -> None:
    """Raise :class:`WeakKeyError` if :func:`ed25519_public_key_problem` finds a problem."""
    problem = ed25519_public_key_problem(raw)
    if problem is not None:
        raise WeakKeyError(problem)
