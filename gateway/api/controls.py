"""``credit.v1.SecurityControls``: suspend, reinstate, revoke while the gateway serves.

Security officers only (``authorize(context) -> officer_id``, wired to :mod:`gateway.auth`
with ``Role.OFFICER`` as for the policy admin), except ``RevokeMyConsent``: a subject's own
self-service agency (``caller(context) -> Caller`` of kind ``subject_self_service`` whose token
names the subject) revokes a consent whose subject is its subject, by sending the consent token.

Every action, refused ones too, is a ``controls`` audit record
(:class:`gateway.audit.schema.ControlsRecord`); the caller's words go through the free-text
screen. **Ordering.** What tightens (suspend, revoke) is done first and recorded next: an urgent
suspension is not held back because the audit log is down (the caller then gets UNAVAILABLE
``AUDIT_UNAVAILABLE`` although the suspension stands, and the log says so once it heals). What
loosens (a reinstatement) is refused unless the log is writable, before anything changes.

The store (:class:`gateway.controls.ControlsStore`) is shared by every gateway process naming
the same file; a change is seen by each on its next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
from collections.abc import Callable
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.api.edge import authenticate, identified
from gateway.audit.auditor import QueryAuditor
from gateway.audit.schema import ControlsRecord
from gateway.auth.identity import Caller
from gateway.auth.registry import AgencyKind
from gateway.controls import (
    ConsentState,
    ControlsStore,
    normalize_serial,
    normalize_thumbprint,
)
from gateway.errors import (
    AuditUnavailableError,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from gateway.pipeline.freetext import holds_identifier
from gateway.policy.consent import CONSENT_ID, ConsentError, ConsentProblem, ConsentVerifier
from protos.credit.v1 import controls_pb2, controls_pb2_grpc

__all__ = ["ControlsService", "verify_crl"]

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
_MAX_REASON = 1000
_MAX_CRL_BYTES = 4 * 1024 * 1024
_AGENCY_ID = CONSENT_ID  # the registry's ids are a subset of this alphabet
_STATES = {
    ConsentState.UNSEEN: controls_pb2.CONSENT_STATE_UNSEEN,
    ConsentState.LIVE: controls_pb2.CONSENT_STATE_LIVE,
    ConsentState.EXPIRED: controls_pb2.CONSENT_STATE_EXPIRED,
    ConsentState.REVOKED: controls_pb2.CONSENT_STATE_REVOKED,
    ConsentState.SPENT: controls_pb2.CONSENT_STATE_SPENT,
}


def verify_crl(data: bytes, issuer: x509.Certificate) -> list[str]:
    """The serials (normalized hex) a CRL lists, once its signature verifies with ``issuer``'s
    key and its issuer name is ``issuer``'s subject. ``data`` is DER or PEM.

    Raises:
        InvalidArgumentError: not a CRL, another issuer, or a bad signature.
    """
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_crl(data)
        )
    except ValueError:
        raise InvalidArgumentError("crl", "not a DER or PEM certificate revocation list") from None
    key = issuer.public_key()
    if crl.issuer != issuer.subject or not isinstance(
        key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)
    ):
        raise InvalidArgumentError("crl", "the CRL is not issued by the federation CA")
    if not crl.is_signature_valid(key):
        raise InvalidArgumentError("crl", "the CRL signature does not verify")
    return [format(entry.serial_number, "x") for entry in crl]


def _ts(seconds: float) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.datetime.fromtimestamp(seconds, dt.UTC))
    return out


def _reason(text: str, *, required: bool) -> str:
    if required and not text.strip():
        raise InvalidArgumentError("reason", "required: say why")
    if len(text) > _MAX_REASON:
        raise InvalidArgumentError("reason", f"at most {_MAX_REASON} characters")
    return text


def _agency(text: str) -> str:
    if not text or _AGENCY_ID.match(text) is None or holds_identifier(text):
        raise InvalidArgumentError("agency_id", "must be an agency id")
    return text


def _cid(text: str) -> str:
    if not text or CONSENT_ID.match(text) is None or holds_identifier(text):
        raise InvalidArgumentError(
            "consent_id", "must be a consent id (1-128 of A-Z a-z 0-9 . _ : -)"
        )
    return text


class ControlsService(controls_pb2_grpc.SecurityControlsServicer):
    """The ``credit.v1.SecurityControls`` servicer (see the module docstring).

    Statuses every RPC may answer: UNAUTHENTICATED or PERMISSION_DENIED for a caller who may
    not call it (recorded); INVALID_ARGUMENT for a malformed id or reason; UNAVAILABLE when
    the controls store (CONTROLS_UNAVAILABLE) or the audit log (AUDIT_UNAVAILABLE) fails.
    """

    def __init__(
        self,
        store: ControlsStore,
        *,
        authorize: Callable[[Context], str],
        caller: Callable[[Context], Caller] | None = None,
        consents: Callable[[], ConsentVerifier | None] = lambda: None,
        audit: QueryAuditor | None = None,
        crl_issuer: x509.Certificate | None = None,
        agency_exists: Callable[[str], bool] = lambda _agency: True,
    ) -> None:
        """``authorize``: the officer id of a call, or raises; ``caller``: the agency caller
        of a call (for RevokeMyConsent; None: that RPC is refused); ``consents``: the consent
        verifier in use now (for RevokeMyConsent); ``crl_issuer``: the federation CA whose
        CRLs are accepted (None: CRLs are refused)."""
        self.store = store
        self._authorize = authorize
        self._caller = caller
        self._consents = consents
        self._audit = audit
        self._crl_issuer = crl_issuer
        self._agency_exists = agency_exists

    # --- recording ------------------------------------------------------------------------

    async def _record(self, action: str, actor: str, **fields: Any) -> None:
        if self._audit is None:
            return
        free = self._audit.free_text
        if fields.get("reason") is not None:
            fields["reason"] = free(fields["reason"])
        record = ControlsRecord(action=action, actor=free(actor), **fields).to_json()
        kind = record.pop("kind")
        await self._audit.append_event(kind, record)

    async def _refused(self, action: str, actor: str, err: GatewayError, **fields: Any) -> None:
        with contextlib.suppress(GatewayError):
            await self._record(action, actor, outcome="refused", error=err.reason, **fields)
            err.audited = self._audit is not None

    async def _officer(self, context: Context, action: str) -> str:
        try:
            officer = authenticate(self._authorize, context)
        except GatewayError as err:
            await self._refused(action, "", err)
            raise
        identified(officer)
        return officer

    def _require_log(self) -> None:
        if self._audit is not None and not self._audit.available:
            raise AuditUnavailableError("the audit log cannot be written; nothing was changed")

    # --- RPCs -----------------------------------------------------------------------------

    async def SuspendAgency(
        self, request: controls_pb2.SuspendAgencyRequest, context: Context
    ) -> controls_pb2.SuspendAgencyResponse:
        """RPC ``SuspendAgency``: one officer suffices. NOT_FOUND for an unregistered agency."""
        officer = await self._officer(context, "suspend")
        fields: dict[str, Any] = {"reason": request.reason}
        try:
            agency = _agency(request.agency_id)
            fields["agency"] = agency
            _reason(request.reason, required=True)
            if not self._agency_exists(agency):
                raise NotFoundError("no such agency is registered")
            at, newly = await asyncio.to_thread(
                self.store.suspend_agency, agency, officer=officer, reason=request.reason
            )
        except GatewayError as err:
            await self._refused("suspend", officer, err, **fields)
            raise
        log.warning("agency %s suspended by officer %s", agency, officer)
        await self._record("suspend", officer, outcome="ok", newly=newly, **fields)
        return controls_pb2.SuspendAgencyResponse(suspended_at=_ts(at), newly=newly)

    async def ReinstateAgency(
        self, request: controls_pb2.ReinstateAgencyRequest, context: Context
    ) -> controls_pb2.ReinstateAgencyResponse:
        """RPC ``ReinstateAgency``: ask (PENDING), then a second officer approves (REINSTATED).

        PERMISSION_DENIED ``FOUR_EYES`` for the asking officer approving; NOT_FOUND for an
        agency not suspended; ABORTED ``REINSTATEMENT_PENDING`` never (a second call by
        another officer approves).
        """
        officer = await self._officer(context, "reinstate")
        fields: dict[str, Any] = {"reason": request.reason or None}
        action = "reinstate"
        try:
            agency = _agency(request.agency_id)
            fields["agency"] = agency
            _reason(request.reason, required=False)
            self._require_log()
            pending = await asyncio.to_thread(self.store.pending_reinstatement, agency)
            if pending is None:
                action = "reinstate_request"
                _reason(request.reason, required=True)
                await asyncio.to_thread(
                    self.store.request_reinstatement,
                    agency,
                    officer=officer,
                    reason=request.reason,
                )
                requested_by = officer
                state = controls_pb2.REINSTATEMENT_STATE_PENDING
            else:
                action = "reinstate_approve"
                fields["requested_by"] = pending[0]
                requested_by = await asyncio.to_thread(
                    self.store.approve_reinstatement, agency, officer=officer
                )
                state = controls_pb2.REINSTATEMENT_STATE_REINSTATED
        except GatewayError as err:
            await self._refused(action, officer, err, **fields)
            raise
        fields["requested_by"] = requested_by
        await self._record(action, officer, outcome="ok", **fields)
        return controls_pb2.ReinstateAgencyResponse(state=state, requested_by=requested_by)

    async def RevokeCertificate(
        self, request: controls_pb2.RevokeCertificateRequest, context: Context
    ) -> controls_pb2.RevokeCertificateResponse:
        """RPC ``RevokeCertificate``: by serial, thumbprint or CRL. INVALID_ARGUMENT for none
        of them, a malformed one, or a CRL not signed by the federation CA."""
        officer = await self._officer(context, "revoke_certificate")
        fields: dict[str, Any] = {"reason": request.reason or None}
        try:
            _reason(request.reason, required=False)
            which = request.WhichOneof("certificate")
            if which == "serial":
                kind, values = "serial", [normalize_serial(request.serial)]
                fields["serial"] = values[0]
            elif which == "thumbprint":
                kind, values = "thumbprint", [normalize_thumbprint(request.thumbprint)]
                fields["thumbprint"] = values[0]
            elif which == "crl":
                if self._crl_issuer is None:
                    raise InvalidArgumentError("crl", "this gateway has no CA to check CRLs with")
                if len(request.crl) > _MAX_CRL_BYTES:
                    raise InvalidArgumentError("crl", "too large")
                kind, values = "serial", verify_crl(request.crl, self._crl_issuer)
                fields["crl_entries"] = len(values)
            else:
                raise InvalidArgumentError("certificate", "give a serial, a thumbprint or a CRL")
            newly = await asyncio.to_thread(
                self.store.revoke_certificates, kind, values, by=officer
            )
        except GatewayError as err:
            await self._refused("revoke_certificate", officer, err, **fields)
            raise
        log.warning("%d certificate(s) revoked by officer %s", newly, officer)
        await self._record("revoke_certificate", officer, outcome="ok", count=newly, **fields)
        return controls_pb2.RevokeCertificateResponse(newly_revoked=newly, listed=len(values))

    async def RevokeConsent(
        self, request: controls_pb2.RevokeConsentRequest, context: Context
    ) -> controls_pb2.RevokeConsentResponse:
        """RPC ``RevokeConsent``: an officer, on behalf of the issuer (default) or the subject.
        INVALID_ARGUMENT for another ``on_behalf_of``."""
        officer = await self._officer(context, "revoke_consent")
        behalf = request.on_behalf_of or "issuer"
        fields: dict[str, Any] = {"reason": request.reason or None, "via": "officer"}
        try:
            cid = _cid(request.consent_id)
            fields["consent_id"] = cid
            if behalf not in ("issuer", "subject"):
                raise InvalidArgumentError("on_behalf_of", "must be issuer or subject")
            fields["on_behalf_of"] = behalf
            _reason(request.reason, required=False)
            at, newly = await asyncio.to_thread(
                self.store.revoke_consent, cid, by=officer, via="officer"
            )
        except GatewayError as err:
            await self._refused("revoke_consent", officer, err, **fields)
            raise
        await self._record("revoke_consent", officer, outcome="ok", newly=newly, **fields)
        return controls_pb2.RevokeConsentResponse(consent_id=cid, revoked_at=_ts(at), newly=newly)

    async def RevokeMyConsent(
        self, request: controls_pb2.RevokeMyConsentRequest, context: Context
    ) -> controls_pb2.RevokeConsentResponse:
        """RPC ``RevokeMyConsent``: the subject, through its self-service agency.

        PERMISSION_DENIED ``NOT_SELF_SERVICE`` for another caller, ``OTHER_SUBJECT`` for a
        consent given by another subject; INVALID_ARGUMENT for a token that does not verify
        (or has expired: nothing is left to revoke).
        """
        actor = ""
        fields: dict[str, Any] = {"reason": request.reason or None, "via": "subject"}
        try:
            if self._caller is None:
                raise PermissionDeniedError(
                    "no self-service callers on this gateway", reason="NOT_SELF_SERVICE"
                )
            caller = authenticate(self._caller, context)
            actor = caller.agency_id
            identified(actor)
            if caller.kind != AgencyKind.SUBJECT_SELF_SERVICE.value or not caller.subject_id:
                raise PermissionDeniedError(
                    "only a subject's own self-service agency may revoke a consent this way",
                    reason="NOT_SELF_SERVICE",
                )
            _reason(request.reason, required=False)
            verifier = self._consents()
            if verifier is None:
                raise InvalidArgumentError("consent_token", "this gateway verifies no consents")
            try:
                consent = verifier.verify(request.consent_token, check_revoked=False)
            except ConsentError as exc:
                what = "has expired" if exc.problem is ConsentProblem.EXPIRED else "is invalid"
                raise InvalidArgumentError("consent_token", f"the consent {what}") from None
            fields["consent_id"] = consent.cid
            if consent.subject_type != caller.subject_type or not _same(
                consent.subject_id, caller.subject_id
            ):
                raise PermissionDeniedError(
                    "the consent was given by another subject", reason="OTHER_SUBJECT"
                )
            at, newly = await asyncio.to_thread(
                self.store.revoke_consent, consent.cid, by=actor, via="subject"
            )
        except GatewayError as err:
            await self._refused("revoke_my_consent", actor, err, **fields)
            raise
        await self._record("revoke_my_consent", actor, outcome="ok", newly=newly, **fields)
        return controls_pb2.RevokeConsentResponse(
            consent_id=consent.cid, revoked_at=_ts(at), newly=newly
        )

    async def ConsentStatus(
        self, request: controls_pb2.ConsentStatusRequest, context: Context
    ) -> controls_pb2.ConsentStatusResponse:
        """RPC ``ConsentStatus``: what the store knows of a consent id (officers)."""
        officer = await self._officer(context, "consent_status")
        fields: dict[str, Any] = {}
        try:
            cid = _cid(request.consent_id)
            fields["consent_id"] = cid
            status = await asyncio.to_thread(self.store.consent_status, cid)
        except GatewayError as err:
            await self._refused("consent_status", officer, err, **fields)
            raise
        await self._record(
            "consent_status", officer, outcome="ok", state=status.state.value, **fields
        )
        out = controls_pb2.ConsentStatusResponse(
            consent_id=cid,
            state=_STATES[status.state],
            uses=status.uses,
            max_uses=status.max_uses or 0,
            revoked_via=status.revoked_via,
        )
        if status.expires_at:
            out.expires_at.CopyFrom(_ts(status.expires_at))
        if status.revoked_at:
            out.revoked_at.CopyFrom(_ts(status.revoked_at))
        if status.last_used:
            out.last_used.CopyFrom(_ts(status.last_used))
        return out


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
