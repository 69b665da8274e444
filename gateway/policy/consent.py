"""Consent tokens (Art. 18, Art. 40(3)): issuing, verifying and binding them to a query.

A consent is a compact JWS (EdDSA or ES256) signed by a *trusted consent issuer* (a JWKS,
loaded exactly like the agency-token issuers: :class:`~gateway.auth.tokens.TrustedIssuer`).
The subject obtains it from the issuer (an e-government portal, a notary, the bank branch's
signing pad run by the issuer...) and hands it to the agency, which sends it in
``QueryRequest.consent_token``.

Header: ``alg`` (EdDSA | ES256, fixed by the key), ``kid``, ``typ: "consent+jwt"`` (explicit
typing, RFC 8725 3.11, so that no other token of the same issuer is taken for a consent).

Claims::

    iss        the consent issuer (must own the kid)
    cid        the consent id: recorded in the audit log, named in the revocation list
    sub_type   "person" | "enterprise"
    sub        the subject's identifier (resident identity number or USCC), raw
    grantee    the agency id the consent is given to
    purpose    the one purpose it is given for (policies/purposes.toml)
    scope      ["dept/dataset", "dept/*", "tier:<tier>", ...]: what it covers
    iat, exp   issued at / expires at (seconds); optional nbf
    aud        optional; required when the verifier is configured with an audience
    max_uses   optional positive integer: the consent allows that many queries, then is spent
               (1: a one-time consent); counted in the live controls store

**Why the raw identifier.** The token is written for the subject and the agency, both of whom
know the identifier already; the gateway must compare it with the queried subject, and a keyed
hash would need the gateway's key at the issuer. The gateway never logs the claim, never puts
it in a cache key or a ``Withheld.detail``, and compares it in constant time. (The audit log
stores its own keyed pseudonym of the queried subject, not this claim.)

**Checks** (:class:`ConsentVerifier`): signature with a trusted key whose algorithm is the
header's; the claims above well-formed; lifetime at most ``max_lifetime_s`` (default 366 days);
not yet expired (``now < exp + leeway``), not before ``iat``/``nbf`` (with leeway); the ``cid``
not revoked (``policies/consent_revocations.toml`` and, when attached, the live controls store
:class:`gateway.controls.ControlsStore`; checked on every use so that a revocation takes effect
at once, even for a cached consent). :meth:`ConsentVerifier.check` then binds it to
the query: the grantee is the calling agency, the purpose is the query's purpose, the subject
is the queried subject. Per field, :meth:`Consent.covers` says whether the scope covers it.

A failed check is not an error of the query: the decider withholds the consent-bound fields
with ``CONSENT_REQUIRED`` and a detail naming the :class:`ConsentProblem`; everything else
proceeds.

Verified consents are cached under the SHA-256 of the token string until they expire
(bounded, least recently used first out); failures are never cached.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.auth.jws import CompactJWSVerifier, JWSError, JWSFailure
from gateway.auth.tokens import (
    ALLOWED_ALGORITHMS,
    TrustedIssuer,
    index_issuer_keys,
    load_signing_key,
)
from gateway.domain.catalog import Tier
from gateway.domain.files import load_toml, policies_path
from gateway.errors import ConfigError

__all__ = [
    "CONSENT_ID",
    "CONSENT_TYP",
    "DEFAULT_REVOCATIONS_PATH",
    "MAX_CONSENT_LIFETIME_S",
    "MAX_CONSENT_USES",
    "Consent",
    "ConsentCheck",
    "ConsentError",
    "ConsentProblem",
    "ConsentVerifier",
    "issue_consent",
    "load_revocations",
    "parse_scope",
]

#: The JWS ``typ`` of a consent token.
CONSENT_TYP = "consent+jwt"
#: The largest ``max_uses`` a consent may carry.
MAX_CONSENT_USES = 1_000_000
#: A consent lasts at most a year (and a day, for leap years): consent is renewed, not eternal.
MAX_CONSENT_LIFETIME_S = 366 * 86400
DEFAULT_LEEWAY_S = 60
#: ``policies/consent_revocations.toml`` next to the ``gateway`` package.
DEFAULT_REVOCATIONS_PATH = policies_path("consent_revocations.toml")

_SUBJECT_TYPES = frozenset({"person", "enterprise"})
# Far above a consent with a long scope (~1 KiB); refused before any decoding work.
_MAX_TOKEN_BYTES = 16384
_MAX_SCOPE = 64
_NAME = r"[a-z0-9_]+"
_SCOPE_DATASET = re.compile(rf"^({_NAME})/({_NAME}|\*)$")
#: A consent id (``cid``): 1 to 128 of ``A-Z a-z 0-9 . _ : -``.
CONSENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONSENT_TIERS = frozenset(t.value for t in Tier if t is not Tier.STATE_SECRET)


class ConsentProblem(enum.StrEnum):
    """Why a consent does not allow a field; the value is the words used in details."""

    MISSING = "missing"
    INVALID = "invalid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    OTHER_AGENCY = "other agency"
    OTHER_PURPOSE = "other purpose"
    OTHER_SUBJECT = "other subject"
    SPENT = "revoked/spent"


class ConsentError(Exception):
    """A consent token that cannot be used; ``problem`` says why, the message in words.

    Messages are fixed texts: never the token, a claim value or a header value.
    """

    def __init__(self, problem: ConsentProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


@dataclass(frozen=True, slots=True)
class Consent:
    """A verified consent (signature and claims checked; not yet bound to a query)."""

    cid: str
    issuer: str
    subject_type: str
    subject_id: str = field(repr=False)
    grantee: str
    purpose: str
    #: ``(department, dataset)`` pairs; dataset ``"*"`` means every dataset of the department.
    datasets: frozenset[tuple[str, str]]
    tiers: frozenset[str]
    issued_at: int
    expires_at: int
    #: How many queries the consent allows (None: no limit but its lifetime).
    max_uses: int | None = None

    def covers(self, department: str, dataset: str, tier: Tier) -> bool:
        """Whether the scope covers a field of ``department/dataset`` in ``tier``."""
        return (
            tier.value in self.tiers
            or (department, dataset) in self.datasets
            or (department, "*") in self.datasets
        )

    #: What a decision depends on (for cache keys): the scope, nothing personal. Equal scopes
    #: share one object (the verifier interns them), so cache lookups compare by identity.
    scope_key: tuple[frozenset[tuple[str, str]], frozenset[str]] = field(
        default=(frozenset(), frozenset()), repr=False, compare=False
    )


@dataclass(frozen=True, slots=True)
class ConsentCheck:
    """The outcome of binding a consent token to one query.

    ``consent`` is set when the token verified and is bound to this agency, purpose and
    subject (``problem`` is then None); otherwise ``problem`` and ``message`` say why not.
    """

    consent: Consent | None
    problem: ConsentProblem | None
    message: str = ""

    @property
    def detail(self) -> str:
        """Text for ``Withheld.detail``, e.g. ``consent expired: the consent has expired``."""
        if self.problem is None:
            return ""
        return f"consent {self.problem.value}: {self.message}"


MISSING = ConsentCheck(None, ConsentProblem.MISSING, "no consent token was sent")


def parse_scope(entries: Iterable[str]) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    """Split scope entries into dataset pairs and tiers.

    Raises:
        ValueError: an entry is neither ``dept/dataset``, ``dept/*`` nor ``tier:<tier>`` (the
            state-secret tier cannot be consented to: it never leaves its department).
    """
    datasets: set[tuple[str, str]] = set()
    tiers: set[str] = set()
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError("scope entries must be strings")
        if entry.startswith("tier:"):
            tier = entry.removeprefix("tier:")
            if tier not in _CONSENT_TIERS:
                raise ValueError(f"unknown or unconsentable tier in scope entry {entry[:40]!r}")
            tiers.add(tier)
            continue
        m = _SCOPE_DATASET.match(entry)
        if m is None:
            raise ValueError(f"scope entry {entry[:40]!r} is not dept/dataset, dept/* or tier:T")
        datasets.add((m.group(1), m.group(2)))
    return frozenset(datasets), frozenset(tiers)


#: The words for each compact-JWS failure (the problem is always INVALID). Fixed texts:
#: never the token, a header value or a claim value.
_JWS_MESSAGES: dict[JWSFailure, str] = {
    JWSFailure.NOT_COMPACT: "the consent token is not a compact JWS",
    JWSFailure.HEADER_NOT_JSON: "the consent token header is not base64url JSON",
    JWSFailure.HEADER_NOT_OBJECT: "the consent token header is not a JSON object",
    JWSFailure.CRIT: "the consent token has a 'crit' extension that is not implemented",
    JWSFailure.WRONG_TYP: f"the token is not typed {CONSENT_TYP!r}",
    JWSFailure.ALG_NOT_ALLOWED: "the consent token's algorithm is not allowed",
    JWSFailure.NO_KID: "the consent token is signed with an unknown key",
    JWSFailure.UNKNOWN_KID: "the consent token is signed with an unknown key",
    JWSFailure.ALG_NOT_THE_KEYS: "the consent token's algorithm does not match its key",
    JWSFailure.BAD_SIGNATURE: "the consent signature is invalid",
    JWSFailure.ALG_REFUSED: "the consent token could not be decoded",
    JWSFailure.UNDECODABLE: "the consent token could not be decoded",
    JWSFailure.PAYLOAD_NOT_JSON: "the consent payload is not JSON",
    JWSFailure.PAYLOAD_NOT_OBJECT: "the consent payload is not a JSON object",
}


def _invalid(message: str) -> ConsentError:
    return ConsentError(ConsentProblem.INVALID, message)


def _claim_str(claims: Mapping[str, Any], name: str, pattern: re.Pattern[str] | None) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid(f"claim '{name}' is missing or not a non-empty string")
    if pattern is not None and pattern.match(value) is None:
        raise _invalid(f"claim '{name}' is malformed")
    return value


def _claim_int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    # bool is an int in Python; JSON true is not a time.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"claim '{name}' is missing or not an integer")
    return value


class _RevokedSource(Protocol):
    """What the verifier needs of the live controls store."""

    def snapshot(self) -> _RevokedSnapshot:
        """The current sets."""


class _RevokedSnapshot(Protocol):
    @property
    def revoked_consents(self) -> frozenset[str]:
        """Revoked consent ids."""


@dataclass(slots=True)
class _Cached:
    consent: Consent
    deadline: float  # exp + leeway
    #: The outcome of a successful binding, made once: checks run on every query.
    bound: ConsentCheck


class ConsentVerifier:
    """Verifies consent tokens against trusted consent issuers (see the module docstring).

    Thread-safe; a cached consent costs one SHA-256 of the token and a dict lookup.
    """

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        audience: str | None = None,
        revoked: Iterable[str] = (),
        leeway_s: int = DEFAULT_LEEWAY_S,
        max_lifetime_s: int = MAX_CONSENT_LIFETIME_S,
        cache_size: int = 65536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Raises ConfigError if two issuers share an ``iss`` or a ``kid``. No issuer at all
        is allowed: every consent is then invalid (a gateway without consent issuers simply
        never discloses consent-bound fields)."""
        self._keys = index_issuer_keys(issuers, "consent issuer")
        self.audience = audience
        self.leeway_s = leeway_s
        self.max_lifetime_s = max_lifetime_s
        self._revoked: frozenset[str] = frozenset(revoked)
        self._live: _RevokedSource | None = None
        self._cache_size = cache_size
        self._clock = clock
        self._jws = CompactJWSVerifier(self._keys, algorithms=ALLOWED_ALGORITHMS, typ=CONSENT_TYP)
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._scopes: dict[
            tuple[frozenset[tuple[str, str]], frozenset[str]],
            tuple[frozenset[tuple[str, str]], frozenset[str]],
        ] = {}

    @property
    def revoked(self) -> frozenset[str]:
        """The consent ids (``cid``) revoked now."""
        return self._revoked

    def set_revoked(self, cids: Iterable[str]) -> None:
        """Replace the revocation list; takes effect on the next check, cached or not."""
        self._revoked = frozenset(cids)

    def attach_controls(self, live: _RevokedSource | None) -> None:
        """Also refuse the consent ids that ``live.snapshot().revoked_consents`` names (the
        live controls store, read on every check; None detaches)."""
        self._live = live

    def forget(self, cids: Iterable[str]) -> int:
        """Drop the cached verifications of consents ``cids`` (they were revoked: the next
        use is refused anyway, this frees the entries at once). Returns how many."""
        gone = frozenset(cids)
        with self._lock:
            stale = [k for k, v in self._cache.items() if v.consent.cid in gone]
            for k in stale:
                del self._cache[k]
        return len(stale)

    @property
    def cached_consents(self) -> int:
        """How many verified consents are cached (for metrics and tests)."""
        return len(self._cache)

    def verify(self, token: str, *, check_revoked: bool = True) -> Consent:
        """Verify signature, claims, lifetime, expiry and, with ``check_revoked``, revocation
        (not the binding). Without it a revoked consent still verifies: its subject may ask
        to revoke it again, and is told it already is.

        Raises:
            ConsentError: ``problem`` INVALID, EXPIRED or REVOKED.
        """
        return self._verified(token, check_revoked=check_revoked).consent

    def _verified(self, token: str, *, check_revoked: bool = True) -> _Cached:
        if len(token) > _MAX_TOKEN_BYTES:
            raise _invalid("the consent token is too long")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None:
                if hit.deadline <= now:
                    del self._cache[digest]
                    hit = None
                else:
                    self._cache.move_to_end(digest)
        if hit is None:
            consent = self._verify_fully(token, now)
            hit = _Cached(consent, consent.expires_at + self.leeway_s, ConsentCheck(consent, None))
            with self._lock:
                self._cache[digest] = hit
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        cid = hit.consent.cid
        live = self._live
        if not check_revoked:
            return hit
        if cid in self._revoked or (live is not None and cid in live.snapshot().revoked_consents):
            raise ConsentError(ConsentProblem.REVOKED, "the consent has been revoked")
        return hit

    def check(
        self,
        token: str,
        *,
        agency: str,
        purpose: str,
        subject_type: str,
        subject_id: str,
    ) -> ConsentCheck:
        """Verify ``token`` and bind it to a query. Never raises for a bad token: the
        outcome says what is wrong (an empty token is MISSING)."""
        if not token:
            return MISSING
        try:
            entry = self._verified(token)
        except ConsentError as exc:
            return ConsentCheck(None, exc.problem, exc.message)
        consent = entry.consent
        if consent.grantee != agency:
            return ConsentCheck(
                None, ConsentProblem.OTHER_AGENCY, "the consent was given to another agency"
            )
        if consent.purpose != purpose:
            return ConsentCheck(
                None, ConsentProblem.OTHER_PURPOSE, "the consent was given for another purpose"
            )
        same_subject = consent.subject_type == subject_type and hmac.compare_digest(
            consent.subject_id.encode(), subject_id.encode()
        )
        if not same_subject:
            return ConsentCheck(
                None, ConsentProblem.OTHER_SUBJECT, "the consent was given by another subject"
            )
        return entry.bound

    def _intern(
        self, scope: tuple[frozenset[tuple[str, str]], frozenset[str]]
    ) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
        with self._lock:
            if len(self._scopes) > self._cache_size:
                self._scopes.clear()  # a bound, not a policy: equal scopes are few
            return self._scopes.setdefault(scope, scope)

    def _verify_fully(self, token: str, now: float) -> Consent:
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):  # a consent's signature is never empty
            raise _invalid("the consent token is not a compact JWS")
        try:
            verified = self._jws.verify(token)
        except JWSError as err:
            raise _invalid(_JWS_MESSAGES[err.failure]) from None
        return self._claims(verified.claims, verified.issuer, now)

    def _claims(self, claims: Mapping[str, Any], issuer: str, now: float) -> Consent:
        if claims.get("iss") != issuer:
            raise _invalid("the consent names another issuer than its key's")
        if self.audience is not None:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud
            if not isinstance(audiences, list) or self.audience not in audiences:
                raise _invalid("the consent is meant for another audience")
        cid = _claim_str(claims, "cid", CONSENT_ID)
        subject_type = _claim_str(claims, "sub_type", None)
        if subject_type not in _SUBJECT_TYPES:
            raise _invalid("claim 'sub_type' must be person or enterprise")
        subject_id = _claim_str(claims, "sub", None)
        grantee = _claim_str(claims, "grantee", _ID)
        purpose = _claim_str(claims, "purpose", _ID)
        scope = claims.get("scope")
        if not isinstance(scope, list) or not scope or len(scope) > _MAX_SCOPE:
            raise _invalid(f"claim 'scope' must be a list of 1 to {_MAX_SCOPE} entries")
        try:
            datasets, tiers = parse_scope(scope)
        except ValueError:
            raise _invalid("claim 'scope' has a malformed entry") from None
        iat = _claim_int(claims, "iat")
        exp = _claim_int(claims, "exp")
        if exp <= iat:
            raise _invalid("the consent expires before it was issued")
        if exp - iat > self.max_lifetime_s:
            raise _invalid("the consent's lifetime exceeds the maximum")
        if iat > now + self.leeway_s:
            raise _invalid("the consent is not yet valid (iat in the future)")
        if "nbf" in claims and _claim_int(claims, "nbf") > now + self.leeway_s:
            raise _invalid("the consent is not yet valid (nbf in the future)")
        if now >= exp + self.leeway_s:
            raise ConsentError(ConsentProblem.EXPIRED, "the consent has expired")
        max_uses = None
        if "max_uses" in claims:
            max_uses = _claim_int(claims, "max_uses")
            if not 0 < max_uses <= MAX_CONSENT_USES:
                raise _invalid(f"claim 'max_uses' must be 1 to {MAX_CONSENT_USES}")
        return Consent(
            cid=cid,
            issuer=issuer,
            subject_type=subject_type,
            subject_id=subject_id,
            grantee=grantee,
            purpose=purpose,
            datasets=datasets,
            tiers=tiers,
            scope_key=self._intern((datasets, tiers)),
            issued_at=iat,
            expires_at=exp,
            max_uses=max_uses,
        )


# --- revocation list --------------------------------------------------------------------


def load_revocations(path: Path | None = None) -> frozenset[str]:
    """Read the consent ids of a revocation file (default :data:`DEFAULT_REVOCATIONS_PATH`)::

        [[revoked]]
        cid = "3f2c..."            # required
        revoked_on = 2026-03-01    # optional, informative
        note = "withdrawn by the subject at the service desk"   # optional

    Raises:
        ConfigError: the file cannot be read, is not TOML, or an entry is malformed (the key
            names it, e.g. ``revoked[2].cid``).
    """
    path = path or DEFAULT_REVOCATIONS_PATH
    doc = load_toml(path)
    unknown = sorted(set(doc) - {"revoked"})
    if unknown:
        raise ConfigError(unknown[0], "unknown key (only [[revoked]] entries)")
    entries = doc.get("revoked", [])
    if not isinstance(entries, list):
        raise ConfigError("revoked", "must be an array of tables ([[revoked]])")
    cids: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"revoked[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a table")
        extra = sorted(set(entry) - {"cid", "revoked_on", "note"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}", "unknown key")
        cid = entry.get("cid")
        if not isinstance(cid, str) or CONSENT_ID.match(cid) is None:
            raise ConfigError(f"{where}.cid", "must be a consent id (1-128 of A-Z a-z 0-9 . _ : -)")
        cids.add(cid)
    return frozenset(cids)


# --- issuing -------------------------------------------------------------------------------


def issue_consent(
    signing_key: Path | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
    kid: str,
    *,
    issuer: str,
    subject_type: str,
    subject_id: str,
    grantee: str,
    purpose: str,
    scope: Sequence[str],
    lifetime_s: int = 90 * 86400,
    audience: str | None = None,
    cid: str | None = None,
    now: float | None = None,
    max_uses: int | None = None,
) -> str:
    """Mint a consent token (the algorithm follows the key: Ed25519 -> EdDSA, P-256 -> ES256).

    Does not cap ``lifetime_s`` (tests mint over-long consents on purpose); the verifier does.

    Raises:
        ConfigError: the key file cannot be loaded.
        ValueError: an unknown subject type, an empty or malformed scope, a non-positive
            lifetime, or ``max_uses`` outside 1 to :data:`MAX_CONSENT_USES` (None: no limit;
            1: a one-time consent).
    """
    if max_uses is not None and not 0 < max_uses <= MAX_CONSENT_USES:
        raise ValueError(f"max_uses must be 1 to {MAX_CONSENT_USES}")
    if subject_type not in _SUBJECT_TYPES:
        raise ValueError("subject_type must be person or enterprise")
    if lifetime_s <= 0:
        raise ValueError("lifetime must be positive")
    if not scope:
        raise ValueError("a consent needs a scope")
    parse_scope(scope)
    if isinstance(signing_key, Path):
        key, alg = load_signing_key(signing_key)
    else:
        key = signing_key
        alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "cid": cid or str(uuid.uuid4()),
        "sub_type": subject_type,
        "sub": subject_id,
        "grantee": grantee,
        "purpose": purpose,
        "scope": list(scope),
        "iat": iat,
        "exp": iat + lifetime_s,
    }
    if audience is not None:
        claims["aud"] = audience
    if max_uses is not None:
        claims["max_uses"] = max_uses
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": CONSENT_TYP})
