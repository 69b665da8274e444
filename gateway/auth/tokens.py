"""Certificate-bound agency tokens: verification (with a cache) and minting.

An agency authenticates twice on every call: by the client certificate of its TLS
connection, and by a JWT in ``authorization: Bearer <jwt>`` that a trusted issuer signed.
The JWT is bound to that certificate (RFC 8705, ``cnf: {"x5t#S256": <thumbprint>}``), so a
stolen token is useless without the agency's private key, and a certificate alone is not
enough without a current token.

Rules (:class:`TokenVerifier`):

* algorithms EdDSA and ES256 only; the algorithm must also be that of the key the ``kid``
  names (so ``alg: none``, HS256 keyed with the issuer's public key and alg-swaps all fail);
* no ``crit`` header: this verifier implements no JWS extension, and RFC 7515 says a
  recipient must reject a critical extension it does not understand;
* required claims ``iss`` (the issuer that owns the ``kid``), ``aud`` (contains this
  gateway's audience), ``sub``, ``iat``, ``exp`` (at most ``max_lifetime_s`` = 1 h after
  ``iat``), ``jti`` and ``cnf.x5t#S256`` (equal to the connection's certificate thumbprint);
* time checks with a 60 s leeway: expired if ``now >= exp + leeway``, not yet valid if
  ``iat`` or ``nbf`` is more than ``leeway`` in the future.

**Reuse and replay (a design decision).** Over gRPC an agency sends the same bearer token
with every RPC until it expires; that is normal reuse, not a replay. So a ``jti`` is accepted
once per token *string*: the first presentation is fully verified and cached under the
SHA-256 of the token string until ``exp + leeway``; presenting the same string again costs a
dict lookup and a thumbprint comparison (still on every call, so a cached token is still
refused on another certificate). A *different* token string carrying an already-seen
``(iss, jti)`` within its lifetime is a replay (a re-signed or re-encoded copy) and is refused
with ``TOKEN_REPLAYED``. Entries are purged when they expire, so memory is bounded by the
tokens legitimately issued in one lifetime (only fully verified tokens, i.e. tokens a trusted
issuer signed, are ever stored). The cache lives in one process; with a
:class:`~gateway.auth.replay.ReplayStore` (``[auth] replay_store``) the first use of each
``(iss, jti)`` is also recorded in a file every gateway process shares, so a replay is
refused across processes and restarts, while the same string stays reusable everywhere.
Without one, each process remembers only its own (a jti may be used once per process).

Every rejection is an :class:`~gateway.errors.AuthenticationError` whose ``reason`` is one of
the ``TOKEN_*`` codes of :class:`~gateway.auth.reasons.AuthReason` and whose message says
the reason in words. Messages and metadata never contain the token, nor anything the caller
chose that has not been verified: a refusal before the signature verifies (malformed, wrong
or unknown algorithm or kid, bad signature) carries fixed words and no ``kid``; only once a
trusted issuer's signature has verified may the ``kid`` name the token (ErrorInfo metadata
``kid``, and the authenticator's log line), and claim values never appear.

Why one module (some 610 lines): verification, its reuse/replay cache and minting share
one claim vocabulary (``cnf``, lifetimes, leeway); the verifier refuses exactly what the
minter must never produce. The shared replay store is :mod:`gateway.auth.replay`.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import hmac
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.auth.certs import cert_thumbprint_pem
from gateway.auth.jws import CompactJWSVerifier, JWSError, JWSFailure
from gateway.auth.keys import ed25519_public_key_problem
from gateway.auth.reasons import AuthReason
from gateway.auth.replay import ReplayStore
from gateway.cli.console import path_arg
from gateway.errors import AuthenticationError, ConfigError
from gateway.runtime.secretfile import write_secret

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_LEEWAY_S",
    "MAX_LIFETIME_S",
    "AuthReason",
    "TokenVerifier",
    "TrustedIssuer",
    "VerifiedToken",
    "index_issuer_keys",
    "issue_token",
    "load_signing_key",
    "token_main",
]

ALLOWED_ALGORITHMS: tuple[str, ...] = ("EdDSA", "ES256")
DEFAULT_LEEWAY_S = 60
MAX_LIFETIME_S = 3600
#: Verified tokens kept for the fast path (about 1 KiB each). Past it the oldest is
#: dropped (its next use verifies again); its jti stays recorded until it expires, so
#: the bound never weakens replay refusal (that record is bounded by the lifetime).
MAX_CACHED_TOKENS = 65_536
# A compact JWS with our claims is ~600 bytes; anything far larger is not ours, and is
# refused before any base64 or JSON work is spent on it.
_MAX_TOKEN_BYTES = 8192


_X5T = "x5t#S256"


def _reject(reason: AuthReason, message: str, **metadata: str) -> AuthenticationError:
    return AuthenticationError(message, reason=reason.value, metadata=metadata)


#: The agency-token reason and words for each compact-JWS failure (None: the words name
#: the configured algorithms). Fixed texts: never a header or claim value.
_JWS_REJECTIONS: dict[JWSFailure, tuple[AuthReason, str | None]] = {
    JWSFailure.NOT_COMPACT: (AuthReason.MALFORMED, "token is not a compact JWS (three segments)"),
    JWSFailure.HEADER_NOT_JSON: (AuthReason.MALFORMED, "token header is not base64url JSON"),
    JWSFailure.HEADER_NOT_OBJECT: (AuthReason.MALFORMED, "token header is not a JSON object"),
    JWSFailure.CRIT: (
        AuthReason.CRIT_UNSUPPORTED,
        "token header has a 'crit' extension this gateway does not implement",
    ),
    JWSFailure.WRONG_TYP: (AuthReason.MALFORMED, "token header has the wrong typ"),
    JWSFailure.ALG_NOT_ALLOWED: (AuthReason.ALG_NOT_ALLOWED, None),
    JWSFailure.NO_KID: (AuthReason.UNKNOWN_KEY, "token header has no kid"),
    JWSFailure.UNKNOWN_KID: (AuthReason.UNKNOWN_KEY, "token signed with an unknown key (kid)"),
    JWSFailure.ALG_NOT_THE_KEYS: (
        AuthReason.ALG_NOT_ALLOWED,
        "token algorithm does not match its key",
    ),
    JWSFailure.BAD_SIGNATURE: (AuthReason.BAD_SIGNATURE, "token signature is invalid"),
    JWSFailure.ALG_REFUSED: (AuthReason.ALG_NOT_ALLOWED, "token algorithm refused"),
    JWSFailure.UNDECODABLE: (AuthReason.MALFORMED, "token could not be decoded"),
    JWSFailure.PAYLOAD_NOT_JSON: (AuthReason.MALFORMED, "token payload is not JSON"),
    JWSFailure.PAYLOAD_NOT_OBJECT: (AuthReason.MALFORMED, "token payload is not a JSON object"),
}


# --- trusted issuers -------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer this gateway trusts: its ``iss`` and public keys by ``kid``."""

    issuer: str
    keys: Mapping[str, jwt.PyJWK]

    @classmethod
    def from_jwks(
        cls,
        issuer: str,
        jwks: Mapping[str, Any],
        *,
        source: str = "jwks",
        algorithms: Sequence[str] = ALLOWED_ALGORITHMS,
    ) -> TrustedIssuer:
        """Build from a parsed JWKS document (``{"keys": [...]}``).

        Raises:
            ConfigError: (key ``source``, then ``source: kid '<kid>'``) no keys, a key without
                ``kid``, a repeated kid, a key that cannot be read (an EC point off its
                curve), one whose algorithm is not in ``algorithms`` (symmetric ``oct`` keys
                in particular are never trusted), or a weak Ed25519 key: small order,
                non-canonical or outside the prime-order subgroup
                (:func:`gateway.auth.keys.ed25519_public_key_problem`).
        """
        raw_keys = jwks.get("keys")
        if not isinstance(raw_keys, list) or not raw_keys:
            raise ConfigError(source, "a JWKS needs a non-empty 'keys' list")
        keys: dict[str, jwt.PyJWK] = {}
        for i, jwk in enumerate(raw_keys):
            where = f"{source}.keys[{i}]"
            if not isinstance(jwk, dict):
                raise ConfigError(where, "must be a JSON object")
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                raise ConfigError(f"{where}.kid", "missing: every key needs a kid to be chosen by")
            if kid in keys:
                raise ConfigError(f"{where}.kid", f"kid {kid!r} appears twice")
            # From here on the key is named by its kid: that is what an operator searches for.
            where = f"{source}: kid {kid!r}"
            if jwk.get("kty") == "oct" or "d" in jwk:
                raise ConfigError(where, "only public asymmetric keys may be trusted")
            try:
                key = jwt.PyJWK(jwk)
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                # cryptography refuses an EC point that is not on the curve (ValueError).
                raise ConfigError(where, f"unusable key: {exc}") from None
            if key.algorithm_name not in algorithms:
                raise ConfigError(
                    where, f"algorithm {key.algorithm_name} not allowed ({', '.join(algorithms)})"
                )
            problem = _key_problem(key)
            if problem is not None:
                raise ConfigError(where, f"refused as a trust anchor: {problem}")
            keys[kid] = key
        return cls(issuer=issuer, keys=keys)

    @classmethod
    def from_jwks_file(
        cls, issuer: str, path: Path, *, algorithms: Sequence[str] = ALLOWED_ALGORITHMS
    ) -> TrustedIssuer:
        """Load ``path`` (a JWKS JSON file). Raises ConfigError as :meth:`from_jwks`, and
        when the file is missing or not JSON."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(str(path), "JWKS file not found") from None
        except ValueError as exc:
            raise ConfigError(str(path), f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(str(path), "a JWKS must be a JSON object")
        return cls.from_jwks(issuer, data, source=str(path), algorithms=algorithms)


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token says. Holds no copy of the token itself."""

    issuer: str
    subject: str
    kid: str
    algorithm: str
    jti: str
    issued_at: int
    expires_at: int
    cert_thumbprint: str
    claims: Mapping[str, Any] = field(repr=False)


@dataclass(slots=True)
class _CacheEntry:
    token: VerifiedToken
    deadline: float  # exp + leeway: after this the entry is gone and the token is expired
    jti_key: tuple[str, str]


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if value is None:
        raise _reject(AuthReason.CLAIM_MISSING, f"token has no '{name}' claim", claim=name)
    # bool is an int in Python; JSON true is not a time. RFC 7519 section 2 allows a
    # fractional NumericDate, but not one outside any clock: 1e999 parses as infinity
    # and NaN compares false with everything, so both are refused here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _reject(AuthReason.MALFORMED, f"token claim '{name}' must be a number", claim=name)
    if not -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE:  # also False for NaN
        raise _reject(
            AuthReason.MALFORMED, f"token claim '{name}' is not a time in range", claim=name
        )
    return int(value)


#: The largest NumericDate taken (2^53 s, far past any real expiry; a float still
#: holds every integer up to it exactly).
_MAX_NUMERIC_DATE = 2**53


def _str_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None:
        raise _reject(AuthReason.CLAIM_MISSING, f"token has no '{name}' claim", claim=name)
    if not isinstance(value, str) or not value:
        raise _reject(
            AuthReason.MALFORMED, f"token claim '{name}' must be a non-empty string", claim=name
        )
    return value


def _key_problem(key: jwt.PyJWK) -> str | None:
    """Why ``key`` must not be trusted (a weak Ed25519 point), or None. ECDSA keys were
    checked on the curve by cryptography when they were built."""
    public = key.key
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return ed25519_public_key_problem(raw)
    return None


def index_issuer_keys(
    issuers: Iterable[TrustedIssuer], what: str
) -> dict[str, tuple[str, jwt.PyJWK]]:
    """kid -> (issuer, key) over several trusted issuers (agency tokens or consents).

    Raises ConfigError if two issuers share an ``iss`` or a ``kid`` (a kid must name one
    key, or a token could be checked against the wrong issuer's key), or if a key is a weak
    Ed25519 point (:mod:`gateway.auth.keys`; checked again here because a
    :class:`TrustedIssuer` can be built without :meth:`TrustedIssuer.from_jwks`).
    """
    keys: dict[str, tuple[str, jwt.PyJWK]] = {}
    seen: set[str] = set()
    for trusted in issuers:
        if trusted.issuer in seen:
            raise ConfigError(trusted.issuer, f"{what} configured twice")
        seen.add(trusted.issuer)
        for kid, key in trusted.keys.items():
            if kid in keys:
                raise ConfigError(kid, f"kid used by two trusted {what}s")
            problem = _key_problem(key)
            if problem is not None:
                raise ConfigError(
                    f"{trusted.issuer}: kid {kid!r}", f"refused as a trust anchor: {problem}"
                )
            keys[kid] = (trusted.issuer, key)
    return keys


class TokenVerifier:
    """Verifies agency tokens against trusted issuers; see the module docstring for the rules.

    Thread-safe (one lock around the caches); cheap enough to call on the event loop:
    a cached token costs one SHA-256 of the token string and a dict lookup.
    """

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        audience: str,
        leeway_s: int = DEFAULT_LEEWAY_S,
        max_lifetime_s: int = MAX_LIFETIME_S,
        algorithms: Sequence[str] = ALLOWED_ALGORITHMS,
        clock: Callable[[], float] = time.time,
        replay_store: ReplayStore | None = None,
        max_cached: int = MAX_CACHED_TOKENS,
    ) -> None:
        """Raises ConfigError if two issuers share an ``iss`` or a ``kid`` (a kid must name
        one key, or a token could be checked against the wrong issuer's key).
        ``max_cached`` bounds the verified tokens kept (:data:`MAX_CACHED_TOKENS`).

        ``replay_store`` (:mod:`gateway.auth.replay`) shares seen ``jti``s with other
        processes and across restarts; without it they are remembered in this process only.
        """
        self._keys = index_issuer_keys(issuers, "issuer")
        if not self._keys:
            raise ConfigError("issuers", "no trusted token issuer configured")
        self.audience = audience
        self.leeway_s = leeway_s
        self.max_lifetime_s = max_lifetime_s
        self._algorithms = frozenset(algorithms)
        self._clock = clock
        self._jws = CompactJWSVerifier(self._keys, algorithms=self._algorithms)
        self._lock = threading.Lock()
        self._by_token: dict[bytes, _CacheEntry] = {}
        self._by_jti: dict[tuple[str, str], bytes] = {}
        self._expiry: list[tuple[float, bytes]] = []  # heap of (deadline, token hash)
        self._replay_store = replay_store
        self._forgotten: dict[bytes, tuple[str, str]] = {}  # dropped entries' jti keys
        self._max_cached = max(1, max_cached)

    def forget(self, dropped: Callable[[VerifiedToken], bool]) -> int:
        """Drop the cached verifications of every token for which ``dropped(token)`` is true
        (its certificate was revoked, its agency suspended: the live controls). Their ``jti``
        stays recorded until the token expires, so a dropped token is still never replayed
        under another string. Returns how many were dropped."""
        with self._lock:
            stale = [d for d, e in self._by_token.items() if dropped(e.token)]
            for digest in stale:
                # A re-presentation verifies again; the jti entry keeps pointing at this
                # digest (same string: allowed; another string: replayed) and goes with it
                # at expiry (_purge).
                entry = self._by_token.pop(digest)
                self._forgotten[digest] = entry.jti_key
        return len(stale)

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are cached (for metrics and tests)."""
        return len(self._by_token)

    def verify(self, token: str | None, cert_thumbprint: str) -> VerifiedToken:
        """Verify ``token`` presented on a connection whose client certificate has
        thumbprint ``cert_thumbprint`` (RFC 8705 x5t#S256).

        Raises:
            AuthenticationError: ``reason`` is a ``TOKEN_*`` code of :class:`AuthReason`.
            ReplayStoreUnavailableError: a new token string could not be recorded in the
                replay store (fail closed; see :mod:`gateway.auth.replay`).
        """
        if not token:
            raise _reject(AuthReason.MISSING, "no bearer token: send 'authorization: Bearer <jwt>'")
        if len(token) > _MAX_TOKEN_BYTES:
            raise _reject(AuthReason.MALFORMED, "token is too long to be a credit-gateway token")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        with self._lock:
            self._purge(now)
            entry = self._by_token.get(digest)
        if entry is not None:
            self._check_binding(entry.token, cert_thumbprint)
            return entry.token

        verified = self._verify_fully(token, now)
        self._check_binding(verified, cert_thumbprint)
        jti_key = (verified.issuer, verified.jti)
        deadline = verified.expires_at + self.leeway_s
        if self._replay_store is not None:
            with self._lock:  # a replay this process saw costs no write
                self._refuse_replay(jti_key, digest, verified)
            # The shared store decides across processes and restarts (one fsynced write,
            # once per token string per process; never on the cached path above).
            if not self._replay_store.claim(
                verified.issuer, verified.jti, digest, deadline=deadline, now=now
            ):
                raise self._replayed(verified)
        with self._lock:
            # Checked and recorded under one lock: two different strings with one jti racing
            # on two threads cannot both get in.
            self._refuse_replay(jti_key, digest, verified)
            while len(self._by_token) >= self._max_cached:
                # The oldest verification goes; its jti stays until it expires (_purge).
                oldest = next(iter(self._by_token))
                self._forgotten[oldest] = self._by_token.pop(oldest).jti_key
            self._by_token[digest] = _CacheEntry(verified, deadline, jti_key)
            self._by_jti[jti_key] = digest
            heapq.heappush(self._expiry, (deadline, digest))
        return verified

    # The caller holds the lock.
    def _refuse_replay(
        self, jti_key: tuple[str, str], digest: bytes, verified: VerifiedToken
    ) -> None:
        other = self._by_jti.get(jti_key)
        if other is not None and other != digest:
            raise self._replayed(verified)

    @staticmethod
    def _replayed(verified: VerifiedToken) -> AuthenticationError:
        return _reject(
            AuthReason.REPLAYED,
            "token replayed: another token with the same jti was already used",
            kid=verified.kid,
        )

    # The caller holds the lock.
    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, digest = heapq.heappop(self._expiry)
            entry = self._by_token.pop(digest, None)
            jti_key = entry.jti_key if entry is not None else self._forgotten.pop(digest, None)
            if jti_key is not None and self._by_jti.get(jti_key) == digest:
                del self._by_jti[jti_key]

    @staticmethod
    def _check_binding(token: VerifiedToken, cert_thumbprint: str) -> None:
        if not hmac.compare_digest(token.cert_thumbprint, cert_thumbprint):
            raise _reject(
                AuthReason.CERT_MISMATCH,
                "token is bound to another client certificate (cnf x5t#S256 mismatch)",
                kid=token.kid,
            )

    def _verify_fully(self, token: str, now: float) -> VerifiedToken:
        try:
            verified = self._jws.verify(token)
        except JWSError as err:
            reason, message = _JWS_REJECTIONS[err.failure]
            if message is None:  # the algorithm set is configurable: name the allowed ones
                allowed = ", ".join(sorted(self._algorithms))
                message = f"token algorithm is not one of those allowed ({allowed})"
            # Until the signature verifies every header value is the caller's choice: none
            # of them (alg, kid...) goes into a message, ErrorInfo metadata or a log line.
            # err.kid is set only once the signature verified.
            metadata = {"kid": err.kid} if err.kid is not None else {}
            raise _reject(reason, message, **metadata) from None
        return self._check_claims(
            verified.claims, issuer=verified.issuer, kid=verified.kid, alg=verified.alg, now=now
        )

    def _check_claims(
        self, claims: dict[str, Any], *, issuer: str, kid: str, alg: str, now: float
    ) -> VerifiedToken:
        iss = _str_claim(claims, "iss")
        # The kid chose the key, so the key chose the issuer: a token naming any other
        # issuer was not issued by who it claims.
        if iss != issuer:
            raise _reject(AuthReason.WRONG_ISSUER, "token issuer is not the key's issuer", kid=kid)
        sub = _str_claim(claims, "sub")
        aud = claims.get("aud")
        if aud is None:
            raise _reject(AuthReason.CLAIM_MISSING, "token has no 'aud' claim", claim="aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise _reject(AuthReason.MALFORMED, "token claim 'aud' must be a string or strings")
        if self.audience not in audiences:
            raise _reject(AuthReason.WRONG_AUDIENCE, "token is meant for another audience", kid=kid)
        exp = _int_claim(claims, "exp")
        iat = _int_claim(claims, "iat")
        jti = _str_claim(claims, "jti")
        if now >= exp + self.leeway_s:
            raise _reject(AuthReason.EXPIRED, "token has expired", kid=kid)
        if iat > now + self.leeway_s:
            raise _reject(AuthReason.NOT_YET_VALID, "token is not yet valid (iat in the future)")
        if "nbf" in claims and _int_claim(claims, "nbf") > now + self.leeway_s:
            raise _reject(AuthReason.NOT_YET_VALID, "token is not yet valid (nbf in the future)")
        if exp <= iat:
            raise _reject(AuthReason.MALFORMED, "token expires before it was issued", kid=kid)
        if exp - iat > self.max_lifetime_s:
            raise _reject(
                AuthReason.LIFETIME_TOO_LONG,
                f"token lifetime {exp - iat} s exceeds the maximum of {self.max_lifetime_s} s",
                kid=kid,
            )
        cnf = claims.get("cnf")
        if cnf is None:
            raise _reject(AuthReason.CLAIM_MISSING, "token is not certificate-bound (no 'cnf')")
        thumb = cnf.get(_X5T) if isinstance(cnf, dict) else None
        if not isinstance(thumb, str) or not thumb:
            raise _reject(AuthReason.CLAIM_MISSING, "token 'cnf' has no 'x5t#S256' thumbprint")
        return VerifiedToken(
            issuer=iss,
            subject=sub,
            kid=kid,
            algorithm=alg,
            jti=jti,
            issued_at=iat,
            expires_at=exp,
            cert_thumbprint=thumb,
            claims=claims,
        )


# --- minting ---------------------------------------------------------------------------


def load_signing_key(
    path: Path,
) -> tuple[ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, str]:
    """Load a PEM private key and the JWS algorithm it signs with (EdDSA or ES256).

    Raises:
        ConfigError: the file is missing, not a PEM private key, or of another type/curve.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(str(path), "issuer key file not found") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(path), f"not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError(str(path), "issuer keys must be Ed25519 or ECDSA P-256")


def issue_token(
    issuer_key_file: Path,
    kid: str,
    *,
    issuer: str,
    audience: str,
    subject: str,
    cert_thumbprint: str,
    lifetime_s: int = MAX_LIFETIME_S,
    jti: str | None = None,
    now: float | None = None,
) -> str:
    """Mint a certificate-bound token signed with ``issuer_key_file`` under ``kid``.

    The algorithm follows the key (Ed25519 -> EdDSA, P-256 -> ES256). This function does not
    cap ``lifetime_s`` (tests mint over-long tokens on purpose); the verifier does.

    Raises:
        ConfigError: the key cannot be loaded (see :func:`load_signing_key`).
        ValueError: ``lifetime_s`` is not positive.
    """
    if lifetime_s <= 0:
        raise ValueError("lifetime_s must be positive")
    key, alg = load_signing_key(issuer_key_file)
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": iat,
        "exp": iat + lifetime_s,
        "jti": jti or str(uuid.uuid4()),
        "cnf": {_X5T: cert_thumbprint},
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def token_main(argv: list[str]) -> int:
    """``credit-gateway token issue --issuer-key F --kid K --iss I --aud A --sub AGENCY
    --cert CERT_PEM [--lifetime 3600] [--out FILE]``.

    Prints the token (or writes it to ``--out`` with mode 0600: it is a credential).
    Returns the exit status: 0 ok, 1 a file could not be used, 2 usage error.
    """
    parser = argparse.ArgumentParser(prog="credit-gateway token")
    sub = parser.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="mint a certificate-bound agency token")
    issue.add_argument(
        "--issuer-key", type=path_arg, required=True, help="issuer private key (PEM)"
    )
    issue.add_argument("--kid", required=True, help="the key's kid in the issuer JWKS")
    issue.add_argument("--iss", required=True, help="issuer identifier")
    issue.add_argument("--aud", required=True, help="the gateway's audience")
    issue.add_argument("--sub", required=True, help="agency id")
    issue.add_argument(
        "--cert", type=path_arg, required=True, help="the agency's client cert (PEM)"
    )
    issue.add_argument("--lifetime", type=int, default=MAX_LIFETIME_S, help="seconds")
    issue.add_argument("--out", type=path_arg, help="write here instead of stdout")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    if not 0 < args.lifetime <= MAX_LIFETIME_S:  # the verifier's own limit: never mint a dud
        print(
            f"credit-gateway token: --lifetime must be 1 to {MAX_LIFETIME_S} s"
            " (the gateway refuses longer-lived tokens)",
            file=sys.stderr,
        )
        return 2
    try:
        try:
            thumb = cert_thumbprint_pem(args.cert.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(str(args.cert), f"cannot read certificate ({exc})") from None
        token = issue_token(
            args.issuer_key,
            args.kid,
            issuer=args.iss,
            audience=args.aud,
            subject=args.sub,
            cert_thumbprint=thumb,
            lifetime_s=args.lifetime,
        )
    except ConfigError as exc:
        print(f"credit-gateway token: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        print(token)
    else:
        write_secret(args.out, token)
    return 0
