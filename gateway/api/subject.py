"""The gRPC side of the subject's rights: ``SubjectService`` and ``LegalBasisAdmin``.

* ``SubjectService.ListQueryRecords`` ("who looked at me", Decree 631 Art. 22, FCRA
  15 U.S.C. 1681g(a)(3)): the answered queries about the caller's own subject, newest first,
  paged, from the subject index (:mod:`gateway.subject.index`), never a scan of the log.
  Only a caller whose token attests a subject (the self-service kiosk, which speaks for the
  subject in front of it) may ask, and only about that subject: the subject is taken from
  the token, never from the request, so nobody can list another subject's queries.
  An agency acting for the subject, even with its consent, may not: the list names every
  agency that looked and why, which the subject may hand on itself (``credit-query --self``
  prints it), but a third party holding it would learn more than any consent scope covers.
  Queries under a legal basis still confidential on the gateway's calendar day are left out.
* ``LegalBasisAdmin.ListQueriesByBasis``: security officers list the queries made under one
  legal basis, confidential ones included.
* ``LegalBasisAdmin.GetArchivedConsent``: auditors read the signed consent a query used
  (:mod:`gateway.subject.consents`).

Every answer is put on the audit record (kind ``subject_access``) before it is sent: no
record, no answer. Refusals are recorded by the edge.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc

from gateway.api.edge import EventSink, authenticate, identified
from gateway.audit.schema import SubjectAccessRecord
from gateway.auth import Role
from gateway.auth.identity import CallerSource
from gateway.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from gateway.pipeline.freetext import holds_identifier
from gateway.policy.legal import LegalBases
from gateway.subject.consents import ConsentArchive
from gateway.subject.index import IndexedQuery
from gateway.subject.service import SubjectIndexer
from protos.credit.v1 import query_pb2, subject_pb2, subject_pb2_grpc

__all__ = ["LegalBasisAdminService", "SubjectService"]

#: Records per page when the caller names no size, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_MODES = {"free": query_pb2.QUERY_MODE_FREE, "paid": query_pb2.QUERY_MODE_PAID}
#: How long a listing waits for the index's first catch-up before it is refused (seconds).
_READY_WAIT_S = 2.0
_TOKEN_PREFIX = "q1:"  # noqa: S105 - a page-token prefix, not a secret


def _page_size(size: int) -> int:
    # AIP-158: 0 means the default; more than the maximum is coerced to it.
    return DEFAULT_PAGE_SIZE if size == 0 else min(size, MAX_PAGE_SIZE)


def encode_page_token(before: int) -> str:
    """The opaque token of the page that starts below log index ``before``."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{before}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int | None:
    """The log index a token pages below; None for "" (the first page).

    Raises:
        InvalidArgumentError: ``page_token`` is not one this service issued.
    """
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    number = text[len(_TOKEN_PREFIX) :] if text.startswith(_TOKEN_PREFIX) else ""
    if not number.isdigit() or len(number) > 19:
        raise InvalidArgumentError("page_token", "not a page token this service issued")
    return int(number)


def _entry(q: IndexedQuery) -> subject_pb2.QueryRecordEntry:
    entry = subject_pb2.QueryRecordEntry(
        time=q.time,
        agency_id=q.agency_id,
        purpose=q.purpose,
        mode=_MODES.get(q.mode, query_pb2.QUERY_MODE_UNSPECIFIED),
        charge_fen=q.charge_fen,
        log_index=q.log_index,
        legal_basis=q.legal_basis,
    )
    for dept, dataset in q.datasets:
        entry.datasets.add(department=dept, dataset=dataset)
    return entry


def _next_token(rows: list[IndexedQuery], limit: int) -> str:
    return encode_page_token(rows[limit - 1].log_index) if len(rows) > limit else ""


