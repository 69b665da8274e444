"""``credit.v1.AuditService``: checkpoints and proofs of the audit log, for auditors and
agencies (:class:`AuditServicer`). The log itself is :mod:`gateway.audit.log`; what a
record holds, :mod:`gateway.audit.auditor`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import grpc

from gateway.api.edge import authenticate, identified
from gateway.audit.log import AuditLog
from gateway.audit.merkle import leaf_hash
from gateway.auth import Authenticator, Role
from gateway.errors import (
    InvalidArgumentError,
    NotFoundError,
    NotYetIntegratedError,
    PermissionDeniedError,
)
from protos.credit.v1 import audit_pb2, audit_pb2_grpc

__all__ = ["AuditServicer"]


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """Checkpoints and proofs for auditors; an agency sees its own entries.

    Errors are raised for the gRPC edge (:mod:`gateway.api.edge`) to map and record:

    * an entry that is durable but not yet under a signed checkpoint (a receipt
      fresher than about a second): UNAVAILABLE ``NOT_YET_INTEGRATED`` with
      google.rpc.RetryInfo, the time until the next checkpoint is due;
    * impossible ranges: INVALID_ARGUMENT (``index >= tree_size``, ``old_size >
      new_size``, a size beyond the log);
    * an index naming no entry: NOT_FOUND.

    A consistency proof from size 0 is empty: every tree extends the empty tree
    (RFC 6962 section 2.1.2 defines proofs for ``0 < m < n`` only; like
    transparency-dev/merkle, which verifies size 0 against an empty proof).
    """

    #: Time allowed, past a checkpoint's due time, for signing and fsyncing it.
    _SIGNING_MARGIN_S = 0.05

    def __init__(
        self,
        audit_log: AuditLog,
        authenticator: Authenticator | None,
        *,
        subject_of: Callable[[grpc.aio.ServicerContext[Any, Any]], str | None] | None = None,
        today: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        self._log = audit_log
        self._auth = authenticator
        #: The keyed pseudonym of the subject a self-service caller's token attests (None for
        #: any other caller): such a caller may also prove the query records about its
        #: subject ("who looked at me" names their indices), except those still confidential.
        self._subject_of = subject_of
        self._today = today

    def _who(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Role, str]:
        if self._auth is None:  # insecure development mode
            return Role.AUDITOR, "development"
        ident = authenticate(self._auth.authenticate, context)
        identified(ident.principal_id)
        return ident.role, ident.principal_id

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.Checkpoint:
        """The latest signed checkpoint (C2SP signed note). Auditors and agencies may call it."""
        self._who(context)
        note = self._log.latest_checkpoint()
        size, root = _parse_checkpoint(note)
        return audit_pb2.Checkpoint(note=note, tree_size=size, root_hash=root)

    async def GetInclusionProof(
        self,
        request: audit_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.InclusionProof:
        """An RFC 6962 section 2.1.1 inclusion proof of one entry; an agency only for its own
        entries."""
        role, principal = self._who(context)
        note = self._log.latest_checkpoint()
        cp_size, _ = _parse_checkpoint(note)
        logged = self._log.size
        index, wanted = request.index, request.tree_size
        if wanted and index >= wanted:
            raise InvalidArgumentError("index", f"{index} is not below tree_size {wanted}")
        if wanted > logged:
            raise InvalidArgumentError("tree_size", f"{wanted} is beyond the log ({logged})")
        if index >= logged:
            raise NotFoundError(f"no entry {index}: the log has {logged} entries")
        leaf = await self._log.read_leaf(index)
        if leaf is None:
            raise NotFoundError(f"no entry {index}: the log has {logged} entries")
        if (
            role is not Role.AUDITOR
            and _agency_of(leaf) != principal
            and not self._about_callers_subject(leaf, context)
        ):
            # One message whatever the reason: a confidential query about the subject must
            # not be told apart from another subject's entry.
            raise PermissionDeniedError(
                "an agency may only prove entries of its own queries, a subject's self-service "
                "credential also those about its subject"
            )
        size = wanted or cp_size
        if index >= size:
            due = self._log.checkpoint_due_in_s + self._SIGNING_MARGIN_S
            raise NotYetIntegratedError(index, due)
        hashes = await self._log.inclusion_proof(index, size)
        return audit_pb2.InclusionProof(
            index=index,
            tree_size=size,
            hashes=hashes,
            leaf=leaf,
            leaf_hash=leaf_hash(leaf),
            checkpoint=note if size == cp_size else "",
        )

    async def GetConsistencyProof(
        self,
        request: audit_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.ConsistencyProof:
        """An RFC 6962 section 2.1.2 consistency proof between two tree sizes."""
        self._who(context)
        old, new, logged = request.old_size, request.new_size, self._log.size
        if old > new:
            raise InvalidArgumentError("old_size", f"{old} is larger than new_size {new}")
        if new > logged:
            raise InvalidArgumentError("new_size", f"{new} is beyond the log ({logged})")
        hashes = await self._log.consistency_proof(old, new) if old else []
        return audit_pb2.ConsistencyProof(old_size=old, new_size=new, hashes=hashes)

    def _about_callers_subject(
        self, leaf: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bool:
        """Whether ``leaf`` is an answered query record about the subject the caller's
        token attests and not confidential today (``confidential_until``, Beijing time)."""
        if self._subject_of is None:
            return False
        try:
            record = json.loads(leaf)
        except ValueError:
            return False
        if not isinstance(record, dict) or record.get("kind") != "query":
            return False
        subject = record.get("subject_pseudonym")
        if not isinstance(subject, str) or not subject:
            return False
        hidden = record.get("confidential_until")
        if isinstance(hidden, str) and hidden and hidden > self._today().isoformat():
            return False
        return subject == self._subject_of(context)


def _parse_checkpoint(note: str) -> tuple[int, bytes]:
    lines = note.split("\n")
    return int(lines[1]), base64.b64decode(lines[2])


def _agency_of(leaf: bytes) -> str:
    try:
        value = json.loads(leaf).get("agency_id", "")
    except ValueError:
        return ""
    return value if isinstance(value, str) else ""
