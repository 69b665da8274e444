"""One compact-JWS verifier (RFC 7515 section 7.1) for agency tokens and consents.

:class:`CompactJWSVerifier` checks, in this order: three dot-separated segments with a
non-empty header and payload; a header that is base64url JSON and an object; no ``crit``
extension (RFC 7515 section 4.1.11: none is implemented, so any must be refused); the
``typ`` if the caller fixes one; an ``alg`` from the allowed set; a ``kid`` naming a
trusted key; the ``alg`` being that key's own (the key fixes the algorithm, the header
may not choose another); the signature (PyJWS); a payload that is a JSON object.

Until the signature verifies, every header value is the sender's choice: a
:class:`JWSError` raised before then carries no header value (no ``kid``, no ``alg``),
so nothing the sender chose can reach a message, an error's metadata or a log line,
where it could carry an identifier, forge a log line or probe which kids exist. Only
:attr:`JWSError.kid` of a failure after verification, and :class:`VerifiedJWS`, name
the key.

Each caller maps :class:`JWSFailure` to its own reason codes and words; the keys come
from :func:`gateway.auth.tokens.index_issuer_keys`, which refuses weak Ed25519 keys as
trust anchors.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

__all__ = ["CompactJWSVerifier", "JWSError", "JWSFailure", "VerifiedJWS"]


class JWSFailure(enum.Enum):
    """Why a compact JWS was refused, in the order the checks run."""

    NOT_COMPACT = "not three segments with a header and a payload"
    HEADER_NOT_JSON = "header is not base64url JSON"
    HEADER_NOT_OBJECT = "header is not a JSON object"
    CRIT = "header has a 'crit' extension"
    WRONG_TYP = "header typ is not the expected one"
    ALG_NOT_ALLOWED = "alg is not one of those allowed"
    NO_KID = "header has no kid"
    UNKNOWN_KID = "kid names no trusted key"
    ALG_NOT_THE_KEYS = "alg is not the key's algorithm"
    BAD_SIGNATURE = "signature is invalid"
    ALG_REFUSED = "PyJWS refused the algorithm"
    UNDECODABLE = "PyJWS could not decode the token"
    PAYLOAD_NOT_JSON = "payload is not JSON"
    PAYLOAD_NOT_OBJECT = "payload is not a JSON object"


class JWSError(Exception):
    """A compact JWS that does not verify; ``failure`` says which check refused it.

    ``kid`` is set only for failures after the signature verified (the payload
    failures); before that no value from the token is kept.
    """

    def __init__(self, failure: JWSFailure, kid: str | None = None) -> None:
        super().__init__(failure.value)
        self.failure = failure
        self.kid = kid


@dataclass(frozen=True, slots=True)
class VerifiedJWS:
    """A compact JWS whose signature verified: its claims and the key that signed it."""

    claims: dict[str, Any]
    #: The trusted key's kid and the issuer that owns it.
    kid: str
    issuer: str
    alg: str


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.b64decode(padded, altchars=b"-_", validate=True))


class CompactJWSVerifier:
    """Verifies compact JWS against trusted keys; see the module docstring for the checks.

    ``keys`` maps kid -> (issuer, key), as :func:`gateway.auth.tokens.index_issuer_keys`
    builds it; ``algorithms`` are the JWS ``alg`` names allowed; ``typ`` if set is the
    header ``typ`` every token must carry. Thread-safe: it holds no mutable state.
    """

    def __init__(
        self,
        keys: Mapping[str, tuple[str, jwt.PyJWK]],
        *,
        algorithms: Iterable[str],
        typ: str | None = None,
    ) -> None:
        self._keys = keys
        self._algorithms = frozenset(algorithms)
        self._typ = typ
        self._jws = jwt.PyJWS()

    def verify(self, token: str) -> VerifiedJWS:
        """Verify ``token`` (a compact JWS) and return its claims and signing key.

        Raises:
            JWSError: ``failure`` names the check that refused it.
        """
        parts = token.split(".")
        if len(parts) != 3 or not all(parts[:2]):
            raise JWSError(JWSFailure.NOT_COMPACT)
        try:
            header = _b64url_json(parts[0])
        except (ValueError, binascii.Error, RecursionError):
            raise JWSError(JWSFailure.HEADER_NOT_JSON) from None
        if not isinstance(header, dict):
            raise JWSError(JWSFailure.HEADER_NOT_OBJECT)
        if "crit" in header:
            raise JWSError(JWSFailure.CRIT)
        if self._typ is not None and header.get("typ") != self._typ:
            raise JWSError(JWSFailure.WRONG_TYP)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise JWSError(JWSFailure.ALG_NOT_ALLOWED)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JWSError(JWSFailure.NO_KID)
        found = self._keys.get(kid)
        if found is None:
            raise JWSError(JWSFailure.UNKNOWN_KID)
        issuer, key = found
        if alg != key.algorithm_name:
            raise JWSError(JWSFailure.ALG_NOT_THE_KEYS)
        try:
            decoded = self._jws.decode_complete(token, key=key, algorithms=[alg])
        except jwt.InvalidSignatureError:
            raise JWSError(JWSFailure.BAD_SIGNATURE) from None
        except jwt.InvalidAlgorithmError:
            raise JWSError(JWSFailure.ALG_REFUSED) from None
        except jwt.PyJWTError:
            raise JWSError(JWSFailure.UNDECODABLE) from None
        # The signature verified: the header and payload are the trusted issuer's words,
        # so the kid may name the token from here on.
        try:
            claims = json.loads(decoded["payload"])
        except (ValueError, RecursionError):
            raise JWSError(JWSFailure.PAYLOAD_NOT_JSON, kid) from None
        if not isinstance(claims, dict):
            raise JWSError(JWSFailure.PAYLOAD_NOT_OBJECT, kid)
        return VerifiedJWS(claims, kid, issuer, alg)
