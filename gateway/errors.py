"""The one error hierarchy of credit-gateway, and the one place it meets gRPC.

Every failure the gateway reports is a :class:`GatewayError`. Subclasses are
grouped by who is at fault:

* :class:`CallerError`: the agency sent something we refuse (authentication,
  validation, denial, money);
* :class:`UpstreamError`: a department failed or was slow;
* :class:`LocalError`: the gateway itself could not do its part (audit log,
  ledger, configuration).

:func:`to_rpc_status` is the only function that turns one into a gRPC status
with rich details (``google.rpc.ErrorInfo``, ``BadRequest``, ``QuotaFailure``,
``PreconditionFailure``, ``RetryInfo``). Servicers raise; the gRPC edge
(:mod:`gateway.api.edge`) maps, so no traceback ever reaches a client.

What a caller is told: a caller's error names the problem (its message and
metadata are for the caller). A local failure's message is for the operator
(it may name a file, a driver or an exception) and stays in the gateway's log:
the caller gets the class's :attr:`~GatewayError.public_message` and no
metadata (:attr:`~GatewayError.disclosed` is false).

>>> err = InvalidIdentifierError("subject.id", "wrong check character: expected L, got M")
>>> to_rpc_status(err).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
True
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import ClassVar, NoReturn

import grpc
from google.protobuf import duration_pb2
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
    "NotYetIntegratedError",
    "PermissionDeniedError",
    "QuotaExhaustedError",
    "RateLimitedError",
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
    #: Whether ``message`` and ``metadata`` may reach the caller.
    disclosed: ClassVar[bool] = True
    #: What the caller is told when the message is not disclosed.
    public_message: ClassVar[str] = "internal error"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        #: Seconds after which the same call may succeed, where known (google.rpc.RetryInfo).
        self.retry_after_s: float | None = None
        #: Set once the refusal is on the audit record, so that the edge does not
        #: record it a second time.
        self.audited = False


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


class RateLimitedError(CallerError):
    """An agency is over one of its rate limits (:mod:`gateway.pipeline.limits`):
    ``limit`` ``rate`` (queries per second; retry when the next token arrives) or
    ``daily`` (queries per purpose per local day; retry at local midnight)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(
        self,
        agency: str,
        limit: str,
        problem: str,
        *,
        retry_after_s: float,
        quota: int,
        purpose: str = "",
    ) -> None:
        retry_ms = max(1, math.ceil(retry_after_s * 1000))
        metadata = {"agency": agency, "limit": limit, "quota": str(quota)}
        if purpose:
            metadata["purpose"] = purpose
        metadata["retry_after_ms"] = str(retry_ms)
        super().__init__(f"rate limit ({limit}): {problem}", metadata=metadata)
        self.agency = agency
        self.limit = limit
        self.problem = problem
        self.retry_after_s = retry_ms / 1000


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
    """The gateway could not do its own part. The message is for the operator
    (the gateway's log, the CLI); the caller is told :attr:`public_message`."""

    disclosed = False
    public_message = "the gateway could not complete the request"


class AuditUnavailableError(LocalError):
    """The audit log cannot be written: fail closed, disclose nothing."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "AUDIT_UNAVAILABLE"
    public_message = "the audit log is unavailable, so nothing is disclosed; try again later"


class LedgerError(LocalError):
    """The ledger cannot be read or written."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "LEDGER_UNAVAILABLE"
    public_message = "the ledger is unavailable; try again later"


class NotYetIntegratedError(LocalError):
    """An audit entry is durable but no signed checkpoint covers it yet (one is
    signed within a second): UNAVAILABLE with google.rpc.RetryInfo, since the
    same call succeeds once the next checkpoint is signed."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "NOT_YET_INTEGRATED"
    disclosed = True

    def __init__(self, index: int, retry_after_s: float) -> None:
        retry_ms = max(1, math.ceil(retry_after_s * 1000))
        super().__init__(
            f"entry {index} is not yet in a signed checkpoint; retry after {retry_ms} ms",
            metadata={"index": str(index), "retry_after_ms": str(retry_ms)},
        )
        self.retry_after_s = retry_ms / 1000


class ConfigError(LocalError):
    """A configuration file or policy file is invalid; ``key`` names the culprit."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONFIG_INVALID"
    public_message = "the gateway's configuration is invalid"

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}", metadata={"key": key})
        self.key = key
        self.problem = problem


class InternalError(LocalError):
    """A bug. The client sees a generic message; the log has the traceback."""

    public_message = "internal error"


#: QuotaFailure.Violation.subject by quota basis (gateway.billing.meter).
_QUOTA_SUBJECTS = {"free_quota": "agency", "self_allowance": "subject"}


def _retry_after_s(err: GatewayError, now: dt.datetime | None) -> float | None:
    if err.retry_after_s is not None:
        return err.retry_after_s
    resets_at = err.metadata.get("resets_at") if isinstance(err, QuotaExhaustedError) else None
    if not resets_at:
        return None
    try:
        at = dt.datetime.fromisoformat(resets_at)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    delay = (at - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return delay if delay > 0 else None


def to_rpc_status(err: GatewayError, *, now: dt.datetime | None = None) -> status_pb2.Status:
    """Map an error to a ``google.rpc.Status``. The only such mapping there is.

    Details (google/rpc/error_details.proto, AIP-193): always ErrorInfo (reason,
    domain, and the metadata of a disclosed error); BadRequest for a bad argument;
    QuotaFailure for an exhausted quota or a rate limit (subject ``agency:<id>``) and
    PreconditionFailure for an insufficient balance; RetryInfo where the time after which
    the same call may succeed is known (``retry_after_s``, or a quota's ``resets_at`` after
    ``now``).
    """
    message = err.message if err.disclosed else err.public_message
    metadata = err.metadata if err.disclosed else {}
    status = status_pb2.Status(code=err.code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=metadata)
    status.details.add().Pack(info)
    if isinstance(err, InvalidArgumentError):
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=err.field, description=err.problem)
        status.details.add().Pack(bad)
    if isinstance(err, QuotaExhaustedError):
        quota = error_details_pb2.QuotaFailure()
        basis = err.metadata.get("basis", "")
        violation = quota.violations.add(
            subject=_QUOTA_SUBJECTS.get(basis, "account"), description=err.message, quota_id=basis
        )
        if err.metadata.get("quota", "").isdigit():
            violation.quota_value = int(err.metadata["quota"])
        status.details.add().Pack(quota)
    if isinstance(err, RateLimitedError):
        quota = error_details_pb2.QuotaFailure()
        quota.violations.add(
            subject=f"agency:{err.agency}",
            description=err.message,
            quota_id=f"{err.limit}_limit",
            quota_value=int(err.metadata["quota"]),
        )
        status.details.add().Pack(quota)
    if isinstance(err, InsufficientBalanceError):
        pf = error_details_pb2.PreconditionFailure()
        pf.violations.add(type=err.reason, subject="account", description=err.message)
        status.details.add().Pack(pf)
    retry_after = _retry_after_s(err, now)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(math.ceil(retry_after * 1000))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


async def abort(context: grpc.aio.ServicerContext[object, object], err: GatewayError) -> NoReturn:
    """End the RPC with ``err`` mapped by :func:`to_rpc_status`."""
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(err)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover
