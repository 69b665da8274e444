"""Who is calling: the TLS client certificate plus a certificate-bound token.

:class:`Authenticator` turns a gRPC call into an :class:`Identity` or raises:

1. the peer certificate from the TLS session (``auth_context()["x509_pem_cert"]``; the server
   must be created with ``require_client_auth=True``, so the CA has already verified it);
2. its RFC 8705 thumbprint (cached by PEM bytes: a connection's certificate is re-presented on
   every call, and hashing/parsing it each time would be waste);
3. the bearer token from ``authorization: Bearer <jwt>`` verified by
   :class:`~gateway.auth.tokens.TokenVerifier` and bound to that thumbprint;
4. the registry: the certificate's ``O`` gives the role, its ``CN`` the registered principal,
   which must be the token's ``sub``, allowed on this service, and active.

With a live controls store (:class:`gateway.controls.ControlsStore`), read on every call: a
certificate revoked by serial or thumbprint is refused at step 1 (UNAUTHENTICATED
``CERT_REVOKED``), a suspended principal at step 4 (``<ROLE>_SUSPENDED``), whichever gateway
process wrote the change; the token verifications they cached are dropped when it is seen.

Steps 1-3 fail with :class:`~gateway.errors.AuthenticationError` (UNAUTHENTICATED): the caller
has not proven who it is. Step 4 fails with :class:`~gateway.errors.PermissionDeniedError`
(PERMISSION_DENIED) when it has, but is unregistered, suspended or of the wrong role; a
certificate/token disagreement about *who* is an AuthenticationError
(``TOKEN_SUBJECT_MISMATCH``). Logs name the principal id and the kid, never the token or the
certificate.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.auth.certs import cert_thumbprint
from gateway.auth.identity import Caller
from gateway.auth.reasons import AuthReason
from gateway.auth.registry import AgencyKind, Principal, Registry, Role
from gateway.auth.tokens import TokenVerifier, VerifiedToken
from gateway.controls import ControlsSnapshot, ControlsStore
from gateway.domain.identifiers import IdentifierError, validate_subject
from gateway.errors import AuthenticationError, InvalidArgumentError, PermissionDeniedError

__all__ = [
    "Authenticator",
    "CallerAuthenticator",
    "Identity",
    "PeerContext",
    "bearer_token",
]

log = logging.getLogger(__name__)


# Certificates are few (one per agency and staff member); the bound only protects memory
# against a flood of distinct (CA-signed) certificates.
_CERT_CACHE_SIZE = 1024
_ROLE_BY_ORGANIZATION = {role.organization: role for role in Role}


class PeerContext(Protocol):
    """The two methods of ``grpc.aio.ServicerContext`` (or ``grpc.ServicerContext``) used."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        """The TLS peer's properties; ``x509_pem_cert`` holds the client certificate (PEM)."""
        ...

    def invocation_metadata(self) -> Iterable[tuple[str, str | bytes]] | None:
        """The call's metadata as ``(key, value)`` pairs; keys are lower case."""
        ...


@dataclass(frozen=True, slots=True)
class Identity:
    """The authenticated caller. ``principal_id`` is the registry id (the agency id for
    agencies); ``kind`` is set for agencies only."""

    principal_id: str
    role: Role
    kind: AgencyKind | None
    name_zh: str
    name_en: str
    cert_thumbprint: str
    token_kid: str

    @property
    def agency_id(self) -> str:
        """Alias of ``principal_id`` that reads well in the query pipeline."""
        return self.principal_id

    @property
    def display_name(self) -> str:
        """``"<Chinese name> (<English name>)"`` from the registry, for logs and replies."""
        return f"{self.name_zh} ({self.name_en})"


@dataclass(frozen=True, slots=True)
class _PeerCert:
    thumbprint: str
    serial: str  # lower-case hex, no leading zeros (gateway.controls.normalize_serial)
    common_name: str | None
    organization: str | None


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the single ``authorization: Bearer <jwt>`` entry, or None if absent.

    Raises:
        AuthenticationError: TOKEN_MALFORMED if there are several authorization entries
            (ambiguous: which one would be checked?) or the scheme is not Bearer.
    """
    values = [v for k, v in metadata or () if k.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise AuthenticationError(
            "more than one authorization header", reason=AuthReason.MALFORMED.value
        )
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationError(
            "authorization header must use the Bearer scheme", reason=AuthReason.MALFORMED.value
        )
    return token.strip() or None


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    # Exactly one: a subject with two CNs is ambiguous, and ambiguity is a refusal.
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


class Authenticator:
    """Authenticates calls against a registry and a token verifier (see module docstring).

    ``roles`` limits who may call the service this authenticator guards: the agency-facing
    query service uses the default (agencies only), a policy-admin service would pass
    ``{Role.OFFICER}``. ``authenticate`` is synchronous and cheap (after the first call on a
    connection: a dict lookup for the certificate, a SHA-256 and a dict lookup for the token),
    so it runs on the event loop without a thread hop.
    """

    def __init__(
        self,
        registry: Registry,
        verifier: TokenVerifier,
        *,
        roles: Collection[Role] = (Role.AGENCY,),
        controls: ControlsStore | None = None,
    ) -> None:
        """``controls``: the live controls store (revoked certificates, suspended principals),
        read on every call; None: only the registry's ``active`` flag suspends."""
        self._registry = registry
        self._verifier = verifier
        self._roles = frozenset(roles)
        self._certs: OrderedDict[bytes, _PeerCert] = OrderedDict()
        self._lock = threading.Lock()
        self._controls = controls
        if controls is not None:
            controls.add_listener(self._controls_changed)

    def _controls_changed(self, old: ControlsSnapshot, new: ControlsSnapshot) -> None:
        # Verified tokens that can no longer be used are dropped at once; the checks in
        # authenticate() refuse them anyway, this frees what they held.
        thumbs = new.revoked_thumbprints - old.revoked_thumbprints
        subjects = new.suspended_agencies - old.suspended_agencies
        serials = new.revoked_serials - old.revoked_serials
        if serials:
            with self._lock:
                thumbs |= {p.thumbprint for p in self._certs.values() if p.serial in serials}
        if thumbs or subjects:
            self._verifier.forget(lambda t: t.cert_thumbprint in thumbs or t.subject in subjects)

    def authenticate(self, context: PeerContext) -> Identity:
        """Identify the caller of this RPC.

        Raises:
            AuthenticationError: no, unreadable or revoked client certificate (CERT_MISSING,
                CERT_INVALID, CERT_REVOKED), any token failure (TOKEN_*), or a token whose
                ``sub`` is not the principal the certificate names (TOKEN_SUBJECT_MISMATCH).
            PermissionDeniedError: the certificate's role may not use this service
                (ROLE_NOT_ALLOWED), or the principal is unregistered (``<ROLE>_UNREGISTERED``,
                e.g. AGENCY_UNREGISTERED) or suspended (``<ROLE>_SUSPENDED``).
            ControlsStoreError: the live controls store cannot be read.
        """
        peer = self._peer_cert(context)
        live = self._controls.snapshot() if self._controls is not None else None
        if live is not None and live.certificate_revoked(peer.serial, peer.thumbprint):
            log.info("authentication refused: certificate CN %s is revoked", peer.common_name)
            raise AuthenticationError(
                "the client certificate has been revoked", reason=AuthReason.CERT_REVOKED.value
            )
        if live is not None and live.suspended_agencies:
            # Before the token is verified: a suspended principal's tokens are not cached
            # again after the change dropped them. The certificate (verified by TLS) names
            # the principal; the token must name the same one, so nothing else can pass.
            self._refuse_suspended(peer, live)
        token = bearer_token(context.invocation_metadata())
        try:
            verified = self._verifier.verify(token, peer.thumbprint)
        except AuthenticationError as exc:
            log.info(
                "authentication refused: %s (certificate CN %s, kid %s)",
                exc.reason,
                peer.common_name,
                exc.metadata.get("kid", "-"),
            )
            raise
        principal = self._principal(peer, verified)
        if log.isEnabledFor(logging.DEBUG):  # every call passes here: skip the formatting
            log.debug(
                "authenticated %s %s (kid %s)",
                principal.role.organization,
                principal.id,
                verified.kid,
            )
        return Identity(
            principal_id=principal.id,
            role=principal.role,
            kind=principal.kind,
            name_zh=principal.name_zh,
            name_en=principal.name_en,
            cert_thumbprint=peer.thumbprint,
            token_kid=verified.kid,
        )

    def _refuse_suspended(self, peer: _PeerCert, live: ControlsSnapshot) -> None:
        role = _ROLE_BY_ORGANIZATION.get(peer.organization or "")
        if role is None or peer.common_name is None:
            return  # refused later, for what it is
        principal = self._registry.by_certificate(role, peer.common_name)
        if principal is not None and live.agency_suspended(principal.id):
            log.info("permission refused: %s %s is suspended", role.label, principal.id)
            raise PermissionDeniedError(
                f"{role.organization} {principal.id!r} is suspended",
                reason=f"{role.label}_SUSPENDED",
                metadata={"principal_id": principal.id},
            )

    def _principal(self, peer: _PeerCert, token: VerifiedToken) -> Principal:
        role = _ROLE_BY_ORGANIZATION.get(peer.organization or "")
        if role is None or role not in self._roles or peer.common_name is None:
            log.info(
                "permission refused: certificate O=%s may not call this service (kid %s)",
                peer.organization,
                token.kid,
            )
            raise PermissionDeniedError(
                f"a certificate of organisation {peer.organization!r} may not call this service",
                reason=AuthReason.ROLE_NOT_ALLOWED.value,
            )
        principal = self._registry.by_certificate(role, peer.common_name)
        if principal is None:
            if token.subject != peer.common_name:
                raise self._subject_mismatch(peer, token)
            log.info("permission refused: %s %s is not registered", role.label, token.subject)
            raise PermissionDeniedError(
                f"{role.organization} {token.subject!r} is not registered",
                reason=f"{role.label}_UNREGISTERED",
                metadata={"principal_id": token.subject},
            )
        if token.subject != principal.id:
            raise self._subject_mismatch(peer, token)
        if not principal.active:
            log.info("permission refused: %s %s is suspended", role.label, principal.id)
            raise PermissionDeniedError(
                f"{role.organization} {principal.id!r} is suspended",
                reason=f"{role.label}_SUSPENDED",
                metadata={"principal_id": principal.id},
            )
        return principal

    @staticmethod
    def _subject_mismatch(peer: _PeerCert, token: VerifiedToken) -> AuthenticationError:
        log.info(
            "authentication refused: token sub %s does not match certificate CN %s (kid %s)",
            token.subject,
            peer.common_name,
            token.kid,
        )
        return AuthenticationError(
            "token subject does not name the principal of the client certificate",
            reason=AuthReason.SUBJECT_MISMATCH.value,
            metadata={"kid": token.kid},
        )

    def _peer_cert(self, context: PeerContext) -> _PeerCert:
        pems = list(context.auth_context().get("x509_pem_cert", ()))
        if not pems:
            # Only reachable if the server was started without require_client_auth.
            raise AuthenticationError(
                "no client certificate on the connection", reason=AuthReason.CERT_MISSING.value
            )
        pem = pems[0]
        with self._lock:
            cached = self._certs.get(pem)
            if cached is not None:
                self._certs.move_to_end(pem)
                return cached
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise AuthenticationError(
                "client certificate cannot be parsed", reason=AuthReason.CERT_INVALID.value
            ) from None
        peer = _PeerCert(
            thumbprint=cert_thumbprint(cert.public_bytes(serialization.Encoding.DER)),
            serial=format(cert.serial_number, "x"),
            common_name=_attribute(cert.subject, NameOID.COMMON_NAME),
            organization=_attribute(cert.subject, NameOID.ORGANIZATION_NAME),
        )
        with self._lock:
            self._certs[pem] = peer
            if len(self._certs) > _CERT_CACHE_SIZE:
                self._certs.popitem(last=False)
        return peer


