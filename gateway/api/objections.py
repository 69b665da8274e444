"""``credit.v1.ObjectionService``: objections (Decree 631 Art. 25) and credit repair, for
agencies.

A thin servicer: it authenticates the agency (``caller(context) -> Caller``, the same
authenticator as the query service: certificate and bound token, a self-service kiosk's
token naming its subject), turns messages into :class:`gateway.objections.Filing` and rows
back into ``Objection`` messages, and leaves every rule to
:class:`gateway.objections.ObjectionDesk` (who may file, the 20-day clock, repair periods,
audit records). Errors are GatewayErrors, mapped by the one edge.

For the subject's own report (issue 14 item 5): ``List`` called by a self-service agency
returns exactly its own subject's objections, open ones with ``due_on`` and ``overdue``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.api.edge import authenticate, identified
from gateway.auth.identity import Caller
from gateway.domain import names
from gateway.errors import InvalidArgumentError
from gateway.objections import Filing, ObjectionDesk, ObjectionRow
from gateway.objections.desk import OUTCOME_CODES
from protos.credit.v1 import common_pb2, objections_pb2, objections_pb2_grpc

__all__ = ["ObjectionService", "to_proto"]

Context = grpc.aio.ServicerContext[Any, Any]

_KINDS = {
    "objection": common_pb2.OBJECTION_KIND_OBJECTION,
    "repair": common_pb2.OBJECTION_KIND_REPAIR,
}


def _subject_type(subject: common_pb2.Subject) -> str:
    name = names.SUBJECT_TYPE.get(subject.type)
    if name is None:
        raise InvalidArgumentError(
            "subject.type", "must be SUBJECT_TYPE_ENTERPRISE or SUBJECT_TYPE_PERSON"
        )
    return str(name.value)


def to_proto(row: ObjectionRow, *, overdue: bool) -> objections_pb2.Objection:
    """The ``Objection`` message of a row (``overdue`` as the desk's clock says)."""
    filed_at = Timestamp()
    filed_at.FromDatetime(dt.datetime.fromtimestamp(row.filed_at, dt.UTC))
    return objections_pb2.Objection(
        objection_id=row.objection_id,
        kind=_KINDS[row.kind],
        department=row.department,
        dataset=row.dataset,
        record_id=row.record_id,
        filed_by=row.filed_by,
        filed_at=filed_at,
        filed_on=row.filed_on,
        due_on=row.due_on,
        outcome=OUTCOME_CODES[row.outcome],
        answered_on=row.answered_on,
        department_note=row.note,
        statement=row.statement,
        overdue=overdue,
        routed=row.routed_at is not None,
        severity=row.severity,
        repair_allowed_from=row.repair_allowed_from,
    )


class ObjectionService(objections_pb2_grpc.ObjectionServiceServicer):
    """The ``credit.v1.ObjectionService`` servicer (see the module docstring).

    Statuses every RPC may answer: UNAUTHENTICATED for a caller without an acceptable
    certificate and token; INVALID_ARGUMENT for a malformed field (``HOLDS_IDENTIFIER`` for
    free text holding an identifier); PERMISSION_DENIED for an agency acting for another
    subject without its consent; NOT_FOUND for an objection the caller may not see;
    UNAVAILABLE when the objection store or the audit log fails.
    """

    def __init__(self, desk: ObjectionDesk, *, caller: Callable[[Context], Caller]) -> None:
        self.desk = desk
        self._caller = caller

    def _who(self, context: Context) -> Caller:
        caller = authenticate(self._caller, context)
        identified(caller.agency_id)
        return caller

    def _out(self, row: ObjectionRow) -> objections_pb2.Objection:
        return to_proto(row, overdue=self.desk.is_overdue(row))

    @staticmethod
    def _filing(
        request: objections_pb2.FileObjectionRequest | objections_pb2.ApplyRepairRequest,
        statement: str = "",
    ) -> Filing:
        return Filing(
            request_id=request.request_id,
            subject_type=_subject_type(request.subject),
            subject_id=request.subject.id,
            department=request.department,
            dataset=request.dataset,
            record_id=request.record_id,
            grounds=request.grounds,
            evidence_sha256=tuple(request.evidence_sha256),
            consent_token=request.consent_token,
            statement=statement,
        )

    async def File(
        self, request: objections_pb2.FileObjectionRequest, context: Context
    ) -> objections_pb2.Objection:
        """RPC ``File``; ALREADY_EXISTS (OBJECTION_OPEN) while one is open on the record."""
        caller = self._who(context)
        row = await self.desk.file(caller, self._filing(request, request.statement))
        return self._out(row)

    async def ApplyRepair(
        self, request: objections_pb2.ApplyRepairRequest, context: Context
    ) -> objections_pb2.Objection:
        """RPC ``ApplyRepair``; FAILED_PRECONDITION (REPAIR_TOO_EARLY) before the minimum
        publication period, INVALID_ARGUMENT (NOT_REPAIRABLE) outside public credit
        information, NOT_FOUND (NO_SUCH_RECORD), UNAVAILABLE while the department is down."""
        caller = self._who(context)
        return self._out(await self.desk.apply_repair(caller, self._filing(request)))

    async def Status(
        self, request: objections_pb2.ObjectionStatusRequest, context: Context
    ) -> objections_pb2.Objection:
        """RPC ``Status``."""
        caller = self._who(context)
        return self._out(await self.desk.status(caller, request.objection_id))

    async def List(
        self, request: objections_pb2.ListObjectionsRequest, context: Context
    ) -> objections_pb2.ListObjectionsResponse:
        """RPC ``List``: newest first, paged."""
        caller = self._who(context)
        subject = None
        if request.HasField("subject"):
            subject = (_subject_type(request.subject), request.subject.id)
        rows, token = await self.desk.list(
            caller,
            subject=subject,
            open_only=request.open_only,
            overdue_only=request.overdue_only,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return objections_pb2.ListObjectionsResponse(
            objections=[self._out(r) for r in rows], next_page_token=token
        )

    async def AddStatement(
        self, request: objections_pb2.AddStatementRequest, context: Context
    ) -> objections_pb2.Objection:
        """RPC ``AddStatement``: at most 200 characters, never an identifier."""
        caller = self._who(context)
        return self._out(
            await self.desk.add_statement(caller, request.objection_id, request.statement)
        )
