"""The one error hierarchy of credit-gateway, and the one place it meets gRPC.

Every failure the gateway reports is a :class:`GatewayError`. Subclasses are
grouped by who is at fault:

* :class:`CallerError`: the agency sent something we refuse (authentication,
  validation, denial, money);
* :class:`UpstreamError`: a department failed or was slow;
* :class:`LocalError`: the gateway itself could not do its part (audit log,
  ledger, configuration).

:func:`to_rpc_status` is the only function that turns one into a gRPC status
with rich details (``google.rpc.ErrorInfo``, ``BadRequest``...). Servicers call
:func:`abort` and nothing else, so no traceback ever reaches a client.

>>> err = InvalidIdentifierError("subject.id", "wrong check character: expected L, got M")
>>> to_rpc_status(err).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "DOMAIN",
    "AuditUnavailableError",
    "AuthenticationError",
    "CallerError",
    "ConfigError",
    "ConflictError",
    "DepartmentError",
    "DepartmentTimeoutError",
    "DepartmentUnavailableError",
    "GatewayError",
    "InsufficientBalanceError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidIdentifierError",
    "LedgerError",
    "LocalError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExhaustedError",
    "UpstreamError",
    "abort",
    "to_rpc_status",
]

#: ErrorInfo.domain for every error we produce.
DOMAIN = "credit-gateway"


class GatewayError(Exception):
    """Base of every error credit-gateway reports.

    ``reason`` is a stable UPPER_SNAKE identifier for machines (ErrorInfo.reason);
    the message is for people. ``metadata`` must never hold personal data.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


# --- the caller is at fault -------------------------------------------------


class CallerError(GatewayError):
    """The request was refused because of what the caller sent or who it is."""


class InvalidArgumentError(CallerError):
    """A request field is malformed; ``field`` names it (BadRequest details)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {problem}", reason=reason, metadata={"field": field})
        self.field = field
        self.problem = problem


class InvalidIdentifierError(InvalidArgumentError):
    """A subject identifier fails GB 32100 or GB 11643 validation."""

    reason = "INVALID_IDENTIFIER"


class AuthenticationError(CallerError):
    """No valid credentials: missing, malformed, expired or mis-bound token."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDeniedError(CallerError):
    """The caller is known but may not do this (suspended, unregistered, no role)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class NotFoundError(CallerError):
    """A named thing (account, version, log index) does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class ConflictError(CallerError):
    """The same request is already being processed; retry when it has finished."""

    code = grpc.StatusCode.ABORTED
    reason = "REQUEST_IN_PROGRESS"


class InsufficientBalanceError(CallerError):
    """A paid query costs more than the account can pay."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "INSUFFICIENT_BALANCE"


class QuotaExhaustedError(CallerError):
    """A free quota is used up until ``metadata['resets_at']``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXHAUSTED"


# --- a department is at fault -------------------------------------------------


class UpstreamError(GatewayError):
    """A department adapter failed; usually reported in its section, not as a status."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DEPARTMENT_ERROR"


class DepartmentError(UpstreamError):
    """A department answered with an error or with something malformed."""


class DepartmentUnavailableError(UpstreamError):
    """A department could not be reached, or its circuit breaker is open."""

    reason = "DEPARTMENT_UNAVAILABLE"


class DepartmentTimeoutError(UpstreamError):
    """A department did not answer within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEPARTMENT_TIMEOUT"


# --- the gateway is at fault ---------------------------------------------------


class LocalError(GatewayError):
    """The gateway could not do its own part."""


class AuditUnavailableError(LocalError):
    """The audit log cannot be written: fail closed, disclose nothing."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "AUDIT_UNAVAILABLE"


class LedgerError(LocalError):
    """The ledger cannot be read or written."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "LEDGER_UNAVAILABLE"


class ConfigError(LocalError):
    """A configuration file or policy file is invalid; ``key`` names the culprit."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONFIG_INVALID"

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}", metadata={"key": key})
        self.key = key
        self.problem = problem


class InternalError(LocalError):
    """A bug. The client sees a generic message; the log has the traceback."""


def to_rpc_status(err: GatewayError) -> status_pb2.Status:
    """Map an error to a ``google.rpc.Status`` with ErrorInfo and, for bad
    arguments, BadRequest field violations. The only such mapping there is."""
    message = err.message if not isinstance(err, InternalError) else "internal error"
    status = status_pb2.Status(code=err.code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)
    status.details.add().Pack(info)
    if isinstance(err, InvalidArgumentError):
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=err.field, description=err.problem)
        status.details.add().Pack(bad)
    if isinstance(err, QuotaExhaustedError | InsufficientBalanceError):
        pf = error_details_pb2.PreconditionFailure()
        pf.violations.add(type=err.reason, subject="account", description=err.message)
        status.details.add().Pack(pf)
    return status


async def abort(context: grpc.aio.ServicerContext[object, object], err: GatewayError) -> NoReturn:
    """End the RPC with ``err`` mapped by :func:`to_rpc_status`."""
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(err)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover
