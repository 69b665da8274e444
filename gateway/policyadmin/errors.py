"""Errors of policy administration, in the gateway's one hierarchy (:mod:`gateway.errors`).

:func:`gateway.errors.to_rpc_status` maps them like every other error: the class gives the
gRPC code, ``reason`` the machine-readable ErrorInfo reason.
"""

from __future__ import annotations

import grpc

from gateway.errors import CallerError, LocalError

__all__ = ["PolicyStoreError", "PolicyWorkflowError"]


class PolicyWorkflowError(CallerError):
    """The workflow forbids this step now: activating an unapproved version, a version whose
    validation or tests fail, approving twice... (FAILED_PRECONDITION). ``reason`` says which
    rule, e.g. ``NOT_APPROVED``, ``TESTS_FAILED``, ``LOAD_FAILED``."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "POLICY_WORKFLOW"


class PolicyStoreError(LocalError):
    """The policy version store cannot be opened, read or written (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "POLICY_STORE_UNAVAILABLE"