class SubjectService(subject_pb2_grpc.SubjectServiceServicer):
    """``credit.v1.SubjectService`` (see the module docstring)."""

    def __init__(
        self,
        indexer: SubjectIndexer,
        authenticator: CallerSource,
        pseudonym: Callable[[str, str], str],
        *,
        audit: EventSink | None,
        origin: str,
        today: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        self._indexer = indexer
        self._auth = authenticator
        self._pseudonym = pseudonym
        self._audit = audit
        self._origin = origin
        #: The gateway's calendar day (Beijing time): confidentiality ends on it.
        self.today = today

    async def ListQueryRecords(
        self,
        request: subject_pb2.ListQueryRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subject_pb2.ListQueryRecordsResponse:
        """The caller's own subject's query records, newest first.

        Raises:
            PermissionDeniedError: the caller's token attests no subject (``NOT_THE_SUBJECT``).
            InvalidArgumentError: a page token this service did not issue.
            SubjectStoreError: the index cannot be read; AuditUnavailableError: the access
                cannot be recorded.
        """
        caller = authenticate(self._auth.authenticate, context)
        identified(caller.agency_id)
        if not caller.subject_id or not caller.subject_type:
            raise PermissionDeniedError(
                "only the subject itself, through a self-service credential that attests it, "
                "may list the queries about it",
                reason="NOT_THE_SUBJECT",
            )
        before = decode_page_token(request.page_token)
        limit = _page_size(request.page_size)
        subject = self._pseudonym(caller.subject_type, caller.subject_id)
        await self._indexer.wait_ready(_READY_WAIT_S)
        await self._indexer.refresh()
        rows = await asyncio.to_thread(
            self._indexer.index.for_subject,
            subject,
            today=self.today().isoformat(),
            before=before,
            limit=limit + 1,
        )
        response = subject_pb2.ListQueryRecordsResponse(
            next_page_token=_next_token(rows, limit), log_origin=self._origin
        )
        response.records.extend(_entry(q) for q in rows[:limit])
        if self._audit is not None:
            record = SubjectAccessRecord(
                action="list_query_records",
                principal=caller.agency_id,
                count=len(response.records),
                subject_pseudonym=subject,
            )
            await self._audit.append_event(record.KIND, _fields(record))
        return response


def _fields(record: SubjectAccessRecord) -> dict[str, Any]:
    fields = record.to_json()
    fields.pop("kind")
    return fields


class LegalBasisAdminService(subject_pb2_grpc.LegalBasisAdminServicer):
    """``credit.v1.LegalBasisAdmin`` (see the module docstring).

    ``authorize`` returns the verified caller's role and id (officers and auditors).
    """

    def __init__(
        self,
        indexer: SubjectIndexer,
        legal_bases: LegalBases,
        *,
        authorize: Callable[[grpc.aio.ServicerContext[Any, Any]], tuple[Role, str]],
        archive: ConsentArchive | None,
        audit: EventSink | None,
        origin: str,
    ) -> None:
        self._indexer = indexer
        self._legal = legal_bases
        self._authorize = authorize
        self._archive = archive
        self._audit = audit
        self._origin = origin

    def _who(self, context: grpc.aio.ServicerContext[Any, Any], role: Role) -> str:
        got, principal = authenticate(self._authorize, context)
        identified(principal)
        if got is not role:
            raise PermissionDeniedError(f"only {role.value}s may call this", reason="WRONG_ROLE")
        return principal

    async def ListQueriesByBasis(
        self,
        request: subject_pb2.ListQueriesByBasisRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subject_pb2.ListQueriesByBasisResponse:
        """Security officers: the queries under one legal basis, newest first.

        Raises:
            PermissionDeniedError: not an officer. InvalidArgumentError: not a published
            basis, or a bad page token. SubjectStoreError, AuditUnavailableError.
        """
        officer = self._who(context, Role.OFFICER)
        code = request.legal_basis
        if code not in self._legal:
            raise InvalidArgumentError(
                "legal_basis", "not a published legal basis; see policies/legal_bases.toml"
            )
        before = decode_page_token(request.page_token)
        limit = _page_size(request.page_size)
        await self._indexer.wait_ready(_READY_WAIT_S)
        await self._indexer.refresh()
        rows = await asyncio.to_thread(
            self._indexer.index.for_basis, code, before=before, limit=limit + 1
        )
        response = subject_pb2.ListQueriesByBasisResponse(
            next_page_token=_next_token(rows, limit), log_origin=self._origin
        )
        for q in rows[:limit]:
            response.queries.add(
                query=_entry(q),
                case_reference=q.case_reference,
                confidential_until=q.confidential_until,
            )
        if self._audit is not None:
            record = SubjectAccessRecord(
                action="list_by_basis",
                principal=officer,
                count=len(response.queries),
                legal_basis=code,
            )
            await self._audit.append_event(record.KIND, _fields(record))
        return response

    async def GetArchivedConsent(
        self,
        request: subject_pb2.GetArchivedConsentRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subject_pb2.ArchivedConsent:
        """Auditors: a consent as archived when a query used it.

        Raises:
            PermissionDeniedError: not an auditor. InvalidArgumentError: a malformed id.
            NotFoundError: no such consent archived (never used, or purged after its
            retention). SubjectStoreError, AuditUnavailableError.
        """
        auditor = self._who(context, Role.AUDITOR)
        cid = request.consent_id
        if not cid or len(cid) > 128 or holds_identifier(cid):
            raise InvalidArgumentError("consent_id", "must be a consent id (at most 128)")
        found = await asyncio.to_thread(self._archive.get, cid) if self._archive else None
        if found is None:
            raise NotFoundError("no consent with that id is archived")
        if self._audit is not None:
            record = SubjectAccessRecord(
                action="get_archived_consent", principal=auditor, count=1, consent_id=cid
            )
            await self._audit.append_event(record.KIND, _fields(record))
        return subject_pb2.ArchivedConsent(
            consent_id=cid,
            compact_jws=found.compact_jws,
            archived_at=found.archived_at_utc,
            retain_until=found.retain_until_utc,
        )
