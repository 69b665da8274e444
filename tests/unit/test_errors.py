"""The one mapping from GatewayError to google.rpc.Status: what a caller is told."""

from __future__ import annotations

import datetime as dt

import grpc
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import (
    AuditUnavailableError,
    ConfigError,
    InsufficientBalanceError,
    InternalError,
    LedgerError,
    LocalError,
    NotYetIntegratedError,
    QuotaExhaustedError,
    to_rpc_status,
)
from gateway.policyadmin.errors import PolicyStoreError

LOCAL_ERRORS = [AuditUnavailableError, LedgerError, InternalError, PolicyStoreError, LocalError]


def _details(status: status_pb2.Status) -> dict[str, object]:
    found: dict[str, object] = {}
    kinds = (
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.QuotaFailure,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.RetryInfo,
    )
    for any_ in status.details:
        for kind in kinds:
            msg = kind()
            if any_.Unpack(msg):
                found[kind.__name__] = msg
    return found


def test_audit_unavailable_names_no_server_path() -> None:
    err = AuditUnavailableError(
        "audit log write failed: StorageError: /var/lib/credit-gateway/audit.sqlite: "
        "write failed: disk I/O error"
    )
    status = to_rpc_status(err)
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "/var/lib" not in status.SerializeToString().decode("latin-1")
    assert "Error" not in status.message and "audit log is unavailable" in status.message
    info = _details(status)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "AUDIT_UNAVAILABLE" and not info.metadata


def test_config_error_key_is_not_disclosed() -> None:
    status = to_rpc_status(ConfigError("/etc/credit-gateway/jwks.json", "not valid JSON"))
    assert "/etc" not in status.SerializeToString().decode("latin-1")


@given(
    kind=st.sampled_from(LOCAL_ERRORS),
    text=st.text(min_size=1, max_size=80),
)
def test_a_local_failure_never_reaches_the_caller(kind: type[LocalError], text: str) -> None:
    """Whatever a local failure's message says (paths, driver text), the caller
    gets the class's fixed message and no metadata."""
    err = kind(text, metadata={"path": text})
    status = to_rpc_status(err)
    assert status.message == kind.public_message
    info = _details(status)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo) and not info.metadata


def test_quota_exhausted_carries_quota_failure_and_retry_info() -> None:
    err = QuotaExhaustedError(
        "the free-mode quota of 20 queries a day is used up; it resets at midnight",
        metadata={"resets_at": "2026-11-06T00:00:00+08:00", "quota": "20", "basis": "free_quota"},
    )
    now = dt.datetime(2026, 11, 5, 15, 0, tzinfo=dt.UTC)  # 23:00 in Beijing: one hour left
    status = to_rpc_status(err, now=now)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    details = _details(status)
    assert "PreconditionFailure" not in details
    quota = details["QuotaFailure"]
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    (violation,) = quota.violations
    assert violation.subject == "agency" and violation.quota_id == "free_quota"
    assert violation.quota_value == 20
    retry = details["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToSeconds() == 3600


def test_quota_without_a_known_reset_has_no_retry_info() -> None:
    err = QuotaExhaustedError("used up", metadata={"basis": "free_quota"})
    assert "RetryInfo" not in _details(to_rpc_status(err))


def test_insufficient_balance_stays_a_precondition_failure() -> None:
    err = InsufficientBalanceError("this query costs 500 fen", metadata={"needed_fen": "500"})
    status = to_rpc_status(err)
    details = _details(status)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "PreconditionFailure" in details and "QuotaFailure" not in details
    assert "RetryInfo" not in details


def test_not_yet_integrated_says_when_to_retry() -> None:
    status = to_rpc_status(NotYetIntegratedError(41, 0.7301))
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert status.message == "entry 41 is not yet in a signed checkpoint; retry after 731 ms"
    retry = _details(status)["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 731
