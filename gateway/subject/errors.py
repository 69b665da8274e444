"""The subject package's one error: its stores cannot be read or written."""

from __future__ import annotations

import grpc

from gateway.errors import LocalError

__all__ = ["SubjectStoreError"]


class SubjectStoreError(LocalError):
    """The subject index or the consent archive cannot be read or written (UNAVAILABLE,
    reason ``SUBJECT_STORE_UNAVAILABLE``). The message is for the operator; the index is
    rebuildable from the audit log, the archive is not (a query whose consent cannot be
    archived is refused)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "SUBJECT_STORE_UNAVAILABLE"
    public_message = "the subject records store is unavailable; try again later"
