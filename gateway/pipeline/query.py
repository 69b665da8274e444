"""The query pipeline's run: :class:`QueryPipeline` strings the steps together.

    1 authenticate   the caller (certificate + token; gateway.auth.identity seam), done
                     by the gRPC entry point, :class:`gateway.api.query.QueryService`
    2 validate       identifier, purpose, mode, datasets, request id
      limit          the agency's rate and daily limits (a RateLimiter)
      legal basis    the cited basis, if any: may this agency cite it (a BasisResolver)
    3 decide         which departments, datasets and fields (a Decider)
    4 meter          reserve the price of what was granted (a Meter)
    5 fan out        ask only for the allowed fields, concurrently
    6 filter         drop what was not asked, age out old negatives
    7 settle         charge what was delivered, release the rest
    8 audit          append the record durably before answering
    9 respond

Every failure is a :class:`~gateway.errors.GatewayError`; the entry point maps it with
:func:`~gateway.errors.abort`, and anything else is logged with its traceback and
reaches the client as a bare INTERNAL.

Why one module (some 650 lines): the steps are one request's run, read top to bottom,
and share the pipeline's per-process state (label children bound once, the catalog's
tiers, the booking an undo must see, the one pseudonym per query); split, each part
would reach into the others' private state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from gateway.auth.identity import Caller, CallerSource
from gateway.billing import (
    Meter,
    Reservation,
    delivered_lines,
    granted_lines,
    mode_name,
    query_billing,
)
from gateway.domain import names
from gateway.domain.catalog import Catalog, Tier
from gateway.errors import AuditUnavailableError, GatewayError, InvalidArgumentError
from gateway.federation import DepartmentClient, fan_out
from gateway.pipeline.decision import (
    BasisResolver,
    ConsentKeeper,
    Decider,
    Decision,
    QueryFacts,
    ResolvedBasis,
    with_consent_counted,
)
from gateway.pipeline.disclosure import ageing_cutoff, filter_records
from gateway.pipeline.limits import RateLimiter
from gateway.pipeline.validation import Validator, ValidQuery
from gateway.runtime.metrics import Metrics
from protos.credit.v1 import adapter_pb2, common_pb2, query_pb2

if TYPE_CHECKING:
    from gateway.audit.schema import QueryBilling

__all__ = [
    "AuditSink",
    "QueryPipeline",
    "QueryReceipt",
    "RecordMarker",
    "SubjectMarker",
    "Validated",
    "unkeyed_pseudonym",
]

log = logging.getLogger("credit_gateway.query")

#: Time kept back from the caller's deadline for settling, the durable audit
#: append (a group-commit fsync) and the reply: 200 ms, or a fifth of a short
#: deadline.
_DEADLINE_RESERVE_S = 0.2
_DEADLINE_RESERVE_SHARE = 0.2

_SUBJECT_TYPE = names.SUBJECT_TYPE_CODE
_STATUS_NAMES = names.STATUS
_REASON_NAMES = names.REASON


@dataclass(slots=True)
class _Booking:
    """How far one query's booking got, for undoing it. The audit append (step
    8) runs as a task a cancelled caller cannot stop half-way, so the undo knows
    whether the settlement is on the record. (The settle needs no such care:
    ledger calls run in order on one thread, so an undo always comes after it.)"""

    record: asyncio.Future[QueryReceipt | None] | None = None

    async def on_record(self) -> bool:
        """Wait for the append to finish; True if the query record is durable."""
        if self.record is None:
            return False
        try:
            await self.record
        except BaseException:
            return False
        return True


@dataclass(slots=True)
class Validated:
    """What step 2 made of a request (the query and its subject's pseudonym), kept by the
    entry point so that the record of a refusal takes it instead of validating and
    pseudonymising again. ``query`` and ``subject_key`` are unset until validation
    passed; validation is the first thing an authenticated caller's query meets, so for
    one it has run, whatever it found: a request it refused is recorded as the request
    came (no query, no subject), not validated twice."""

    query: ValidQuery | None = None
    subject_key: str | None = None


@dataclass(frozen=True, slots=True)
class QueryReceipt:
    """Where a query's audit record sits in the log: origin, leaf index and leaf hash."""

    origin: str
    index: int
    leaf_hash: bytes
    #: SHA-256 of the response as recorded (its receipt left empty).
    response_digest: bytes = b""


class AuditSink(Protocol):
    """Step 8: must return only once the record is durable."""

    @property
    def available(self) -> bool:
        """False while appends are known to fail: the query is refused before
        any department is asked or anything is booked."""
        ...

    async def append_query(
        self,
        query: ValidQuery | None,
        caller: Caller | None,
        request: query_pb2.QueryRequest,
        response: query_pb2.QueryResponse | None,
        error: GatewayError | None,
        *,
        consent_id: str = "",
        consent_uses: int = 0,
        charge_fen: int = 0,
        billing: QueryBilling | None = None,
        allowed: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        legal_basis: str = "",
        confidential_until: str = "",
        subject_pseudonym: str | None = None,
    ) -> QueryReceipt | None:
        """Append the audit record of one query (answered or refused) and return its receipt.
        ``subject_pseudonym``: the subject's keyed pseudonym when the caller has it already
        (None: the sink computes it from ``query``).

        Raises:
            AuditUnavailableError: the record could not be written.
        """


class SubjectMarker(Protocol):
    """One query's marks (:class:`gateway.objections.desk.SubjectMarks`)."""

    def mark(
        self, department: str, dataset: str, records: Sequence[common_pb2.Record]
    ) -> list[common_pb2.Record]:
        """The records to disclose, marked; those dropped after an approved repair left out."""


class RecordMarker(Protocol):
    """Step 6 for objections (:meth:`gateway.objections.ObjectionDesk.for_subject`): the
    gateway's own dispute marks and statements, and records dropped after an approved
    credit repair, read once per query."""

    def for_subject(self, subject_key: str) -> SubjectMarker:
        """The marks as of now for the subject whose pseudonym (the query path's, one per
        query) is ``subject_key``. Raises a GatewayError when they cannot be read (the
        query fails rather than miss a mark)."""


def safe_request_id(request: query_pb2.QueryRequest) -> str:
    """The request id if it is a UUID, else a placeholder: a caller's free text
    (an identity number by mistake, say) never reaches a log or the audit log."""
    try:
        return str(uuid.UUID(request.request_id))
    except ValueError:
        return "invalid"


def unkeyed_pseudonym(subject_type: str, subject_id: str) -> str:
    """Without an audit log (development only) there is no pseudonym key: an unkeyed hash
    (hex SHA-256) still keeps the raw identifier out of the ledger and the marks."""
    return hashlib.sha256(f"{subject_type}:{subject_id}".encode()).hexdigest()


class QueryPipeline:
    """The query path for one request, step by step (validate, decide, reserve, fan out,
    disclose, record), with its metrics; :class:`gateway.api.query.QueryService` is its
    gRPC entry point."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        validator: Validator,
        decider: Decider,
        authenticator: CallerSource,
        clients: Mapping[str, DepartmentClient],
        metrics: Metrics,
        audit: AuditSink | None = None,
        meter: Meter | None = None,
        pseudonym: Callable[[str, str], str] | None = None,
        default_timeout_s: float = 3.0,
        today: Callable[[], dt.date] = dt.date.today,
        limiter: RateLimiter | None = None,
        legal_bases: BasisResolver | None = None,
        consent_archive: ConsentKeeper | None = None,
        marker: RecordMarker | None = None,
    ) -> None:
        self._catalog = catalog
        self._legal = legal_bases
        self._consents = consent_archive
        self._marker = marker
        self._limiter = limiter
        self._validator = validator
        self._decider = decider
        self._auth = authenticator
        self._clients = clients
        self._metrics = metrics
        self._audit = audit
        self._meter = meter
        self._pseudonym = pseudonym or unkeyed_pseudonym
        # Only the audit log's keyed pseudonym may stand in the record; an unkeyed one
        # (no key given) is never handed to the sink.
        self._keyed = pseudonym is not None
        self._default_timeout_s = default_timeout_s
        self._today = today
        # Label children bound once: the hot path only increments.
        self._m_queries: dict[tuple[str, str], Any] = {}
        self._m_withheld = {
            (t.value, r): metrics.withheld_fields.labels(t.value, n)
            for t in Tier
            for r, n in _REASON_NAMES.items()
        }
        self._dept_order: dict[str, int] = {}
        self._m_dept: dict[tuple[str, int], Any] = {}
        self._m_dept_latency: dict[str, Any] = {}
        self._m_dropped: dict[str, Any] = {}
        self._m_aged: dict[str, Any] = {}
        self._tier: dict[tuple[str, str, str], str] = {}
        self._bind_catalog(catalog)

    def _bind_catalog(self, catalog: Catalog) -> None:
        """Bind ``catalog``'s departments' label children and tiers. The maps only grow:
        a query decided under the previous catalog (a department retired meanwhile)
        still finds its entries; departments retired sort after the catalog's."""
        metrics = self._metrics
        order = {d: i for i, d in enumerate(catalog.departments)}
        for d in self._dept_order:
            order.setdefault(d, len(order))
        for d in catalog.departments:
            for s, name in _STATUS_NAMES.items():
                self._m_dept.setdefault((d, s), metrics.department_requests.labels(d, name))
            self._m_dept_latency.setdefault(d, metrics.department_latency.labels(d))
            self._m_dropped.setdefault(d, metrics.unrequested_fields.labels(d))
            self._m_aged.setdefault(d, metrics.aged_out_records.labels(d))
        tiers = dict(self._tier)
        tiers.update(
            ((ds.department, ds.name, f.name), f.tier.value)
            for ds in catalog.datasets()
            for f in ds.fields.values()
        )
        self._tier = tiers
        self._dept_order = order

    def use_catalog(self, catalog: Catalog, validator: Validator) -> None:
        """Hot switch: the next query is validated against ``catalog`` (a policy version
        added or retired departments or datasets); queries under way finish as begun."""
        self._bind_catalog(catalog)
        self._validator = validator
        self._catalog = catalog

    async def _audit_refusal(
        self,
        caller: Caller | None,
        request: query_pb2.QueryRequest,
        error: GatewayError,
        seen: Validated | None = None,
    ) -> None:
        """Refusals are on the record too. Nothing is disclosed by a refusal, so
        a log failure here is logged and the caller still gets its error. ``seen``: what
        step 2 made of the request (:class:`Validated`). A refusal after validation takes
        the query as validated and its subject's pseudonym; one by validation itself is
        recorded without a query (the auditor then takes only the subject's type, the
        request id if it is a UUID and the free texts under the free-text rule), not
        validated again; only a refusal before validation ran (authentication) has the
        request validated here, once."""
        if self._audit is None or isinstance(error, AuditUnavailableError):
            return
        query = subject_key = None
        if seen is not None:
            query, subject_key = seen.query, seen.subject_key
        else:
            with contextlib.suppress(GatewayError):
                query = self._validator.validate(request)
        try:
            await self._audit.append_query(
                query,
                caller,
                request,
                None,
                error,
                subject_pseudonym=subject_key if self._keyed and query is not None else None,
            )
        except Exception:
            log.exception(
                "could not audit a refusal", extra={"request_id": safe_request_id(request)}
            )

    def _finish(self, caller: Caller | None, outcome: str, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        agency = caller.agency_id if caller else "unauthenticated"
        child = self._m_queries.get((agency, outcome))
        if child is None:
            # Agencies are a registered, bounded set; outcomes a closed list.
            child = self._m_queries[(agency, outcome)] = self._metrics.queries.labels(
                agency, "Query", outcome
            )
        child.inc()
        self._metrics.query_latency.observe(elapsed)
        log.info(
            "query",
            extra={
                "request_id": request_id,
                "agency": agency,
                "outcome": outcome,
                "latency_ms": round(elapsed * 1000, 2),
            },
        )

    async def _run(
        self,
        caller: Caller,
        request: query_pb2.QueryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        seen: Validated | None = None,
    ) -> tuple[query_pb2.QueryResponse, str]:
        """Steps 2 to 9 for an authenticated caller. ``seen`` receives the validated
        query and its subject's pseudonym as soon as they are known, for the record of
        a refusal that comes later. Raises the step's GatewayError."""
        query = self._validator.validate(request)
        # The subject's pseudonym, once per query: the limiter's distinct-subject counter,
        # the booking's request digest, the consent archive, the objection marks and the
        # audit record all take this one value.
        subject_key = self._pseudonym(query.subject_type, query.subject_id)
        if seen is not None:
            seen.query, seen.subject_key = query, subject_key
        if self._limiter is not None:
            # Before deciding, booking or asking anyone: raises RateLimitedError. The
            # subject's pseudonym feeds the distinct-subject counter of queries naming no case.
            cased = bool(request.case_reference.strip())
            self._limiter.admit(
                caller.agency_id,
                query.purpose,
                subject_key=None if cased else subject_key,
                case_reference=cased,
            )
        basis = self._basis(caller, request, query)
        today = self._today()
        is_self = (
            bool(caller.subject_id)
            and caller.subject_id == query.subject_id
            and caller.subject_type == query.subject_type
        )
        decision = self._decider.decide(
            QueryFacts(
                agency_id=caller.agency_id,
                subject_type=query.subject_type,
                purpose=query.purpose,
                mode=query.mode,
                datasets=query.datasets,
                today=today,
                is_self=is_self,
                consent_token=request.consent_token,
                subject_id=query.subject_id,
                legal_tiers=basis.tiers if basis is not None else frozenset(),
            )
        )
        if self._audit is not None and not self._audit.available:
            # No record, no query: ask no department and book nothing that
            # could not be put on the record.
            raise AuditUnavailableError("the audit log cannot be written; no query is answered")
        if decision.count_use is not None:
            # A consent use is a durable write (an fsync, or a round trip to PostgreSQL):
            # off the event loop, which would otherwise stall every query meanwhile.
            decision = await asyncio.to_thread(with_consent_counted, decision)
        reservation = await self._reserve(caller, query, decision, today, is_self, subject_key)
        booking = _Booking()
        try:
            return await self._answer(
                caller,
                request,
                context,
                query,
                decision,
                today,
                reservation,
                booking,
                basis,
                subject_key=subject_key,
            )
        except BaseException as exc:
            # Nothing was disclosed: give back what was reserved, or refund a
            # charge settled before the audit append failed. A replay of a
            # request already answered keeps its original charge. Shielded: a
            # caller going away cannot stop the release half-way.
            if reservation is not None and self._meter is not None and not reservation.replay:
                gone = isinstance(exc, asyncio.CancelledError)
                reason = "caller went away" if gone else "query failed"
                await asyncio.shield(self._undo(reservation, booking, reason))
            raise

    def _basis(
        self, caller: Caller, request: query_pb2.QueryRequest, query: ValidQuery
    ) -> ResolvedBasis | None:
        """The legal basis the query cites, checked: None when it cites none. Raises the
        resolver's refusal (the query is then refused and audited with the basis)."""
        if not request.legal_basis:
            return None
        if self._legal is None:
            raise InvalidArgumentError(
                "legal_basis", "this gateway publishes no legal bases", reason="UNKNOWN_LEGAL_BASIS"
            )
        return self._legal.resolve(
            request.legal_basis,
            agency_id=caller.agency_id,
            agency_kind=caller.kind,
            purpose=query.purpose,
            case_reference=request.case_reference,
        )

    async def _undo(self, reservation: Reservation, booking: _Booking, reason: str) -> None:
        assert self._meter is not None
        on_record = await booking.on_record()
        try:
            await self._meter.release_all(reservation, reason=reason, on_record=on_record)
        except Exception:
            # The booking stays marked unaudited in the ledger: start-up
            # recovery releases or refunds it and puts that on the record.
            log.exception(
                "could not release a failed query's booking",
                extra={"request_id": reservation.request_id},
            )

    async def _reserve(
        self,
        caller: Caller,
        query: ValidQuery,
        decision: Decision,
        today: dt.date,
        is_self: bool,
        subject_key: str,
    ) -> Reservation | None:
        """Step 4: reserve the price (or a free unit) of everything granted,
        before any department is asked (``subject_key``: the subject's pseudonym). Raises
        InsufficientBalanceError or QuotaExhaustedError, and then no department is called."""
        if self._meter is None or not any(dd.allowed for dd in decision.departments.values()):
            return None
        datasets = ",".join(sorted(f"{d.department}/{d.name}" for d in query.datasets))
        # Binds a request id to what it asked: a reused id for another subject
        # or other datasets is refused instead of riding on the first charge.
        digest = hashlib.sha256(f"{subject_key}|{query.purpose}|{datasets}".encode()).hexdigest()
        return await self._meter.reserve(
            request_id=query.request_id,
            agency_id=caller.agency_id,
            mode=mode_name(query.mode),
            lines=granted_lines(decision),
            today=today,
            self_query_subject_key=subject_key if is_self else None,
            request_digest=digest,
        )

    async def _answer(
        self,
        caller: Caller,
        request: query_pb2.QueryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        query: ValidQuery,
        decision: Decision,
        today: dt.date,
        reservation: Reservation | None,
        booking: _Booking,
        basis: ResolvedBasis | None = None,
        *,
        subject_key: str,
    ) -> tuple[query_pb2.QueryResponse, str]:
        if decision.consent_id and self._consents is not None and request.consent_token:
            # Art. 18: the authorisation behind this query is kept in signed form before any
            # department is asked; if it cannot be kept, nothing is asked or disclosed.
            await self._consents.keep(
                decision.consent_id,
                request.consent_token,
                agency_id=caller.agency_id,
                subject_key=subject_key,
                expires_at=decision.consent_expires_at,
            )
        lookups = self._lookups(caller, query, decision, reservation)
        remaining = context.time_remaining()
        budget = self._default_timeout_s
        if remaining is not None:
            reserve = min(_DEADLINE_RESERVE_S, remaining * _DEADLINE_RESERVE_SHARE)
            budget = min(budget, max(remaining - reserve, 0.001))
        outcomes = await fan_out(self._clients, lookups, timeout_s=budget) if lookups else {}

        response = query_pb2.QueryResponse(
            request_id=query.request_id,
            policy_version=decision.policy_version,
            catalog_version=self._catalog.version,
            query_date=today.isoformat(),
        )
        cutoff = ageing_cutoff(today)
        partial = False
        # The objection marks, read once for the whole answer (when some section has records).
        marks: SubjectMarker | None = None
        # Only departments of the decision are ever asked, so it names every section.
        for dept in sorted(decision.departments, key=self._dept_order.__getitem__):
            dd = decision.departments[dept]
            section = response.sections.add(department=dept)
            for w in dd.withheld:
                section.withheld.add(
                    dataset=w.dataset, field=w.field, reason=w.reason, detail=w.detail
                )
                self._m_withheld[(self._tier[(dept, w.dataset, w.field)], w.reason)].inc()
            partial = partial or bool(dd.withheld)
            outcome = outcomes.get(dept)
            if outcome is None:
                section.status = query_pb2.SECTION_STATUS_WITHHELD
                section.detail = "nothing of this department may be shown for this query"
                continue
            section.status = outcome.status
            section.detail = outcome.detail
            section.latency_ms = int(outcome.latency_s * 1000)
            self._m_dept[(dept, outcome.status)].inc()
            self._m_dept_latency[dept].observe(outcome.latency_s)
            if outcome.response is None:
                partial = True
                continue
            if marks is None and self._marker is not None:
                marks = self._marker.for_subject(subject_key)
            self._disclose(dept, dd.allowed_sets, outcome.response, section, cutoff, marks)
        charge_fen = 0
        billing: QueryBilling | None = None
        if reservation is not None and self._meter is not None:
            # Step 7: charge what was delivered, release the rest (a free settlement
            # is booked once the record below is durable: Meter.recorded).
            settlement = await self._meter.settle(reservation, delivered_lines(decision, outcomes))
            response.charge.CopyFrom(settlement.to_proto())
            charge_fen = settlement.amount_fen
            billing = query_billing(reservation, settlement)
            if charge_fen:
                self._metrics.charges.labels(caller.agency_id).inc(charge_fen)
        if self._audit is not None:
            # Step 8. No audit, no data: if this raises, the response is never
            # sent. The settlement is final only once this record is durable.
            booking.record = asyncio.ensure_future(
                self._audit.append_query(
                    query,
                    caller,
                    request,
                    response,
                    None,
                    charge_fen=charge_fen,
                    billing=billing,
                    allowed=decision.allowed_fields,
                    consent_id=decision.consent_id,
                    consent_uses=decision.consent_uses,
                    legal_basis=basis.code if basis is not None else "",
                    confidential_until=basis.confidential_until(today) if basis else "",
                    subject_pseudonym=subject_key if self._keyed else None,
                )
            )
            receipt = await asyncio.shield(booking.record)
            if reservation is not None and self._meter is not None:
                self._meter.recorded(reservation)
            if receipt is not None:
                response.receipt.origin = receipt.origin
                response.receipt.log_index = receipt.index
                response.receipt.leaf_hash = receipt.leaf_hash
                response.receipt.response_digest = receipt.response_digest
        return response, ("partial" if partial else "ok")

    def _lookups(
        self,
        caller: Caller,
        query: ValidQuery,
        decision: Decision,
        reservation: Reservation | None,
    ) -> dict[str, adapter_pb2.LookupRequest]:
        lookups: dict[str, adapter_pb2.LookupRequest] = {}
        # A replayed, already-paid request asks only for what was paid for.
        deliverable = reservation.deliverable if reservation is not None else None
        for dept, dd in decision.departments.items():
            allowed = dd.allowed
            if deliverable is not None:
                allowed = {ds: f for ds, f in allowed.items() if (dept, ds) in deliverable}
            if not allowed:
                continue  # data minimisation: a department with nothing granted is not called
            req = adapter_pb2.LookupRequest(
                request_id=query.request_id, agency_id=caller.agency_id, purpose=query.purpose
            )
            req.subject.type = _SUBJECT_TYPE[query.subject_type]
            req.subject.id = query.subject_id
            for dataset, fields in allowed.items():
                req.wanted.add(dataset=dataset, fields=fields)
            lookups[dept] = req
        return lookups

    def _disclose(
        self,
        dept: str,
        allowed: Mapping[str, frozenset[str]],
        lookup: adapter_pb2.LookupResponse,
        section: query_pb2.DepartmentSection,
        cutoff: str,
        marks: SubjectMarker | None,
    ) -> None:
        dropped = 0
        aged_total = 0
        for result in lookup.results:
            fields = allowed.get(result.dataset)
            if fields is None:
                # A whole dataset nobody asked for: drop it, count its fields.
                dropped += sum(len(r.fields) for r in result.records)
                continue
            ds = self._catalog.dataset(dept, result.dataset)
            negative = ds is not None and ds.negative
            kept, n_dropped, n_aged = filter_records(
                result.records, fields, negative=negative, cutoff=cutoff
            )
            dropped += n_dropped
            aged_total += n_aged
            if marks is not None:
                # Art. 25 marks from the gateway's own objections; repaired records go.
                kept = marks.mark(dept, result.dataset, kept)
            out = section.datasets.add(dataset=result.dataset, aged_out=n_aged)
            out.records.extend(kept)
        if dropped:
            log.warning(
                "department returned fields it was not asked for; dropped",
                extra={"department": dept, "fields_dropped": dropped},
            )
            self._m_dropped[dept].inc(dropped)
        if aged_total:
            self._m_aged[dept].inc(aged_total)
