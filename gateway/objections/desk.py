"""The objection desk: filing, the 20-day clock, routing to departments, polling their
answers, credit repair, and the marks every query shows (Decree 631 Art. 25).

    desk = ObjectionDesk(store, catalog=lambda: catalog, clients=gateway.clients,
                         pseudonym=auditor.pseudonym, audit=auditor,
                         repair=load_repair_policy(), poll_interval_s=60)
    desk.start()                                  # the background poller
    row = await desk.file(caller, filing)         # marked from this moment on
    kept, repaired = desk.mark("market", "administrative_penalties", ("enterprise", uscc),
                               records)

**Who may file.** The subject itself through its self-service agency (the caller's
certificate and token attest the subject), or an agency acting for it that presents the
subject's consent token granted to that agency (verified, not revoked, covering the record's
department or dataset): the subject's written authorisation, as X-Road's represented party.
Anyone else is refused PERMISSION_DENIED. Status, list and statements are open to the agency
that filed an objection and to the subject's own self-service agency; anyone else is told
NOT_FOUND (an objection's existence is the subject's business).

**The clock.** Filed on = the Beijing calendar day of filing; due on = filed on + 20 days
(Art. 25: "20日内", calendar days). An objection still unanswered after its due day is
overdue: shown so in status and list, counted in ``credit_gateway_objections_overdue``
(labelled by department only) and recorded once (action ``overdue``). The clock is a
callable returning an aware datetime, so tests and demos move time (:class:`ManualClock`).

**Routing and polling.** Filing routes the objection at once (``ReceiveObjection``); a
department that is down gets it from the poller, which every ``poll_interval_s`` seconds
(default 60) routes what is unrouted and asks each routed, open objection's department for
its answer (``ObjectionAnswer``). One process polls among all sharing the store (every
worker of ``serve --workers N`` on one SQLite file, every host on PostgreSQL): the one the
store elects (:meth:`~gateway.objections.store.ObjectionStore.polls`, asked each round), so a
department gets each call once a round, not once per process; the others only refresh their
metrics, and take over at their next round once the poller is gone. A filing is still routed
at once by the process that took it. The mark does not wait for the department: it is set when
the objection is stored, before routing, and shown by the gateway whatever the department's
own ``disputed`` flag says.

**Outcomes.** corrected: the record changed at the source, the mark and the statement go;
confirmed: the mark goes, the statement stays; undetermined: the mark stays, with the
department's account (screened: an identifier in it is withheld). A repair approved stops the
record being shared (dropped from every answer) and screened (:meth:`ObjectionDesk.is_repaired`).

Why one module (some 800 lines): the desk is one object whose filing, routing, polling,
statements, repair checks and query marks share one store, one clock and one audit trail;
splitting it would pass all three around between modules that only make sense together.

Every step (filed, routed, answered, overdue, statement, repair refused or applied) is an
``objection`` audit record (:class:`gateway.audit.schema.ObjectionRecord`): the subject by its
keyed pseudonym, free text only as the free-text rule allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc

from gateway.audit.auditor import QueryAuditor
from gateway.audit.schema import ObjectionRecord
from gateway.auth.identity import Caller
from gateway.auth.registry import AgencyKind
from gateway.domain.catalog import Catalog
from gateway.domain.identifiers import IdentifierError, validate_subject
from gateway.errors import (
    AuditUnavailableError,
    CallerError,
    DepartmentUnavailableError,
    GatewayError,
    InvalidArgumentError,
    InvalidIdentifierError,
    NotFoundError,
    PermissionDeniedError,
    UpstreamError,
)
from gateway.federation.client import DepartmentClient, DepartmentState
from gateway.objections.repair import RepairPolicy
from gateway.objections.store import (
    Marks,
    ObjectionFilter,
    ObjectionRow,
    ObjectionStore,
    OpenObjectionExists,
)
from gateway.pipeline.freetext import WITHHELD, holds_identifier, joined_identifier
from gateway.policy.consent import ConsentError, ConsentVerifier
from gateway.runtime.metrics import Metrics
from protos.credit.v1 import adapter_pb2, common_pb2

__all__ = [
    "ANSWER_DAYS",
    "BEIJING",
    "Filing",
    "ManualClock",
    "ObjectionDesk",
    "ObjectionExistsError",
    "RepairTooEarlyError",
    "SubjectMarks",
    "utc_now",
]

log = logging.getLogger(__name__)

#: Beijing time (UTC+8, no daylight saving): the calendar the deadlines are counted in.
BEIJING = dt.timezone(dt.timedelta(hours=8), "UTC+08:00")
#: Days a department has to answer (Decree 631 Art. 25).
ANSWER_DAYS = 20
MAX_GROUNDS = 1000
MAX_STATEMENT = 200
MAX_EVIDENCE = 16
MAX_RECORD_ID = 128
MAX_NOTE = 1000
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_OUTCOME_NAMES: Mapping[int, str] = {
    common_pb2.OBJECTION_OUTCOME_PENDING: "pending",
    common_pb2.OBJECTION_OUTCOME_CORRECTED: "corrected",
    common_pb2.OBJECTION_OUTCOME_CONFIRMED: "confirmed",
    common_pb2.OBJECTION_OUTCOME_UNDETERMINED: "undetermined",
    common_pb2.OBJECTION_OUTCOME_REPAIR_APPROVED: "repair_approved",
    common_pb2.OBJECTION_OUTCOME_REPAIR_REFUSED: "repair_refused",
    common_pb2.OBJECTION_OUTCOME_NO_SUCH_RECORD: "no_such_record",
}
#: Outcome name -> wire enum.
OUTCOME_CODES: Mapping[str, common_pb2.ObjectionOutcome.ValueType] = {
    v: common_pb2.ObjectionOutcome.ValueType(k) for k, v in _OUTCOME_NAMES.items()
}
#: What each kind may be answered with.
_ANSWERS = {
    "objection": frozenset({"corrected", "confirmed", "undetermined"}),
    "repair": frozenset({"repair_approved", "repair_refused"}),
}
_SUBJECT_CODE = {
    "enterprise": common_pb2.SUBJECT_TYPE_ENTERPRISE,
    "person": common_pb2.SUBJECT_TYPE_PERSON,
}
_KIND_CODE = {
    "objection": common_pb2.OBJECTION_KIND_OBJECTION,
    "repair": common_pb2.OBJECTION_KIND_REPAIR,
}


def utc_now() -> dt.datetime:
    """The real clock: now, in UTC."""
    return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock a test or a demo moves: ``clock.advance(days=21)``."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or utc_now()

    def __call__(self) -> dt.datetime:
        """The time it shows."""
        return self.now

    def advance(self, **delta: float) -> None:
        """Move forward by ``datetime.timedelta(**delta)``."""
        self.now += dt.timedelta(**delta)


class ObjectionExistsError(CallerError):
    """Another objection (or repair application) against the record is still open."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "OBJECTION_OPEN"


