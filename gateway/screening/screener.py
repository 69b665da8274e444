"""One screen of one subject: validate, decide, reserve, ask, read the lists, settle, record.

    screener = Screener(catalog=..., validator=..., decider=..., clients=..., measures=...,
                        audit=auditor, meter=meter, today=beijing_today)
    response = await screener.screen(caller, request, budget_s=3.0)   # ScreenResponse

The steps are the query pipeline's (:mod:`gateway.pipeline.query`) with three differences:

* **what is asked.** Only the lists relevant to the scenario (the measures catalog), only
  the public-tier fields that say since when, until when, who listed and on what basis,
  and only where the policy grants them to this agency for this purpose and mode. A list
  not granted is ``WITHHELD``; its department is not asked for it.
* **what is answered.** Per list: on it or not, and the facts above; never a record, a
  record id, an amount or a text the department holds besides those fields. The
  gateway's own objection marks apply as on the query path (step 6,
  :class:`~gateway.pipeline.query.RecordMarker`, read once per screen): an entry whose
  credit repair was approved is not on the list, and a list with an entry under objection
  is ``disputed`` whatever the department's own flag says.
* **what it costs.** The ``[screening]`` prices of ``prices.toml``, per list whose
  department answered, reserved before asking and settled after, once per request id,
  through the same ledger; free screens count per agency and day under their own quota
  key (``screening:<agency>``), apart from free queries.

Every screen, answered or refused, is one ``screening`` audit record
(:class:`gateway.audit.schema.ScreeningRecord`) made durable before the answer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from gateway.audit.auditor import QueryAuditor
from gateway.audit.schema import QueryBilling, ScreeningRecord
from gateway.auth.identity import Caller
from gateway.billing import Meter, Reservation, mode_name
from gateway.billing.charges import DELIVERED_STATUSES, query_billing
from gateway.domain import names
from gateway.domain.catalog import Catalog
from gateway.errors import (
    AuditUnavailableError,
    ConfigError,
    GatewayError,
    InvalidArgumentError,
)
from gateway.federation import DepartmentClient, fan_out
from gateway.pipeline.decision import Decider, QueryFacts
from gateway.pipeline.freetext import joined_identifier
from gateway.pipeline.query import RecordMarker, SubjectMarker, unkeyed_pseudonym
from gateway.pipeline.validation import Validator, ValidQuery
from gateway.screening.lists import KIND, current_entries, list_status
from gateway.screening.measures import ListDef, MeasuresCatalog
from protos.credit.v1 import adapter_pb2, common_pb2, query_pb2, screening_pb2

__all__ = ["Screener", "screen_digest", "screen_quota_key"]

log = logging.getLogger("credit_gateway.screening")

_SUBJECT_TYPE = names.SUBJECT_TYPE_CODE
_MODE = names.MODE
_STATE_NAMES = {
    screening_pb2.LIST_STATE_ON_LIST: "on_list",
    screening_pb2.LIST_STATE_NOT_ON_LIST: "not_on_list",
    screening_pb2.LIST_STATE_UNKNOWN: "unknown",
    screening_pb2.LIST_STATE_WITHHELD: "withheld",
}


def screen_digest(response: screening_pb2.ScreenResponse) -> bytes:
    """``receipt.response_digest`` of a screen: SHA-256 of the response without its
    receipt (field 12) and unknown fields, serialised deterministically. A ScreenResponse
    holds no map, so this is the canonical encoding of :mod:`gateway.audit.digest`
    (fields in number order, defaults left out), recomputable in any language."""
    copy = screening_pb2.ScreenResponse.FromString(response.SerializeToString())
    copy.ClearField("receipt")
    copy.DiscardUnknownFields()
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


def screen_quota_key(agency_id: str) -> str:
    """The ledger's free-quota key of an agency's screens (apart from its queries')."""
    return f"screening:{agency_id}"


class Screener:
    """Screens one subject at a time (see the module docstring); the gRPC servicer
    (:mod:`gateway.api.screening`) calls :meth:`screen` once per subject, batch or not."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        validator: Validator,
        decider: Decider,
        clients: Mapping[str, DepartmentClient],
        measures: Callable[[], MeasuresCatalog],
        audit: QueryAuditor | None = None,
        meter: Meter | None = None,
        today: Callable[[], dt.date] = dt.date.today,
        default_timeout_s: float = 3.0,
        marker: RecordMarker | None = None,
    ) -> None:
        """``marker``: the gateway's objection marks (the objection desk), applied to the
        records of every list as the query path applies them; None: no objection store
        (nothing repaired, only departments' own ``disputed`` flags)."""
        self.catalog = catalog
        self.validator = validator
        self._decider = decider
        self._clients = clients
        self._measures = measures
        self._audit = audit
        self._meter = meter
        self._screen_meter: Meter | None = None
        self._today = today
        self.default_timeout_s = default_timeout_s
        self._marker = marker

    def use_catalog(self, catalog: Catalog, validator: Validator) -> None:
        """Hot switch of the catalog (a policy version); screens under way finish as begun."""
        self.catalog = catalog
        self.validator = validator

    @property
    def measures(self) -> MeasuresCatalog:
        """The measures catalog in force now. Raises ConfigError if it does not load."""
        return self._measures()

    def _billing(self) -> Meter | None:
        """A meter over the gateway's ledger priced by the active price list's
        ``[screening]`` section (it follows policy activations). Raises ConfigError if
        the gateway bills but the price list prices no screens."""
        if self._meter is None:
            return None
        prices = self._meter.prices.screening
        if prices is None:
            raise ConfigError("prices.screening", "the price list prices no screens")
        if self._screen_meter is None:
            self._screen_meter = Meter(
                self._meter.ledger,
                prices,
                on_event=self._audit.record_billing if self._audit is not None else None,
                # The screen's record carries its free settlement, which is then booked
                # with the mark clear (one ledger transaction per free screen, as a query).
                audit_lookup=self._audit.billing_records if self._audit is not None else None,
            )
        self._screen_meter.prices = prices
        return self._screen_meter

    def _validate(
        self, request: screening_pb2.ScreenRequest
    ) -> tuple[ValidQuery, MeasuresCatalog, tuple[ListDef, ...]]:
        query = self.validator.validate(
            query_pb2.QueryRequest(
                request_id=request.request_id,
                subject=request.subject,
                purpose=request.purpose,
                mode=request.mode,
                case_reference=request.case_reference,
                officer_id=request.officer_id,
            )
        )
        measures = self.measures
        if request.scenario not in measures.scenarios:
            known = ", ".join(measures.scenarios)
            raise InvalidArgumentError("scenario", f"unknown scenario; one of {known}")
        return query, measures, measures.relevant(request.scenario, query.subject_type)

    async def screen(
        self,
        caller: Caller,
        request: screening_pb2.ScreenRequest,
        *,
        budget_s: float | None = None,
        batch_id: str = "",
    ) -> screening_pb2.ScreenResponse:
        """Screen one subject. ``budget_s``: what the caller's deadline leaves for the
        departments (each also keeps its own deadline). Raises GatewayError, already on the
        audit record (``audited``) when the log could take it."""
        try:
            return await self._screen(caller, request, budget_s, batch_id)
        except GatewayError as err:
            await self.record_refusal(caller, request, err, batch_id=batch_id)
            raise

    async def _screen(
        self,
        caller: Caller,
        request: screening_pb2.ScreenRequest,
        budget_s: float | None,
        batch_id: str,
    ) -> screening_pb2.ScreenResponse:
        query, measures, lists = self._validate(request)
        today = self._today()
        keys = dict.fromkeys((lst.department, lst.dataset) for lst in lists)
        datasets = tuple(
            ds for dept, name in keys if (ds := self.catalog.dataset(dept, name)) is not None
        )
        decision = self._decider.decide(
            QueryFacts(
                agency_id=caller.agency_id,
                subject_type=query.subject_type,
                purpose=query.purpose,
                mode=query.mode,
                datasets=datasets,
                today=today,
                subject_id=query.subject_id,
            )
        )
        # Per list: the public fields asked, or None (withheld: not granted).
        asked: dict[str, tuple[str, ...] | None] = {}
        for lst in lists:
            dd = decision.departments.get(lst.department)
            granted = set(dd.allowed.get(lst.dataset, ())) if dd is not None else set()
            fields = tuple(f for f in lst.fields if f in granted)
            asked[lst.id] = fields if lst.since_field in fields else None
        if self._audit is not None and not self._audit.available:
            raise AuditUnavailableError("the audit log cannot be written; no screen is answered")
        meter = self._billing()
        lines = sorted({(lst.department, lst.dataset) for lst in lists if asked[lst.id]})
        reservation: Reservation | None = None
        # One pseudonym per screen: the booking's digest, the objection marks, the record.
        subject_key = self._subject_key(query)
        if meter is not None and lines:
            digest = hashlib.sha256(
                f"screen|{subject_key}|{query.purpose}|{request.scenario}".encode()
            ).hexdigest()
            reservation = await meter.reserve(
                request_id=query.request_id,
                agency_id=caller.agency_id,
                mode=mode_name(query.mode),
                lines=lines,
                today=today,
                request_digest=digest,
                quota_key=screen_quota_key(caller.agency_id),
            )
        recorded: asyncio.Future[Any] | None = None
        try:
            response, delivered, outcome = await self._answer(
                caller,
                query,
                request,
                measures,
                lists,
                asked,
                reservation,
                today,
                budget_s,
                subject_key=subject_key,
            )
            response.policy_version = decision.policy_version
            billing: QueryBilling | None = None
            if reservation is not None and meter is not None:
                settlement = await meter.settle(reservation, delivered)
                response.charge.CopyFrom(settlement.to_proto())
                billing = query_billing(reservation, settlement)
            if self._audit is not None:
                recorded = asyncio.ensure_future(
                    self._append(
                        caller,
                        request,
                        query,
                        response,
                        outcome,
                        billing,
                        batch_id=batch_id,
                        subject_key=subject_key,
                    )
                )
                receipt = await asyncio.shield(recorded)
                if reservation is not None and meter is not None:
                    meter.recorded(reservation)
                response.receipt.CopyFrom(receipt)
            return response
        except BaseException as exc:
            if reservation is not None and meter is not None and not reservation.replay:
                on_record = False
                if recorded is not None:
                    try:
                        await recorded
                        on_record = True
                    except BaseException:
                        on_record = False
                gone = isinstance(exc, asyncio.CancelledError)
                await asyncio.shield(
                    meter.release_all(
                        reservation,
                        reason="caller went away" if gone else "screen failed",
                        on_record=on_record,
                    )
                )
            raise

    def _subject_key(self, query: ValidQuery) -> str:
        """The subject's pseudonym as the query path and the objection desk make it: the
        audit log's keyed one, or (development, no log) the unkeyed hash."""
        if self._audit is not None:
            return self._audit.pseudonym(query.subject_type, query.subject_id)
        return unkeyed_pseudonym(query.subject_type, query.subject_id)

    async def _answer(
        self,
        caller: Caller,
        query: ValidQuery,
        request: screening_pb2.ScreenRequest,
        measures: MeasuresCatalog,
        lists: tuple[ListDef, ...],
        asked: Mapping[str, tuple[str, ...] | None],
        reservation: Reservation | None,
        today: dt.date,
        budget_s: float | None,
        *,
        subject_key: str,
    ) -> tuple[screening_pb2.ScreenResponse, list[tuple[str, str]], str]:
        deliverable = reservation.deliverable if reservation is not None else None
        wanted: dict[str, dict[str, tuple[str, ...]]] = {}
        for lst in lists:
            fields = asked[lst.id]
            if not fields:
                continue
            if deliverable is not None and (lst.department, lst.dataset) not in deliverable:
                continue  # a replay asks only for what was paid for
            per = wanted.setdefault(lst.department, {})
            per[lst.dataset] = tuple(dict.fromkeys((*per.get(lst.dataset, ()), *fields)))
        lookups: dict[str, adapter_pb2.LookupRequest] = {}
        for dept, per in wanted.items():
            req = adapter_pb2.LookupRequest(
                request_id=query.request_id, agency_id=caller.agency_id, purpose=query.purpose
            )
            req.subject.type = _SUBJECT_TYPE[query.subject_type]
            req.subject.id = query.subject_id
            for dataset, fields in per.items():
                req.wanted.add(dataset=dataset, fields=fields)
            lookups[dept] = req
        timeout = self.default_timeout_s
        if budget_s is not None:
            timeout = min(timeout, budget_s)
        outcomes = await fan_out(self._clients, lookups, timeout_s=max(timeout, 0.001))
        day = today.isoformat()
        response = screening_pb2.ScreenResponse(
            request_id=query.request_id,
            scenario=request.scenario,
            measures_version=measures.version,
            screen_date=day,
            complete=True,
        )
        delivered: set[tuple[str, str]] = set()
        marks: SubjectMarker | None = None
        for lst in lists:
            outcome = outcomes.get(lst.department)
            if asked[lst.id] is None or lst.dataset not in wanted.get(lst.department, {}):
                status = screening_pb2.ListStatus(
                    list=lst.id,
                    title=lst.title,
                    kind=KIND[lst.kind],
                    department=lst.department,
                    state=screening_pb2.LIST_STATE_WITHHELD,
                    detail="the policy does not grant this list to this agency for this "
                    "purpose and mode",
                )
            elif outcome is None or outcome.status not in DELIVERED_STATUSES:
                status = screening_pb2.ListStatus(
                    list=lst.id,
                    title=lst.title,
                    kind=KIND[lst.kind],
                    department=lst.department,
                    state=screening_pb2.LIST_STATE_UNKNOWN,
                    detail=(
                        f"department {names.STATUS.get(outcome.status, 'unavailable')}: "
                        f"{outcome.detail}"
                        if outcome is not None
                        else "department not asked"
                    )[:300],
                )
            else:
                delivered.add((lst.department, lst.dataset))
                records: list[common_pb2.Record] = []
                if outcome.response is not None:
                    for result in outcome.response.results:
                        if result.dataset == lst.dataset:
                            records.extend(result.records)
                if self._marker is not None:
                    if marks is None:  # once per screen, and only if a department answered
                        marks = self._marker.for_subject(subject_key)
                    records = marks.mark(lst.department, lst.dataset, records)
                entries = current_entries(lst, records, day)
                status = list_status(lst, entries, measures, request.scenario)
            response.lists.append(status)
            if status.state == screening_pb2.LIST_STATE_ON_LIST:
                if lst.kind == "black":
                    response.black_listed = True
                else:
                    response.red_listed = True
                if any(m.binding for m in status.measures):
                    response.binding_measure = True
            elif status.state != screening_pb2.LIST_STATE_NOT_ON_LIST:
                response.complete = False
        return response, sorted(delivered), "ok" if response.complete else "partial"

    async def _append(
        self,
        caller: Caller,
        request: screening_pb2.ScreenRequest,
        query: ValidQuery | None,
        response: screening_pb2.ScreenResponse | None,
        outcome: str,
        billing: QueryBilling | None,
        *,
        batch_id: str = "",
        error_field: str | None = None,
        subject_key: str = "",
    ) -> query_pb2.AuditReceipt:
        audit = self._audit
        assert audit is not None
        digest = screen_digest(response) if response is not None else b""
        free: Callable[[str], str] = audit.free_text
        if joined_identifier((request.officer_id, request.case_reference)):
            # Together they make an identifier: neither goes on the record as written.
            free = audit.text_pseudonym

        subject_type = ""
        pseudonym = ""
        if query is not None:
            subject_type = str(query.subject_type)
            # The screen's own (the audit log's keyed one), or made here for a refusal.
            pseudonym = subject_key or audit.pseudonym(query.subject_type, query.subject_id)
        else:
            known = names.SUBJECT_TYPE.get(request.subject.type)
            subject_type = "unspecified" if known is None else known.value
        measures_version = response.measures_version if response is not None else None
        record = ScreeningRecord(
            request_id=_safe_uuid(request.request_id),
            agency_id=caller.agency_id,
            cert_thumbprint=caller.cert_thumbprint,
            officer_id=free(request.officer_id),
            case_reference=free(request.case_reference),
            purpose=query.purpose if query is not None else _known(request.purpose, audit),
            scenario=_known_scenario(request.scenario, self),
            mode=_MODE.get(request.mode, "unspecified"),
            request_hmac=audit.keyed_digest(request.SerializeToString(deterministic=True)),
            charge_fen=response.charge.amount_fen if response is not None else 0,
            subject_type=subject_type,
            subject_pseudonym=pseudonym,
            batch_id=batch_id or None,
            billing=billing,
            outcome=outcome,
            error_field=error_field,
            policy_version=response.policy_version if response is not None else None,
            measures_version=measures_version,
            lists=None
            if response is None
            else {s.list: _STATE_NAMES.get(s.state, "unspecified") for s in response.lists},
            response_sha256=digest.hex() if response is not None else None,
        ).to_json()
        kind = record.pop("kind")
        for key in ("time", "gateway"):  # the sink writes them
            record.pop(key)
        receipt = await audit.append_event(kind, record)
        return query_pb2.AuditReceipt(
            origin=receipt.origin,
            log_index=receipt.index,
            leaf_hash=receipt.leaf_hash,
            response_digest=digest,
        )

    async def record_refusal(
        self,
        caller: Caller | None,
        request: screening_pb2.ScreenRequest,
        err: GatewayError,
        *,
        batch_id: str = "",
    ) -> None:
        """Put a refused screen on the record (never fails: nothing was disclosed)."""
        if self._audit is None or err.audited or isinstance(err, AuditUnavailableError):
            return
        query = None
        with contextlib.suppress(GatewayError):
            query, _, _ = self._validate(request)
        error_field = err.field if isinstance(err, InvalidArgumentError) else None
        who = caller or Caller("", "unauthenticated")
        try:
            await self._append(
                who,
                request,
                query,
                None,
                err.reason.lower(),
                None,
                batch_id=batch_id,
                error_field=error_field,
            )
        except Exception:
            log.exception("could not audit a refused screen")
            return
        err.audited = True


def _safe_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return "invalid"


def _known(purpose: str, audit: QueryAuditor) -> str:
    if not purpose or purpose in audit.known_purposes:
        return purpose
    return audit.text_pseudonym(purpose)


def _known_scenario(scenario: str, screener: Screener) -> str:
    try:
        if scenario in screener.measures.scenarios:
            return scenario
    except ConfigError:
        pass
    return "unknown" if scenario else ""
