"""``credit.v1.PolicyAdmin``: the policy workflow over gRPC, for security officers.

The servicer never decides who is an officer itself: it takes an
``authorize(context) -> officer_id`` callable (the gateway wires it to :mod:`gateway.auth`
with ``Role.OFFICER``) that raises PermissionDeniedError or AuthenticationError for anybody
else. Every RPC calls it first, so a caller who is not an officer learns nothing, not even
which versions exist. Errors are raised for the gRPC edge (:mod:`gateway.api.edge`), which
maps them to statuses and records the refusals the workflow has not recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from gateway.api.edge import authenticate, identified
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
)
from gateway.pipeline.freetext import echo, holds_identifier
from gateway.policyadmin.admin import PolicyAdministrator, VersionView
from gateway.policyadmin.store import CheckResult
from protos.credit.v1 import policy_admin_pb2, policy_admin_pb2_grpc

__all__ = ["DEV_OFFICER_HEADER", "Authorize", "PolicyAdminService", "dev_officer"]

log = logging.getLogger(__name__)

#: Returns the caller's officer id; raises PermissionDeniedError otherwise.
Authorize = Callable[[grpc.aio.ServicerContext[Any, Any]], str]
DEV_OFFICER_HEADER = "x-dev-officer-id"
_DEFAULT_REPLAY = 100


def dev_officer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Development mode only (``insecure_dev_plaintext``): the officer a header names, so
    that four eyes can still be exercised without certificates.

    Raises:
        AuthenticationError: no ``x-dev-officer-id`` header, or one holding an identifier.
    """
    for key, value in context.invocation_metadata() or ():
        if key == DEV_OFFICER_HEADER and isinstance(value, str) and value:
            if holds_identifier(value):  # it is recorded, logged and echoed as the officer
                raise AuthenticationError(
                    f"{DEV_OFFICER_HEADER} must name an officer", reason="DEV_OFFICER_INVALID"
                )
            return value
    raise AuthenticationError(f"missing {DEV_OFFICER_HEADER} header", reason="DEV_OFFICER_MISSING")


def _state(check: CheckResult | None) -> policy_admin_pb2.CheckState.ValueType:
    if check is None:
        return policy_admin_pb2.CHECK_STATE_NOT_RUN
    return (
        policy_admin_pb2.CHECK_STATE_PASSED if check.passed else policy_admin_pb2.CHECK_STATE_FAILED
    )


def _stamp(msg: Any, value: datetime) -> None:
    msg.FromDatetime(value)


def version_proto(view: VersionView) -> policy_admin_pb2.VersionInfo:
    """The ``credit.v1.VersionInfo`` of a version: its files, checks, approval (UTC times)."""
    v = view.version
    msg = policy_admin_pb2.VersionInfo(
        number=v.number,
        content_hash=v.content_hash,
        author=v.author,
        reason=v.reason,
        parent=v.parent or 0,
        active=view.active,
        file_names=sorted(v.files),
        validated=_state(view.validated),
        tested=_state(view.tested),
    )
    _stamp(msg.created_at, v.created_at)
    if view.approval is not None:
        msg.approved_by = view.approval.officer
        _stamp(msg.approved_at, view.approval.at)
    return msg


#: Version numbers are SQLite INTEGERs: a larger uint64 names no version.
_MAX_VERSION = 2**63 - 1


def _version(number: int, field: str = "version") -> int:
    """A version number from a request. Raises InvalidArgumentError for 0 and
    NotFoundError for one beyond any version there can be (before any store sees it)."""
    if number <= 0:
        raise InvalidArgumentError(field, "required: a version number (1, 2, ...)")
    if number > _MAX_VERSION:
        raise NotFoundError(f"no policy version {number}")
    return number


