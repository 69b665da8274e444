"""Step 8 of the pipeline: every decision becomes a signed audit record, and
auditors read the log back through ``AuditService``.

:class:`QueryAuditor` turns a query (answered, partly withheld, refused or
failed) into one canonical record and appends it durably before the answer
leaves; :class:`gateway.api.audit.AuditServicer` serves checkpoints and proofs.

What a query record holds, and what it deliberately does not:

* the subject as a keyed pseudonym (HMAC-SHA256 under the pseudonym key),
  never the identifier;
* ``request_hmac``: HMAC-SHA256 of the request under the same key, not a plain
  SHA-256. A request's only secret is an 18-character identifier with roughly
  thirty bits of entropy, so a plain digest next to the logged request id could
  be inverted by brute force; a keyed one cannot, and an auditor holding the
  key still proves what was asked;
* ``response_sha256``: SHA-256 of the response sent (its receipt left empty),
  which the agency can recompute from what it received;
* the caller's free text (``officer_id``, ``case_reference``,
  ``represented_party``, ``consent_id``) only through
  :func:`gateway.pipeline.freetext.recordable`: as written if no identifier-like text is
  in it, else as a keyed pseudonym ``"hmac:..."``, whatever the outcome (texts that
  validation screened and found nothing in are not screened twice); the
  ``purpose`` only if it is a known purpose name, else its pseudonym.

Per query the record is built once and encoded once (:class:`EncodedRecord`: the log
splices in the index), the response digested without a copy, and the subject's pseudonym
taken from the query path, which computes it once for everything that needs it.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from gateway.audit.digest import message_digest
from gateway.audit.errors import AuditError, RecordError
from gateway.audit.log import AuditLog
from gateway.audit.log import Receipt as AuditReceipt
from gateway.audit.records import EncodedRecord, canonical_json, decode_record, pseudonymize
from gateway.audit.schema import DepartmentSection, QueryBilling, QueryRecord, WithheldField
from gateway.auth.identity import Caller
from gateway.billing.reconcile import record_key
from gateway.domain import names
from gateway.errors import (
    AuditUnavailableError,
    GatewayError,
    InvalidArgumentError,
)
from gateway.pipeline.freetext import (
    joined_identifier,
    recordable,
    text_pseudonym,
)
from gateway.pipeline.query import QueryReceipt, safe_request_id
from gateway.pipeline.validation import ValidQuery
from gateway.runtime.metrics import Metrics
from protos.credit.v1 import query_pb2

__all__ = ["QueryAuditor", "response_digest"]

log = logging.getLogger(__name__)

_STATUS = names.STATUS
_REASON = names.REASON
_MODE = names.MODE
_SUBJECT = names.SUBJECT_TYPE


def response_digest(response: query_pb2.QueryResponse) -> bytes:
    """SHA-256 of the canonical, language-neutral encoding, receipt left out
    (the rule: :mod:`gateway.audit.digest`)."""
    return message_digest(response)


def _answer_digest(
    response: query_pb2.QueryResponse, allowed: Mapping[str, Mapping[str, Sequence[str]]] | None
) -> bytes:
    """:func:`response_digest` of the answer about to be sent, without copying it: its
    unknown fields (a department's newer adapter) are discarded, so the answer sent and
    the one digested are the same message. The fields granted (``allowed``) are every
    map key a record can hold (step 6 drops the others)."""
    keys = None
    if allowed is not None:
        keys = {f for datasets in allowed.values() for fields in datasets.values() for f in fields}
    return message_digest(response, keys=keys, in_place=True)


class _Clock:
    """``_now``'s cache: the text of the current UTC second, formatted once a second."""

    second = -1
    text = ""


def _now() -> str:
    """Now, UTC, ISO 8601 to the millisecond (truncated): ``2026-12-01T00:19:11.123Z``, as
    ``datetime.isoformat(timespec="milliseconds")`` writes it."""
    second, ms = divmod(time.time_ns() // 1_000_000, 1000)
    if second != _Clock.second:
        _Clock.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _Clock.second = second
    return f"{_Clock.text}.{ms:03d}Z"


class QueryAuditor:
    """Implements :class:`gateway.pipeline.query.AuditSink` over an :class:`AuditLog`."""

    def __init__(
        self,
        audit_log: AuditLog,
        pseudonym_key: bytes,
        *,
        gateway_origin: str,
        metrics: Metrics | None = None,
        purposes: Collection[str] = (),
    ) -> None:
        self.log = audit_log
        self._key = pseudonym_key
        # Built once: the record of every validated query with plain texts takes it.
        self._free_scanned: Callable[[str], str] = functools.partial(self.free_text, scanned=True)
        self._origin = gateway_origin
        #: Purpose names recorded in clear even when a query did not validate;
        #: the gateway sets them from its purpose list.
        self.known_purposes: frozenset[str] = frozenset(purposes)
        self._metrics: Metrics | None = None
        self._m_records: dict[str, Any] = {}
        if metrics is not None:
            self.bind_metrics(metrics)

    def bind_metrics(self, metrics: Metrics) -> None:
        """Count records and time appends on ``metrics``; the checkpoint gauges read
        the log at scrape time."""
        self._metrics = metrics
        self._m_records = {}
        log = self.log
        metrics.audit_checkpoint_size.set_function(lambda: float(log.checkpoint_size))
        metrics.audit_checkpoint_age.set_function(lambda: log.checkpoint_age_s)

    async def _append(self, record: Mapping[str, Any]) -> AuditReceipt:
        if self._metrics is None:
            return await self.log.append(record)
        started = time.perf_counter()
        receipt = await self.log.append(record)
        self._metrics.audit_append_latency.observe(time.perf_counter() - started)
        kind = record["kind"]
        child = self._m_records.get(kind)
        if child is None:  # kinds are a closed set: bound once each
            child = self._m_records[kind] = self._metrics.audit_records.labels(kind)
        child.inc()
        return receipt

    def pseudonym(self, subject_type: str, subject_id: str) -> str:
        """The keyed pseudonym (HMAC-SHA256, hex) of a subject; see
        :func:`gateway.audit.records.pseudonymize`."""
        return pseudonymize(self._key, subject_type, subject_id)

    def keyed_digest(self, data: bytes) -> str:
        """HMAC-SHA256 (hex) of ``data`` under the pseudonym key: how a record holds a
        request (``request_hmac``) that an auditor with the key can still prove."""
        return hmac.digest(self._key, data, "sha256").hex()  # one C call, as hmac.new's hex

    def text_pseudonym(self, text: str) -> str:
        """``text`` always as its keyed pseudonym ``"hmac:..."`` (see
        :func:`gateway.pipeline.freetext.text_pseudonym`); "" for "". For free-text fields
        that together make an identifier although none does alone."""
        return text_pseudonym(self._key, text) if text else ""

    def free_text(self, text: str, *, scanned: bool = False) -> str:
        """What of a caller's free text may be recorded: see
        :func:`gateway.pipeline.freetext.recordable` (the text, or its keyed pseudonym;
        ``scanned``: validation screened it and found nothing, ``ValidQuery.plain_text``)."""
        return recordable(self._key, text, scanned=scanned)

    def _consent_id(self, consent_id: str) -> str:
        if not consent_id:
            return ""
        # The id of a consent whose signature verified: a UUID (what `consent
        # issue` mints) is recorded as written, as request ids are, so that the
        # consent can be followed through the log; a random UUID holds a
        # check-valid credit-code shape about once in thirty, which the free-text
        # rule would turn into a pseudonym. Any other issuer's id is free text.
        try:
            if str(uuid.UUID(consent_id)) == consent_id:
                return consent_id
        except ValueError:
            pass
        return self.free_text(consent_id)

    def _purpose(self, query: ValidQuery | None, purpose: str) -> str:
        # A purpose outside the closed list is the caller's free text.
        if query is not None:
            return query.purpose
        if not purpose or purpose in self.known_purposes:
            return purpose
        return text_pseudonym(self._key, purpose)

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
        billing: QueryBilling | Mapping[str, Any] | None = None,
        allowed: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        legal_basis: str = "",
        confidential_until: str = "",
        subject_pseudonym: str | None = None,
    ) -> QueryReceipt | None:
        """Append one query record; returns its receipt once durable.

        ``subject_pseudonym``: :meth:`pseudonym` of ``query``'s subject when the caller
        computed it already (the query path does, once per query); None: computed here.
        An answered ``response`` loses its unknown fields (see :func:`_answer_digest`).

        ``legal_basis`` is the resolved basis code of an answered query; for a refused one
        the request's ``legal_basis`` is recorded under the free-text rule (a refusal
        citing a basis it may not is on the record with the basis it cited).
        ``confidential_until`` (YYYY-MM-DD) hides the query from the subject's own query
        records until that day.

        Raises :class:`~gateway.errors.AuditUnavailableError` if the log cannot
        be written: the caller must then disclose nothing.
        """
        subject_type: str
        if query is not None:
            subject_type = str(query.subject_type)  # a StrEnum: its value
            if subject_pseudonym is None:
                subject_pseudonym = self.pseudonym(query.subject_type, query.subject_id)
            # Validated: the request id as a UUID's canonical text, as safe_request_id gives.
            request_id = query.request_id
        else:
            # The identifier did not validate: log its type only, never the text.
            known = _SUBJECT.get(request.subject.type)
            subject_type = "unspecified" if known is None else known.value
            subject_pseudonym = ""
            request_id = safe_request_id(request)
        outcome: str | None = None
        error_field: str | None = None
        if error is not None:
            outcome = error.reason.lower()
            # The reason and the field, not the message: a message about a bad
            # identifier describes the identifier.
            if isinstance(error, InvalidArgumentError):
                error_field = error.field
        digest = b""
        departments: dict[str, DepartmentSection] | None = None
        if response is not None:
            digest = _answer_digest(response, allowed)
            departments = _sections(response, allowed)
            outcome = "ok"
            if any(s.withheld or s.status not in ("ok", "not_found") for s in departments.values()):
                outcome = "partial"
        free: Callable[[str], str] = self.free_text
        texts = (request.officer_id, request.represented_party, request.case_reference)
        # Validated: the texts together make no identifier (it refuses that), and where
        # they were screened clean they need no second screening.
        plain = query is not None and query.plain_text
        if plain:
            free = self._free_scanned
        elif query is None and any(texts) and joined_identifier(texts):
            # Together they make an identifier: none goes on the record as written.
            free = self.text_pseudonym

        record = QueryRecord(
            time=_now(),
            gateway=self._origin,
            request_id=request_id,
            # A registered id (a development header naming anything identifier-like
            # is refused by InsecureDevAuthenticator); agencies prove entries by it.
            agency_id=caller.agency_id if caller else "",
            cert_thumbprint=caller.cert_thumbprint if caller else "",
            # Free text: as written only if nothing identifier-like is in it.
            officer_id=free(request.officer_id),
            represented_party=free(request.represented_party),
            case_reference=free(request.case_reference),
            purpose=self._purpose(query, request.purpose),
            mode=_MODE.get(request.mode, "unspecified"),
            consent_id=self._consent_id(consent_id),
            consent_uses=consent_uses or None,
            request_hmac=self.keyed_digest(request.SerializeToString(deterministic=True)),
            charge_fen=charge_fen,
            subject_type=subject_type,
            subject_pseudonym=subject_pseudonym,
            billing=None,
            outcome=outcome,
            error_field=error_field,
            policy_version=None if response is None else response.policy_version,
            catalog_version=None if response is None else response.catalog_version,
            departments=departments,
            response_sha256=None if response is None else digest.hex(),
            # The cited code was not screened with the other texts.
            legal_basis=(legal_basis or (self.free_text if plain else free)(request.legal_basis))
            or None,
            confidential_until=confidential_until or None,
        )
        # Encoded once, here: the sections were made from the response just now (strings
        # and counts only), so they are not walked again for non-JSON values.
        written = record.to_json()
        if billing is not None:
            # The pipeline hands the typed block (written as is); a mapping is read first.
            if not isinstance(billing, QueryBilling):
                billing = QueryBilling.from_json(billing)
            written["billing"] = billing.to_json()
        receipt = await self._append(EncodedRecord(written, checked=("departments",)))
        return QueryReceipt(receipt.origin, receipt.index, receipt.leaf_hash, digest)

    async def append_event(self, kind: str, fields: Mapping[str, Any]) -> QueryReceipt:
        """Append a policy, admin or billing event. Raises AuditUnavailableError."""
        receipt = await self._append(
            {"kind": kind, "time": _now(), "gateway": self._origin, **fields}
        )
        return QueryReceipt(receipt.origin, receipt.index, receipt.leaf_hash)

    async def record_billing(self, event: dict[str, Any]) -> None:
        """The meter's and the billing admin's ``on_event`` hook: append a
        billing event (a booking no query record carries: a query's own
        reservation and settlement make none). Raises AuditUnavailableError."""
        fields = dict(event)
        await self.append_event(fields.pop("kind", "billing"), fields)

    @property
    def available(self) -> bool:
        """Whether the log takes appends now: False from a failed write until
        it heals (every query is then refused before any department is asked
        or anything is booked). No I/O."""
        return self.log.available

    async def billing_records(
        self, bookings: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Every durable record about each booking, ``("request", request_id)``
        or ``("top_up", reference)``: query records with a ``billing`` block
        and ``billing`` events (the :data:`gateway.billing.meter.AuditLookup`
        of start-up recovery). One scan of the log, whatever the number of
        bookings. Raises AuditUnavailableError if the log cannot be read."""
        wanted = set(bookings)
        needles = [
            canonical_json({"request_id" if kind == "request" else "reference": ref})[1:-1]
            for kind, ref in wanted
        ]
        try:
            leaves = await self.log.find_leaves(needles)
        except AuditError as err:
            raise AuditUnavailableError(f"audit log unreadable: {err}") from None
        found: dict[tuple[str, str], list[dict[str, Any]]] = {b: [] for b in wanted}
        for leaf in leaves:
            try:
                record = decode_record(leaf, canonical=False)
            except RecordError:
                continue
            key = record_key(record)
            if key in wanted:
                found[key].append(record)
        return found


def _sections(
    response: query_pb2.QueryResponse, allowed: Mapping[str, Mapping[str, Sequence[str]]] | None
) -> dict[str, DepartmentSection]:
    out: dict[str, DepartmentSection] = {}
    for s in response.sections:
        granted = allowed.get(s.department, {}) if allowed is not None else None
        names: list[str] = []
        fields: dict[str, tuple[str, ...]] = {}
        records = aged_out = 0
        # One pass over the datasets (each protobuf attribute read once).
        for d in s.datasets:
            name = d.dataset
            names.append(name)
            rows = d.records
            aged_out += d.aged_out
            if granted is not None:
                # The fields the gateway asked for and would disclose, for each
                # dataset that returned records: known from the decision, where
                # reading every record's field names cost more than the rest of
                # the record together.
                if rows:
                    records += len(rows)
                    fields[name] = tuple(granted.get(name, ()))
            else:
                records += len(rows)
                fields[name] = tuple(sorted({f for r in rows for f in r.fields}))
        withheld = s.withheld
        out[s.department] = DepartmentSection(
            status=_STATUS.get(s.status, "unspecified"),
            datasets=tuple(names),
            records=records,
            fields=fields,
            aged_out=aged_out,
            withheld=tuple(
                WithheldField(w.dataset, w.field, _REASON.get(w.reason, "unspecified"))
                for w in withheld
            )
            if withheld
            else (),
        )
    return out