class RepairTooEarlyError(CallerError):
    """The minimum publication period for the record's severity has not run yet."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "REPAIR_TOO_EARLY"


@dataclass(frozen=True, slots=True)
class Filing:
    """An objection or repair application as an agency sends it (not yet validated).
    ``subject_type`` is ``"enterprise"`` or ``"person"``."""

    request_id: str
    subject_type: str
    subject_id: str
    department: str
    dataset: str
    record_id: str
    grounds: str
    evidence_sha256: tuple[str, ...] = ()
    consent_token: str = ""
    statement: str = ""


def _screen(name: str, text: str, limit: int, *, required: bool = False) -> str:
    """Free text a caller wrote: bounded, and refused if it holds an identifier (it is
    shown with the record and recorded; the free-text rule)."""
    if required and not text.strip():
        raise InvalidArgumentError(name, "required")
    if len(text) > limit:
        raise InvalidArgumentError(name, f"at most {limit} characters")
    if holds_identifier(text):
        raise InvalidArgumentError(
            name, "must not contain an identity number or credit code", reason="HOLDS_IDENTIFIER"
        )
    return text


def _field_value(v: common_pb2.FieldValue) -> object:
    kind = v.WhichOneof("kind")
    return None if kind is None else getattr(v, kind)


class SubjectMarks:
    """The gateway's own marks for one subject, read once per query
    (:meth:`ObjectionDesk.for_subject`)."""

    __slots__ = ("_marks", "_subject_key")

    def __init__(self, marks: Marks, subject_key: str) -> None:
        self._marks = marks
        self._subject_key = subject_key

    def mark(
        self, department: str, dataset: str, records: Sequence[common_pb2.Record]
    ) -> list[common_pb2.Record]:
        """Drop records whose repair was approved; set the dispute mark and the statement
        from the gateway's own store (a department's ``dispute`` and ``statement`` are
        replaced; its own ``disputed`` flag is kept). Returns the records to disclose."""
        marks = self._marks
        kept: list[common_pb2.Record] = []
        for rec in records:
            rec.ClearField("dispute")
            rec.statement = ""
            if marks.is_repaired(department, dataset, rec.record_id):
                continue
            m = marks.by_record.get((department, dataset, rec.record_id, self._subject_key))
            if m is not None:
                if m.disputed:
                    rec.disputed = True
                    d = rec.dispute
                    d.objection_id, d.filed_on, d.due_on = m.objection_id, m.filed_on, m.due_on
                    d.outcome = OUTCOME_CODES[m.outcome]
                    d.department_note = m.note
                rec.statement = m.statement
            kept.append(rec)
        return kept


class ObjectionDesk:
    """See the module docstring. Methods taking a :class:`Caller` raise GatewayErrors that
    the gRPC edge maps; refusals are recorded here (``err.audited``)."""

    def __init__(
        self,
        store: ObjectionStore,
        *,
        catalog: Callable[[], Catalog],
        clients: Mapping[str, DepartmentClient],
        pseudonym: Callable[[str, str], str],
        repair: RepairPolicy,
        audit: QueryAuditor | None = None,
        consents: Callable[[], ConsentVerifier | None] = lambda: None,
        clock: Callable[[], dt.datetime] = utc_now,
        metrics: Metrics | None = None,
        poll_interval_s: float = 60.0,
        route_timeout_s: float = 2.0,
    ) -> None:
        self.store = store
        self._catalog = catalog
        self._clients = clients
        self._pseudonym = pseudonym
        self.repair = repair
        self._audit = audit
        self._consents = consents
        #: The clock deadlines are counted by; replace it to move time in a test.
        self.clock = clock
        self._metrics = metrics
        self.poll_interval_s = poll_interval_s
        self._route_timeout_s = route_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._overdue_departments: set[str] = set()

    # --- time ---------------------------------------------------------------------------

    def today(self) -> dt.date:
        """Today in Beijing time, by :attr:`clock`."""
        return self.clock().astimezone(BEIJING).date()

    def is_overdue(self, row: ObjectionRow) -> bool:
        """Unanswered after its due day (Beijing time, by :attr:`clock`)."""
        return row.overdue(self.today().isoformat())

    # --- the query path -------------------------------------------------------------------

    def for_subject(self, subject_key: str) -> SubjectMarks:
        """Step 6 for objections, for one query: the marks read once (one version check
        of the store), whatever the number of datasets answered, for the subject whose
        pseudonym is ``subject_key`` (the query path computes it once per query, with the
        same function this desk was given). Raises ObjectionStoreError (fails closed: an
        answer that could miss a mark is not given)."""
        marks = self.store.marks()
        return SubjectMarks(marks, subject_key if marks.by_record else "")

    def mark(
        self,
        department: str,
        dataset: str,
        subject: tuple[str, str],
        records: Sequence[common_pb2.Record],
    ) -> tuple[list[common_pb2.Record], int]:
        """:meth:`for_subject` then :meth:`SubjectMarks.mark`, for one dataset."""
        kept = self.for_subject(self._pseudonym(*subject)).mark(department, dataset, records)
        return kept, len(records) - len(kept)

    def is_repaired(self, department: str, dataset: str, record_id: str) -> bool:
        """Whether credit repair of the record was approved: it is no longer shared or
        screened. For the screening engine (issue 15). Raises ObjectionStoreError."""
        return self.store.marks().is_repaired(department, dataset, record_id)

    # --- recording ------------------------------------------------------------------------

    async def _record(self, action: str, actor: str, **fields: Any) -> None:
        if self._audit is None:
            return
        free = self._audit.free_text
        for name in ("record", "grounds", "note", "statement"):
            if fields.get(name) is not None:
                fields[name] = free(fields[name])
        record = ObjectionRecord(action=action, actor=actor, **fields).to_json()
        kind = record.pop("kind")
        await self._audit.append_event(kind, record)

    async def _refused(self, action: str, actor: str, err: GatewayError, **fields: Any) -> None:
        with contextlib.suppress(GatewayError):
            await self._record(action, actor, outcome="refused", error=err.reason, **fields)
            err.audited = self._audit is not None

    def _require_log(self) -> None:
        if self._audit is not None and not self._audit.available:
            raise AuditUnavailableError("the audit log cannot be written; nothing was filed")

    @staticmethod
    def _row_fields(row: ObjectionRow) -> dict[str, Any]:
        return {
            "objection_id": row.objection_id,
            "objection_kind": row.kind,
            "subject": row.subject_key,
            "department": row.department,
            "dataset": row.dataset,
            "record": row.record_id,
        }

    # --- filing ---------------------------------------------------------------------------

    def _validate(self, f: Filing, kind: str) -> tuple[str, str]:
        """Checks every field; returns (request id, normalised subject id)."""
        try:
            request_id = str(uuid.UUID(f.request_id))
        except ValueError:
            raise InvalidArgumentError("request_id", "must be a UUID") from None
        try:
            subject_id = validate_subject(f.subject_type, f.subject_id)
        except IdentifierError as exc:
            raise InvalidIdentifierError(exc.field, exc.problem) from None
        ds = self._catalog().dataset(f.department, f.dataset)
        if ds is None:
            raise InvalidArgumentError(
                "dataset", "not a dataset of the published catalog", reason="UNKNOWN_DATASET"
            )
        if f.subject_type not in ds.subject_types:
            raise InvalidArgumentError("subject.type", "the dataset holds no such subjects")
        if not f.record_id or len(f.record_id) > MAX_RECORD_ID or not f.record_id.isprintable():
            raise InvalidArgumentError("record_id", f"1 to {MAX_RECORD_ID} printable characters")
        _screen("grounds", f.grounds, MAX_GROUNDS, required=True)
        _screen("statement", f.statement, MAX_STATEMENT)
        if f.statement and joined_identifier((f.grounds, f.statement)):
            # Both are recorded and sent on: read together they must not make one either.
            raise InvalidArgumentError(
                "statement",
                "together with the grounds it makes an identity number or credit code",
                reason="HOLDS_IDENTIFIER",
            )
        if len(f.evidence_sha256) > MAX_EVIDENCE or not all(
            _HEX64.match(d) for d in f.evidence_sha256
        ):
            raise InvalidArgumentError(
                "evidence_sha256", f"at most {MAX_EVIDENCE} SHA-256 digests, 64 lower-case hex"
            )
        if kind == "repair" and self.repair.rule(f.department, f.dataset) is None:
            raise InvalidArgumentError(
                "dataset",
                "not public credit information (penalties, list entries): credit repair does"
                " not apply; file an objection instead",
                reason="NOT_REPAIRABLE",
            )
        return request_id, subject_id

    def _authorise(self, caller: Caller, f: Filing, subject_id: str) -> tuple[str, str]:
        """(via, consent id): ``self`` for the subject's own self-service agency, ``consent``
        for an agency holding the subject's consent. Raises PermissionDeniedError."""
        if caller.kind == AgencyKind.SUBJECT_SELF_SERVICE.value:
            if caller.subject_type != f.subject_type or caller.subject_id != subject_id:
                raise PermissionDeniedError(
                    "a self-service agency acts for its own subject only", reason="OTHER_SUBJECT"
                )
            return "self", ""
        verifier = self._consents()
        if not f.consent_token or verifier is None:
            raise PermissionDeniedError(
                "an agency files for a subject only with the subject's consent token",
                reason="CONSENT_REQUIRED",
            )
        try:
            consent = verifier.verify(f.consent_token)
        except ConsentError as exc:
            raise PermissionDeniedError(
                f"the consent does not verify ({exc.problem.value})", reason="CONSENT_INVALID"
            ) from None
        ds = self._catalog().dataset(f.department, f.dataset)
        tiers = {fld.tier for fld in ds.fields.values()} if ds is not None else set()
        if (
            consent.grantee != caller.agency_id
            or consent.subject_type != f.subject_type
            or consent.subject_id != subject_id
            or not any(consent.covers(f.department, f.dataset, t) for t in tiers)
        ):
            raise PermissionDeniedError(
                "the consent is not this subject's, not granted to this agency, or does not"
                " cover the record's dataset",
                reason="CONSENT_MISMATCH",
            )
        return "consent", consent.cid

    async def file(self, caller: Caller, f: Filing) -> ObjectionRow:
        """File an objection (see the module docstring). Raises InvalidArgumentError,
        PermissionDeniedError, ObjectionExistsError, AuditUnavailableError,
        ObjectionStoreError."""
        return await self._file(caller, f, "objection")

    async def apply_repair(self, caller: Caller, f: Filing) -> ObjectionRow:
        """Apply for credit repair: the record is looked up at its department (its
        publication day and severity, never shown), the minimum publication period checked,
        then the application stored and routed like an objection. Raises as :meth:`file`,
        and RepairTooEarlyError, NotFoundError (NO_SUCH_RECORD), an UpstreamError while the
        department cannot be asked."""
        return await self._file(caller, replace(f, statement=""), "repair")

    async def _file(self, caller: Caller, f: Filing, kind: str) -> ObjectionRow:
        action = "file" if kind == "objection" else "repair_apply"
        fields: dict[str, Any] = {"objection_kind": kind}
        try:
            self._require_log()
            request_id, subject_id = self._validate(f, kind)
            subject_key = self._pseudonym(f.subject_type, subject_id)
            fields |= {
                "subject": subject_key,
                "department": f.department,
                "dataset": f.dataset,
                "record": f.record_id,
            }
            via, consent_id = self._authorise(caller, f, subject_id)
            fields |= {"via": via, "consent_id": consent_id or None}
            severity = allowed_from = ""
            if kind == "repair":
                severity, allowed_from = await self._repair_check(caller, f, subject_id)
                fields |= {"severity": severity, "allowed_from": allowed_from}
            now = self.clock()
            filed_on = now.astimezone(BEIJING).date()
            row = ObjectionRow(
                objection_id=str(uuid.uuid4()),
                request_key=f"{caller.agency_id}:{request_id}",
                kind=kind,
                subject_key=subject_key,
                subject_type=f.subject_type,
                subject_id=subject_id,
                department=f.department,
                dataset=f.dataset,
                record_id=f.record_id,
                grounds=f.grounds,
                evidence_sha256=tuple(f.evidence_sha256),
                consent_id=consent_id,
                filed_by=caller.agency_id,
                filed_at=now.timestamp(),
                filed_on=filed_on.isoformat(),
                due_on=(filed_on + dt.timedelta(days=ANSWER_DAYS)).isoformat(),
                statement=f.statement,
                severity=severity,
                repair_allowed_from=allowed_from,
            )
            try:
                row, newly = await asyncio.to_thread(self.store.create, row)
            except OpenObjectionExists as exc:
                raise ObjectionExistsError(
                    "an objection against this record is already open",
                    metadata={"objection_id": exc.existing},
                ) from None
            same = (kind, subject_key, f.department, f.dataset, f.record_id)
            if (
                not newly
                and (row.kind, row.subject_key, row.department, row.dataset, row.record_id) != same
            ):
                # A retry must be the same filing: a request id reused for another subject
                # (a kiosk serves many) must not hand back someone else's objection.
                raise InvalidArgumentError(
                    "request_id", "already used for another objection", reason="REQUEST_ID_REUSED"
                )
        except GatewayError as err:
            await self._refused(action, caller.agency_id, err, **fields)
            raise
        if newly:
            await self._record(
                action,
                caller.agency_id,
                outcome="ok",
                **fields | self._row_fields(row),
                grounds=row.grounds,
                evidence_sha256=row.evidence_sha256,
                statement=row.statement or None,
                filed_on=row.filed_on,
                due_on=row.due_on,
            )
            # At once if the department is there; the poller retries otherwise.
            await self._route(row)
            self._update_metrics_soon()
            fresh = await asyncio.to_thread(self.store.get, row.objection_id)
            row = fresh or row
        return row

    async def _repair_check(self, caller: Caller, f: Filing, subject_id: str) -> tuple[str, str]:
        rule = self.repair.rule(f.department, f.dataset)
        assert rule is not None  # _validate refused the others
        client = self._clients.get(f.department)
        if client is None or client.state is not DepartmentState.SERVING:
            raise DepartmentUnavailableError(
                f"department {f.department} is unavailable; apply again later"
            )
        req = adapter_pb2.LookupRequest(
            request_id=str(uuid.uuid4()), agency_id=caller.agency_id, purpose="credit_repair"
        )
        req.subject.type = _SUBJECT_CODE[f.subject_type]
        req.subject.id = subject_id
        req.wanted.add(dataset=f.dataset, fields=rule.fields)
        answer = await client.lookup(req, self._route_timeout_s)
        for result in answer.results:
            for rec in result.records:
                if result.dataset == f.dataset and rec.record_id == f.record_id:
                    values = {k: _field_value(v) for k, v in rec.fields.items()}
                    break
            else:
                continue
            break
        else:
            raise NotFoundError(
                "the subject has no such record in this dataset", reason="NO_SUCH_RECORD"
            )
        published = values.get(rule.published_on)
        try:
            published_on = dt.date.fromisoformat(str(published))
        except ValueError:
            raise NotFoundError(
                "the record has no publication day to count from", reason="NO_PUBLICATION_DAY"
            ) from None
        severity = rule.severity_of(values)
        allowed = self.repair.allowed_from(severity, published_on)
        if self.today() < allowed:
            err = RepairTooEarlyError(
                f"the minimum publication period for a {severity} record has not run: repair"
                f" may be applied for from {allowed.isoformat()}",
                metadata={"severity": severity, "allowed_from": allowed.isoformat()},
            )
            raise err
        return severity, allowed.isoformat()

    # --- reading and statements -----------------------------------------------------------

    def _visible(self, caller: Caller, row: ObjectionRow | None) -> ObjectionRow:
        # A self-service agency speaks for many subjects, one per token: it sees the
        # subject's objections only, whoever filed them; any other agency those it filed.
        if row is not None:
            if caller.kind == AgencyKind.SUBJECT_SELF_SERVICE.value:
                own = caller.subject_id and self._pseudonym(caller.subject_type, caller.subject_id)
                if own == row.subject_key:
                    return row
            elif row.filed_by == caller.agency_id:
                return row
        raise NotFoundError("no such objection")

    @staticmethod
    def _objection_id(text: str) -> str:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise InvalidArgumentError("objection_id", "must be a UUID") from None

    async def status(self, caller: Caller, objection_id: str) -> ObjectionRow:
        """One objection, for its filer or its subject. Raises NotFoundError,
        InvalidArgumentError, ObjectionStoreError."""
        oid = self._objection_id(objection_id)
        return self._visible(caller, await asyncio.to_thread(self.store.get, oid))

    async def list(
        self,
        caller: Caller,
        *,
        subject: tuple[str, str] | None = None,
        open_only: bool = False,
        overdue_only: bool = False,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[ObjectionRow], str]:
        """A page of the caller's objections (see the proto) and the next page's token
        ("" at the end). Raises InvalidArgumentError, PermissionDeniedError."""
        if not 0 <= page_size <= 100:
            raise InvalidArgumentError("page_size", "from 1 to 100 (0: 100)")
        before = None
        if page_token:
            at, sep, oid = page_token.partition(":")
            try:
                before = (float(at), self._objection_id(oid))
            except ValueError:
                raise InvalidArgumentError("page_token", "not a token this service gave") from None
            if not sep:
                raise InvalidArgumentError("page_token", "not a token this service gave")
        subject_key = None
        if subject is not None:
            try:
                sid = validate_subject(*subject)
            except IdentifierError as exc:
                raise InvalidIdentifierError(exc.field, exc.problem) from None
            subject_key = self._pseudonym(subject[0], sid)
        where = ObjectionFilter(
            open_only=open_only,
            overdue_on=self.today().isoformat() if overdue_only else None,
            limit=page_size or 100,
            before=before,
        )
        if caller.kind == AgencyKind.SUBJECT_SELF_SERVICE.value:
            if not caller.subject_id:
                raise PermissionDeniedError(
                    "this self-service token names no subject", reason="OTHER_SUBJECT"
                )
            own = self._pseudonym(caller.subject_type, caller.subject_id)
            if subject_key is not None and subject_key != own:
                raise PermissionDeniedError(
                    "a self-service agency sees its own subject only", reason="OTHER_SUBJECT"
                )
            where = replace(where, subject_key=own)
        else:
            where = replace(where, filed_by=caller.agency_id, subject_key=subject_key)
        rows = await asyncio.to_thread(self.store.find, where)
        token = ""
        if len(rows) == where.limit:
            token = f"{rows[-1].filed_at!r}:{rows[-1].objection_id}"
        return rows, token

    async def add_statement(self, caller: Caller, objection_id: str, text: str) -> ObjectionRow:
        """Attach (``""``: remove) the subject's statement to an objection's record.
        Raises NotFoundError, InvalidArgumentError (HOLDS_IDENTIFIER), AuditUnavailableError."""
        fields: dict[str, Any] = {}
        try:
            self._require_log()
            row = await self.status(caller, objection_id)
            fields = self._row_fields(row)
            if row.kind != "objection":
                raise InvalidArgumentError("objection_id", "a repair application has no statement")
            _screen("statement", text, MAX_STATEMENT)
            row = await asyncio.to_thread(self.store.set_statement, row.objection_id, text)
        except GatewayError as err:
            await self._refused("statement", caller.agency_id, err, **fields)
            raise
        await self._record(
            "statement", caller.agency_id, outcome="ok", statement=text or None, **fields
        )
        return row

    # --- routing and polling --------------------------------------------------------------

    def _client(self, department: str) -> DepartmentClient | None:
        client = self._clients.get(department)
        if client is None or client.state is not DepartmentState.SERVING:
            return None
        return client

    async def _route(self, row: ObjectionRow) -> None:
        """Hand ``row`` to its department; on a failure it stays unrouted (the poller tries
        again). A department holding no such record closes it as ``no_such_record``."""
        client = self._client(row.department)
        if client is None or not row.subject_id:
            return
        req = adapter_pb2.ReceiveObjectionRequest(
            objection_id=row.objection_id,
            kind=_KIND_CODE[row.kind],
            dataset=row.dataset,
            record_id=row.record_id,
            grounds=row.grounds,
            evidence_sha256=row.evidence_sha256,
            filed_on=row.filed_on,
            due_on=row.due_on,
        )
        req.subject.type = _SUBJECT_CODE[row.subject_type]
        req.subject.id = row.subject_id
        try:
            await client.receive_objection(req, self._route_timeout_s)
        except UpstreamError as err:
            if err.metadata.get("department_code") == grpc.StatusCode.NOT_FOUND.name:
                await self._answered(row, "no_such_record", self.today().isoformat(), "")
                return
            log.warning(
                "objection not routed yet",
                extra={
                    "objection_id": row.objection_id,
                    "department": row.department,
                    "reason": err.reason,
                },
            )
            return
        if await asyncio.to_thread(self.store.routed, row.objection_id, self.clock().timestamp()):
            await self._record("routed", "gateway", outcome="ok", **self._row_fields(row))

    async def _answered(self, row: ObjectionRow, outcome: str, on: str, note: str) -> None:
        # The department's words are shown with the record: an identifier in them is withheld.
        note = note[:MAX_NOTE]
        if holds_identifier(note):
            note = WITHHELD
        if await asyncio.to_thread(self.store.answered, row.objection_id, outcome, on, note):
            await self._record(
                "answered",
                "gateway",
                outcome="ok",
                answer=outcome,
                answered_on=on,
                note=note or None,
                due_on=row.due_on,
                **self._row_fields(row),
            )

    async def _ask(self, row: ObjectionRow) -> None:
        client = self._client(row.department)
        if client is None:
            return
        try:
            answer = await client.objection_answer(row.objection_id, self._route_timeout_s)
        except UpstreamError as err:
            log.warning(
                "objection answer not read",
                extra={
                    "objection_id": row.objection_id,
                    "department": row.department,
                    "reason": err.reason,
                },
            )
            return
        outcome = _OUTCOME_NAMES.get(answer.outcome, "")
        if outcome == "pending":
            return
        if outcome not in _ANSWERS[row.kind]:
            log.warning(
                "department answered with an outcome that does not fit; ignored",
                extra={"objection_id": row.objection_id, "department": row.department},
            )
            return
        await self._answered(
            row, outcome, answer.answered_on or self.today().isoformat(), answer.note
        )

    async def poll_once(self) -> None:
        """One round: where this process is the elected poller (:meth:`ObjectionStore.polls`),
        route what is unrouted, read answers and notice what became overdue; everywhere,
        refresh the metrics (gauges read from the shared store, so every process shows the
        same). A process that cannot tell whether it is the poller (the store failed) does
        not poll this round: another may be. Never raises for one objection's failure."""
        async with self._poll_lock:
            if not await self._elected():
                rows = await asyncio.to_thread(self.store.unfinished)
                self._set_metrics(self._overdue_counts(rows), rows)
                return
            rows = await asyncio.to_thread(self.store.unfinished)
            for row in rows:
                try:
                    if row.routed_at is None:
                        await self._route(row)
                    elif row.open:
                        await self._ask(row)
                except GatewayError as err:
                    log.warning("objection poll failed", extra={"reason": err.reason})
            await self._notice_overdue()

    async def _elected(self) -> bool:
        try:
            return await asyncio.to_thread(self.store.polls)
        except GatewayError as err:
            log.warning("objection poller election failed", extra={"reason": err.reason})
            return False

    def _overdue_counts(self, rows: Iterable[ObjectionRow]) -> dict[str, int]:
        """Overdue objections per department among ``rows`` (Beijing today)."""
        today = self.today().isoformat()
        counts: dict[str, int] = {}
        for row in rows:
            if row.overdue(today):
                counts[row.department] = counts.get(row.department, 0) + 1
        return counts

    async def _notice_overdue(self) -> None:
        today = self.today().isoformat()
        rows = await asyncio.to_thread(self.store.unfinished)
        for row in rows:
            if not row.overdue(today):
                continue
            if await asyncio.to_thread(self.store.note_overdue, row.objection_id):
                with contextlib.suppress(GatewayError):
                    await self._record(
                        "overdue",
                        "gateway",
                        outcome="ok",
                        due_on=row.due_on,
                        **self._row_fields(row),
                    )
        self._set_metrics(self._overdue_counts(rows), rows)

    def _set_metrics(self, overdue: Mapping[str, int], rows: Iterable[ObjectionRow]) -> None:
        if self._metrics is None:
            return
        open_counts: dict[str, int] = {}
        for row in rows:
            if row.open:
                open_counts[row.department] = open_counts.get(row.department, 0) + 1
        for dept in self._overdue_departments | set(overdue) | set(open_counts):
            self._metrics.objections_overdue.labels(dept).set(overdue.get(dept, 0))
            self._metrics.objections_open.labels(dept).set(open_counts.get(dept, 0))
        self._overdue_departments |= set(overdue) | set(open_counts)

    def _update_metrics_soon(self) -> None:
        self._wake.set()

    # --- the background task --------------------------------------------------------------

    def start(self) -> None:
        """Start the poller (every :attr:`poll_interval_s` seconds, and soon after a filing)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("objection poll round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def stop(self) -> None:
        """Stop the poller and close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.store.close()