class PolicyAdminService(policy_admin_pb2_grpc.PolicyAdminServicer):
    """The ``credit.v1.PolicyAdmin`` servicer over a :class:`PolicyAdministrator`.

    Statuses every RPC may answer: UNAUTHENTICATED or PERMISSION_DENIED for a caller who is
    not a security officer (the attempt is recorded); INVALID_ARGUMENT for a version number
    of 0 (where one is required); NOT_FOUND for a version the store does not hold;
    UNAVAILABLE when the policy store (PolicyStoreError) or the audit log
    (AuditUnavailableError) fails. Each RPC's docstring adds its own.
    """

    def __init__(self, admin: PolicyAdministrator, *, authorize: Authorize) -> None:
        self.admin = admin
        self._authorize = authorize

    async def _officer(self, context: grpc.aio.ServicerContext[Any, Any], action: str) -> str:
        """The calling security officer. A caller who is not one is refused, and
        the attempt goes on the audit record like every other refused action."""
        try:
            officer = authenticate(self._authorize, context)
        except GatewayError as err:
            await self.admin.record_refusal(action, "", err)
            raise
        identified(officer)
        return officer

    async def Draft(
        self, request: policy_admin_pb2.DraftRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.DraftResponse:
        """RPC ``Draft``: store the given files, completed from the active version, as a new one.

        INVALID_ARGUMENT for a file named twice, an unknown file name, a file that is not
        text, too many bytes in all, an empty reason, or a reason or file name holding a
        resident identity number (GB 11643-1999) or unified social credit code
        (GB 32100-2015).
        """
        officer = await self._officer(context, "draft")
        files: dict[str, str] = {}
        for f in request.files:
            if f.name in files:
                raise InvalidArgumentError("files", f"{echo(f.name)} given twice")
            files[f.name] = f.content
        view = await self.admin.draft(officer, files, request.reason)
        return policy_admin_pb2.DraftResponse(version=version_proto(view))

    async def Validate(
        self, request: policy_admin_pb2.VersionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.ValidateResponse:
        """RPC ``Validate``: check a version's files; ``problems`` is empty when it is valid.

        An invalid version is a result, not an error status; the result is stored.
        """
        officer = await self._officer(context, "validate")
        view, problems = await self.admin.validate(officer, _version(request.version))
        return policy_admin_pb2.ValidateResponse(version=version_proto(view), problems=problems)

    async def Test(
        self, request: policy_admin_pb2.VersionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.TestResponse:
        """RPC ``Test``: run the policy test matrix against a version (result stored).

        A version that does not load fails its tests (``failures``), not the call.
        """
        officer = await self._officer(context, "test")
        view, cases, failures = await self.admin.test(officer, _version(request.version))
        return policy_admin_pb2.TestResponse(
            version=version_proto(view), cases=cases, failures=failures
        )

    async def Diff(
        self, request: policy_admin_pb2.DiffRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.DiffResponse:
        """RPC ``Diff``: the fields each agency would newly see or lose from ``base`` to a version.

        ``base`` 0 means the active version: NOT_FOUND when none is active.
        FAILED_PRECONDITION (``LOAD_FAILED``) when either version does not load.
        """
        officer = await self._officer(context, "diff")
        base, changes, compared = await self.admin.diff(
            officer,
            _version(request.version),
            base=_version(request.base, "base") if request.base else 0,
            with_consent=request.with_consent,
        )
        return policy_admin_pb2.DiffResponse(
            base=base,
            version=request.version,
            compared=compared,
            changes=[
                policy_admin_pb2.FieldChange(
                    agency=c.agency,
                    purpose=c.purpose,
                    mode=c.mode,
                    subject_type=c.subject_type,
                    consent=c.consent,
                    visible=c.visible,
                    hidden=c.hidden,
                )
                for c in changes
            ],
        )

    async def Replay(
        self, request: policy_admin_pb2.ReplayRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.ReplayResponse:
        """RPC ``Replay``: re-decide the latest ``last`` audited queries (default 100).

        INVALID_ARGUMENT for ``last`` over 10,000 or a gateway that keeps no audit log;
        FAILED_PRECONDITION (``LOAD_FAILED``) when the version does not load.
        """
        officer = await self._officer(context, "replay")
        replayed, flips = await self.admin.replay(
            officer, _version(request.version), request.last or _DEFAULT_REPLAY
        )
        return policy_admin_pb2.ReplayResponse(
            version=request.version,
            replayed=replayed,
            flips=[
                policy_admin_pb2.Flip(
                    log_index=f.log_index,
                    request_id=f.request_id,
                    agency=f.agency,
                    purpose=f.purpose,
                    mode=f.mode,
                    subject_type=f.subject_type,
                    decided_under=f.decided_under,
                    granted=f.granted,
                    denied=f.denied,
                )
                for f in flips
            ],
        )

    async def Approve(
        self, request: policy_admin_pb2.ApproveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.VersionResponse:
        """RPC ``Approve``: a second officer approves a version (four eyes).

        PERMISSION_DENIED (``FOUR_EYES``) for the version's own author; FAILED_PRECONDITION
        (``ALREADY_APPROVED``) for a version approved before; INVALID_ARGUMENT for a reason
        holding an identifier.
        """
        officer = await self._officer(context, "approve")
        view = await self.admin.approve(officer, _version(request.version), request.reason)
        return policy_admin_pb2.VersionResponse(version=version_proto(view))

    async def Activate(
        self, request: policy_admin_pb2.ActivateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.ActivateResponse:
        """RPC ``Activate``: validate, test and switch to an approved version.

        INVALID_ARGUMENT for an empty reason; FAILED_PRECONDITION when the workflow forbids
        it (``ALREADY_ACTIVE``, ``NOT_APPROVED``, ``LOAD_FAILED``, ``VALIDATION_FAILED``,
        ``TESTS_FAILED``, ``CATALOG_CHANGED``, ``REGISTRY_CHANGED``); the active version then
        keeps serving.
        """
        return await self._activate(request, context, rollback=False)

    async def Rollback(
        self, request: policy_admin_pb2.ActivateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.ActivateResponse:
        """RPC ``Rollback``: return to the version active just before, without new approval.

        As ``Activate`` (tests are not re-run), plus FAILED_PRECONDITION
        ``NOT_PREVIOUSLY_ACTIVE`` or ``NOT_PREVIOUS_VERSION`` for any other version.
        """
        return await self._activate(request, context, rollback=True)

    async def _activate(
        self,
        request: policy_admin_pb2.ActivateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        rollback: bool,
    ) -> policy_admin_pb2.ActivateResponse:
        officer = await self._officer(context, "rollback" if rollback else "activate")
        view, previous, label = await self.admin.activate(
            officer, _version(request.version), request.reason, rollback=rollback
        )
        return policy_admin_pb2.ActivateResponse(
            version=version_proto(view), previous=previous, policy_version=label
        )

    async def ListVersions(
        self,
        request: policy_admin_pb2.ListVersionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> policy_admin_pb2.ListVersionsResponse:
        """RPC ``ListVersions``: every version, newest first, without file contents."""
        await self._officer(context, "list")
        views = await self.admin.views()
        return policy_admin_pb2.ListVersionsResponse(versions=[version_proto(v) for v in views])

    async def GetVersion(
        self, request: policy_admin_pb2.VersionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> policy_admin_pb2.GetVersionResponse:
        """RPC ``GetVersion``: one version with its files' contents, by file name."""
        await self._officer(context, "show")
        view = await self.admin.view(_version(request.version))
        return policy_admin_pb2.GetVersionResponse(
            version=version_proto(view),
            files=[
                policy_admin_pb2.PolicyFile(name=n, content=t)
                for n, t in sorted(view.version.files.items())
            ],
        )