class CallerAuthenticator:
    """Adapts :class:`Authenticator` to the query service's seam
    (:class:`gateway.auth.identity.CallerSource`, which returns a
    :class:`~gateway.auth.identity.Caller`).

    **Self-service subjects.** For an agency of kind ``subject_self_service`` (a kiosk or
    portal where a subject asks about itself, Art. 17), the token's ``subject`` claim names the
    subject the caller speaks for: ``{"type": "person" | "enterprise", "id": "<identifier>"}``.
    The trusted agency-token issuer puts it there after the kiosk has identified the person
    (identity card, face match); the token is certificate-bound and short-lived like any other,
    so it is one subject's session. It fills :attr:`Caller.subject_id`, from which the service
    computes ``QueryFacts.is_self``. For every other kind of agency the claim is ignored: a
    bank cannot make itself "the subject". A self-service token without the claim leaves
    ``subject_id`` empty (a self-query is then refused by the policy, not by authentication).

    Raises what :meth:`Authenticator.authenticate` raises, and AuthenticationError
    (``TOKEN_MALFORMED``) for a self-service token whose ``subject`` claim is not an object
    with a known type and a valid identifier of that type.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def authenticate(self, context: PeerContext) -> Caller:
        """Authenticate the call and describe the caller as the query pipeline's ``Caller``.

        ``Caller.kind`` is the agency kind, or the role's table name for staff; for a
        self-service agency ``subject_type``/``subject_id`` come from the token's ``subject``
        claim. Raises as the class says.
        """
        ident = self.authenticator.authenticate(context)
        subject_type = subject_id = ""
        if ident.kind is AgencyKind.SUBJECT_SELF_SERVICE:
            subject_type, subject_id = self._self_service_subject(context, ident)
        return Caller(
            agency_id=ident.principal_id,
            kind=ident.kind.value if ident.kind is not None else ident.role.organization,
            cert_thumbprint=ident.cert_thumbprint,
            subject_id=subject_id,
            subject_type=subject_type,
        )

    def _self_service_subject(self, context: PeerContext, ident: Identity) -> tuple[str, str]:
        # Identity carries no claims; the token was verified a moment ago, so this is a cache
        # hit (a SHA-256 and a dict lookup), and only self-service callers pay it.
        token = bearer_token(context.invocation_metadata())
        verified = self.authenticator._verifier.verify(token, ident.cert_thumbprint)
        claim = verified.claims.get("subject")
        if claim is None:
            return "", ""
        subject_type = claim.get("type") if isinstance(claim, dict) else None
        subject_id = claim.get("id") if isinstance(claim, dict) else None
        try:
            if not isinstance(subject_type, str) or not isinstance(subject_id, str):
                raise InvalidArgumentError("subject", "not an object with type and id")
            return subject_type, validate_subject(subject_type, subject_id)
        except (InvalidArgumentError, IdentifierError):
            log.info("authentication refused: malformed subject claim (kid %s)", verified.kid)
            raise AuthenticationError(
                "token claim 'subject' must be {type: person|enterprise, id: <valid identifier>}",
                reason=AuthReason.MALFORMED.value,
                metadata={"kid": verified.kid},
            ) from None
