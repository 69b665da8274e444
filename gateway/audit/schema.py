"""The audit records the gateway writes, as types: written by these, read back by these.

Each record is a dataclass with ``to_json()`` (the JSON object appended to the log, which
:func:`gateway.audit.records.encode_record` encodes canonically) and ``from_json()`` (the
reading of a decoded record). The log stores only the JSON, so the bytes are those the
gateway wrote before these types existed: a field that is None is left out, never written
as ``null``, and a field that is set is written as it was.

Reading is lenient, because a log outlives the code that wrote it: a field that is absent,
or of another JSON type than the one written today, reads as absent (None, or the
documented default). Readers decide what an absent field means.

* :class:`QueryRecord`, kind ``"query"``: one per query (step 8 of the pipeline), with
  :class:`DepartmentSection` per department asked and, for a metered query, its
  :class:`QueryBilling` block;
* :class:`BillingRecord`, kind ``"billing"``: a ledger movement not carried by a query
  record (a reservation released, a refund, a top-up, a booking recorded at start-up);
* :class:`RefusalRecord`, kind ``"refusal"``: a refused call no servicer recorded itself
  (written by the gRPC edge);
* :class:`PolicyAdminRecord`, kind ``"policy_admin"``: a step of the policy workflow,
  done or refused;
* :class:`ControlsRecord`, kind ``"controls"``: a live security control (suspension,
  reinstatement, certificate or consent revocation, consent status), done or refused;
* :class:`ScreeningRecord`, kind ``"screening"``: one screen against the reward and
  punishment lists, with its billing block as a query's;
* :class:`MeasureFeedbackRecord`, kind ``"screening_feedback"``: a measure an agency
  reports it applied (联合奖惩反馈).
* :class:`ObjectionRecord`, kind ``"objection"``: a step of an objection (Decree 631
  Art. 25) or a credit-repair application, done or refused;
* :class:`SubjectAccessRecord`, kind ``"subject_access"``: a read of the subject index or the
  consent archive (a subject's own query records, an officer's list per legal basis, an
  auditor's archived consent).

Amounts are integer fen; times are ISO 8601 text in UTC. Standard library only: the
auditors' ``credit-audit`` tool reads these.

Why one module (some 860 lines): every record kind of the log is read by the same
auditors' tool with the same lenient helpers; one file is the log's whole schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "BILLED_KINDS",
    "BillingLine",
    "BillingRecord",
    "ControlsRecord",
    "DepartmentSection",
    "MeasureFeedbackRecord",
    "ObjectionRecord",
    "PolicyAdminRecord",
    "QueryBilling",
    "QueryRecord",
    "RefusalRecord",
    "ScreeningRecord",
    "SubjectAccessRecord",
    "WithheldField",
]


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    return value if isinstance(value, bool) else None


def _objects(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _set(out: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``out`` with every field that is not None added."""
    for key, value in fields.items():
        if value is not None:
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class BillingLine:
    """One priced dataset of a request: ``{"department", "dataset", "amount_fen"}``."""

    department: str
    dataset: str
    amount_fen: int

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the line."""
        return {
            "department": self.department,
            "dataset": self.dataset,
            "amount_fen": self.amount_fen,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BillingLine:
        """Read a line; absent or mistyped fields read as ``""`` and 0."""
        return cls(
            _str(obj, "department") or "", _str(obj, "dataset") or "", _int(obj, "amount_fen") or 0
        )


def _lines(value: object) -> tuple[BillingLine, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(BillingLine.from_json(x) for x in _objects(value))


def _lines_json(lines: tuple[BillingLine, ...] | None) -> list[dict[str, Any]] | None:
    return None if lines is None else [x.to_json() for x in lines]


@dataclass(frozen=True, slots=True)
class QueryBilling:
    """The ``billing`` block of a metered query record: the query's own reservation and
    settlement (one durable append per query). ``replay``: a retried request id that
    booked nothing new. None fields are absent from the record."""

    basis: str | None = None
    reserved_fen: int | None = None
    charged_fen: int | None = None
    #: ``"settled"`` or ``"released"``.
    state: str | None = None
    replay: bool | None = None
    lines: tuple[BillingLine, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the block (None fields left out)."""
        return _set(
            {},
            basis=self.basis,
            reserved_fen=self.reserved_fen,
            charged_fen=self.charged_fen,
            state=self.state,
            replay=self.replay,
            lines=_lines_json(self.lines),
        )

    @staticmethod
    def written(obj: Mapping[str, Any]) -> dict[str, Any]:
        """``QueryBilling.from_json(obj).to_json()``, in one pass and without the types in
        between: the block as a query record writes it (the query path's, once per query).
        A test holds the two equal on generated blocks."""
        out: dict[str, Any] = {}
        get = obj.get
        if isinstance(v := get("basis"), str):
            out["basis"] = v
        for key in ("reserved_fen", "charged_fen"):
            if isinstance(v := get(key), int) and type(v) is not bool:
                out[key] = v
        if isinstance(v := get("state"), str):
            out["state"] = v
        if type(v := get("replay")) is bool:
            out["replay"] = v
        lines = obj.get("lines")
        if isinstance(lines, list):
            out["lines"] = [
                BillingLine.from_json(x).to_json() for x in lines if isinstance(x, Mapping)
            ]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> QueryBilling:
        """Read a block; absent or mistyped fields read as None."""
        return cls(
            basis=_str(obj, "basis"),
            reserved_fen=_int(obj, "reserved_fen"),
            charged_fen=_int(obj, "charged_fen"),
            state=_str(obj, "state"),
            replay=_bool(obj, "replay"),
            lines=_lines(obj.get("lines")),
        )


@dataclass(frozen=True, slots=True)
class WithheldField:
    """A field withheld from a query's answer, and why (a ``WithheldReason`` name)."""

    dataset: str
    field: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the entry."""
        return {"dataset": self.dataset, "field": self.field, "reason": self.reason}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> WithheldField:
        """Read an entry; absent or mistyped fields read as ``""``."""
        return cls(_str(obj, "dataset") or "", _str(obj, "field") or "", _str(obj, "reason") or "")


@dataclass(frozen=True, slots=True)
class DepartmentSection:
    """What one department's part of a query answer held: its status name, the datasets
    answered, the record count, the fields disclosed per dataset, the records aged out
    (retention limits) and the fields withheld."""

    status: str
    datasets: tuple[str, ...]
    records: int
    fields: Mapping[str, tuple[str, ...]]
    aged_out: int
    withheld: tuple[WithheldField, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the section."""
        return {
            "status": self.status,
            "datasets": list(self.datasets),
            "records": self.records,
            "fields": {k: list(v) for k, v in self.fields.items()},
            "aged_out": self.aged_out,
            "withheld": [w.to_json() for w in self.withheld],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DepartmentSection:
        """Read a section; absent or mistyped fields read as empty, and list items of
        another type are skipped."""
        datasets = obj.get("datasets")
        fields = obj.get("fields")
        return cls(
            status=_str(obj, "status") or "",
            datasets=tuple(n for n in datasets if isinstance(n, str))
            if isinstance(datasets, list)
            else (),
            records=_int(obj, "records") or 0,
            fields={
                str(k): tuple(f for f in v if isinstance(f, str))
                for k, v in fields.items()
                if isinstance(v, list)
            }
            if isinstance(fields, Mapping)
            else {},
            aged_out=_int(obj, "aged_out") or 0,
            withheld=tuple(WithheldField.from_json(w) for w in _objects(obj.get("withheld"))),
        )


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """The audit record of one query, whatever its outcome.

    The subject only as a keyed pseudonym; the request as ``request_hmac`` (HMAC-SHA256
    under the pseudonym key); the response as ``response_sha256``; the caller's free text
    only as :func:`gateway.pipeline.freetext.recordable` lets it. ``outcome`` is ``"ok"``,
    ``"partial"`` or the refusal's reason in lower case; ``error_field`` names the invalid
    argument. The fields from ``policy_version`` on are set only for an answered query.
    ``self_query`` is read, never written (the replay infers it from the purpose).
    """

    KIND: ClassVar[str] = "query"

    time: str = ""
    gateway: str = ""
    request_id: str = ""
    agency_id: str = ""
    cert_thumbprint: str = ""
    officer_id: str = ""
    represented_party: str = ""
    case_reference: str = ""
    purpose: str = ""
    mode: str = ""
    consent_id: str = ""
    request_hmac: str = ""
    charge_fen: int = 0
    subject_type: str = ""
    subject_pseudonym: str = ""
    billing: QueryBilling | None = None
    outcome: str | None = None
    error_field: str | None = None
    policy_version: str | None = None
    catalog_version: str | None = None
    departments: Mapping[str, DepartmentSection] | None = None
    response_sha256: str | None = None
    self_query: bool | None = None
    #: How often the consent (``consent_id``) had been used, this query included; absent
    #: for a query without a counted consent.
    consent_uses: int | None = None
    #: The legal basis the query cited (a code of ``policies/legal_bases.toml``; a code
    #: that is not one is the caller's free text, recorded as the free-text rule lets it);
    #: absent when none was cited.
    legal_basis: str | None = None
    #: YYYY-MM-DD (gateway calendar, Beijing time): the query is hidden from the subject's
    #: own query records before this day; absent when nothing is confidential.
    confidential_until: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "time": self.time,
                "gateway": self.gateway,
                "request_id": self.request_id,
                "agency_id": self.agency_id,
                "cert_thumbprint": self.cert_thumbprint,
                "officer_id": self.officer_id,
                "represented_party": self.represented_party,
                "case_reference": self.case_reference,
                "purpose": self.purpose,
                "mode": self.mode,
                "consent_id": self.consent_id,
                "request_hmac": self.request_hmac,
                "charge_fen": self.charge_fen,
                "subject_type": self.subject_type,
                "subject_pseudonym": self.subject_pseudonym,
            },
            billing=None if self.billing is None else self.billing.to_json(),
            outcome=self.outcome,
            error_field=self.error_field,
            policy_version=self.policy_version,
            catalog_version=self.catalog_version,
            departments=None
            if self.departments is None
            else {k: s.to_json() for k, s in self.departments.items()},
            response_sha256=self.response_sha256,
            self_query=self.self_query,
            consent_uses=self.consent_uses,
            legal_basis=self.legal_basis,
            confidential_until=self.confidential_until,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> QueryRecord:
        """Read a decoded query record (its ``kind`` is not checked: see :attr:`KIND`);
        absent or mistyped fields read as ``""``, 0 or None."""
        billing = obj.get("billing")
        departments = obj.get("departments")
        return cls(
            time=_str(obj, "time") or "",
            gateway=_str(obj, "gateway") or "",
            request_id=_str(obj, "request_id") or "",
            agency_id=_str(obj, "agency_id") or "",
            cert_thumbprint=_str(obj, "cert_thumbprint") or "",
            officer_id=_str(obj, "officer_id") or "",
            represented_party=_str(obj, "represented_party") or "",
            case_reference=_str(obj, "case_reference") or "",
            purpose=_str(obj, "purpose") or "",
            mode=_str(obj, "mode") or "",
            consent_id=_str(obj, "consent_id") or "",
            request_hmac=_str(obj, "request_hmac") or "",
            charge_fen=_int(obj, "charge_fen") or 0,
            subject_type=_str(obj, "subject_type") or "",
            subject_pseudonym=_str(obj, "subject_pseudonym") or "",
            billing=QueryBilling.from_json(billing) if isinstance(billing, Mapping) else None,
            outcome=_str(obj, "outcome"),
            error_field=_str(obj, "error_field"),
            policy_version=_str(obj, "policy_version"),
            catalog_version=_str(obj, "catalog_version"),
            departments={
                str(k): DepartmentSection.from_json(s)
                for k, s in departments.items()
                if isinstance(s, Mapping)
            }
            if isinstance(departments, Mapping)
            else None,
            response_sha256=_str(obj, "response_sha256"),
            self_query=_bool(obj, "self_query"),
            consent_uses=_int(obj, "consent_uses"),
            legal_basis=_str(obj, "legal_basis"),
            confidential_until=_str(obj, "confidential_until"),
        )


@dataclass(frozen=True, slots=True)
class BillingRecord:
    """A billing event: a ledger movement not carried by a query record.

    ``event`` is ``"reserve"``, ``"charge"``, ``"release"``, ``"refund"`` or ``"top_up"``.
    A request's events carry ``attempt``, ``basis``, ``movements`` (the non-zero amounts
    moved by kind, fen), ``lines`` and ``free_remaining``; a top-up carries ``reference``
    and ``actor``. ``at`` is the ledger's time of the movement; ``reason`` says why a
    reservation was released or a booking recorded late. None fields are absent.
    """

    KIND: ClassVar[str] = "billing"

    event: str
    request_id: str
    agency_id: str
    amount_fen: int
    balance_fen: int
    at: str
    attempt: int | None = None
    basis: str | None = None
    movements: Mapping[str, int] | None = None
    lines: tuple[BillingLine, ...] | None = None
    free_remaining: int | None = None
    reference: str | None = None
    actor: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "event": self.event,
                "request_id": self.request_id,
                "agency_id": self.agency_id,
                "amount_fen": self.amount_fen,
                "balance_fen": self.balance_fen,
                "at": self.at,
            },
            attempt=self.attempt,
            basis=self.basis,
            movements=None if self.movements is None else dict(self.movements),
            lines=_lines_json(self.lines),
            free_remaining=self.free_remaining,
            reference=self.reference,
            actor=self.actor,
            reason=self.reason,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BillingRecord:
        """Read a decoded billing record (its ``kind`` is not checked: see :attr:`KIND`).
        Absent or mistyped fields read as ``""``, 0 or None; ``movements`` reads as None
        unless it is an object whose four amounts, where present, are all integers."""
        movements = obj.get("movements")
        amounts: dict[str, int] | None = None
        if isinstance(movements, Mapping):
            picked = {k: movements.get(k, 0) for k in ("reserve", "charge", "release", "refund")}
            if all(isinstance(v, int) and not isinstance(v, bool) for v in picked.values()):
                amounts = {k: v for k, v in picked.items() if v}
        return cls(
            event=_str(obj, "event") or "",
            request_id=_str(obj, "request_id") or "",
            agency_id=_str(obj, "agency_id") or "",
            amount_fen=_int(obj, "amount_fen") or 0,
            balance_fen=_int(obj, "balance_fen") or 0,
            at=_str(obj, "at") or "",
            attempt=_int(obj, "attempt"),
            basis=_str(obj, "basis"),
            movements=amounts,
            lines=_lines(obj.get("lines")),
            free_remaining=_int(obj, "free_remaining"),
            reference=_str(obj, "reference"),
            actor=_str(obj, "actor"),
            reason=_str(obj, "reason"),
        )


def _strs(value: object) -> tuple[str, ...] | None:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else None


@dataclass(frozen=True, slots=True)
class RefusalRecord:
    """A refused call that no servicer recorded itself, written by the gRPC edge.

    ``service`` and ``method`` name the RPC (``credit.v1.AuditService``,
    ``GetInclusionProof``); ``outcome`` is the ErrorInfo reason in lower case; ``status``
    the gRPC status code's name (``INVALID_ARGUMENT``); ``principal`` the verified
    principal ("" when none was established); ``cert_thumbprint`` the RFC 8705 thumbprint
    of the client certificate ("" without one); ``error_field`` the invalid argument's
    field name, one of the gateway's own. Never a request field or other text the caller
    chose. ``time`` and ``gateway`` are added by the writer of the log
    (:meth:`gateway.audit.auditor.QueryAuditor.append_event`) and read back here.
    """

    KIND: ClassVar[str] = "refusal"

    service: str
    method: str
    outcome: str
    status: str
    principal: str = ""
    cert_thumbprint: str = ""
    error_field: str | None = None
    time: str | None = None
    gateway: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "service": self.service,
                "method": self.method,
                "outcome": self.outcome,
                "status": self.status,
                "principal": self.principal,
                "cert_thumbprint": self.cert_thumbprint,
            },
            error_field=self.error_field,
            time=self.time,
            gateway=self.gateway,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RefusalRecord:
        """Read a decoded refusal record (its ``kind`` is not checked: see :attr:`KIND`);
        absent or mistyped fields read as ``""`` or None."""
        return cls(
            service=_str(obj, "service") or "",
            method=_str(obj, "method") or "",
            outcome=_str(obj, "outcome") or "",
            status=_str(obj, "status") or "",
            principal=_str(obj, "principal") or "",
            cert_thumbprint=_str(obj, "cert_thumbprint") or "",
            error_field=_str(obj, "error_field"),
            time=_str(obj, "time"),
            gateway=_str(obj, "gateway"),
        )


@dataclass(frozen=True, slots=True)
class PolicyAdminRecord:
    """A step of the policy workflow (:mod:`gateway.policyadmin.admin`), done or refused.

    ``officer`` and the free text (``reason``, ``files``) only as
    :func:`gateway.pipeline.freetext.recordable` lets them (the writer screens them).
    ``outcome`` is ``"ok"`` or ``"refused"``; a refusal carries ``error`` (the ErrorInfo
    reason) and the fields known when it was refused. The fields of each ``action`` done:

    * ``draft``: ``version``, ``parent`` (0: none), ``content_hash``, ``files`` (the file
      names the draft brought), ``reason``;
    * ``validate``: ``version``, ``problems`` (how many);
    * ``test``: ``version``, ``cases``, ``failures`` (how many);
    * ``diff``: ``version``, ``base``, ``changes`` (how many);
    * ``replay``: ``version``, ``replayed``, ``flips`` (how many);
    * ``approve``: ``version``, ``author``, ``reason``;
    * ``activate``, ``rollback``: ``version``, ``previous`` (0: none),
      ``policy_version`` (what queries then carry), ``reason``.

    Refused: ``draft`` with ``reason``; ``approve`` with ``version`` and ``reason``;
    ``activate`` and ``rollback`` with ``version``, ``previous`` and ``reason``; any action
    refused before its caller was known as an officer (``list`` and ``show`` among them)
    with no more. ``time`` and ``gateway`` are added by the writer of the log. None fields
    are absent.
    """

    KIND: ClassVar[str] = "policy_admin"

    action: str
    officer: str
    outcome: str
    error: str | None = None
    version: int | None = None
    parent: int | None = None
    content_hash: str | None = None
    files: tuple[str, ...] | None = None
    reason: str | None = None
    problems: int | None = None
    cases: int | None = None
    failures: int | None = None
    base: int | None = None
    changes: int | None = None
    replayed: int | None = None
    flips: int | None = None
    author: str | None = None
    previous: int | None = None
    policy_version: str | None = None
    time: str | None = None
    gateway: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "action": self.action,
                "officer": self.officer,
                "outcome": self.outcome,
            },
            error=self.error,
            version=self.version,
            parent=self.parent,
            content_hash=self.content_hash,
            files=None if self.files is None else list(self.files),
            reason=self.reason,
            problems=self.problems,
            cases=self.cases,
            failures=self.failures,
            base=self.base,
            changes=self.changes,
            replayed=self.replayed,
            flips=self.flips,
            author=self.author,
            previous=self.previous,
            policy_version=self.policy_version,
            time=self.time,
            gateway=self.gateway,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PolicyAdminRecord:
        """Read a decoded policy-administration record (its ``kind`` is not checked: see
        :attr:`KIND`); absent or mistyped fields read as ``""`` or None."""
        return cls(
            action=_str(obj, "action") or "",
            officer=_str(obj, "officer") or "",
            outcome=_str(obj, "outcome") or "",
            error=_str(obj, "error"),
            version=_int(obj, "version"),
            parent=_int(obj, "parent"),
            content_hash=_str(obj, "content_hash"),
            files=_strs(obj.get("files")),
            reason=_str(obj, "reason"),
            problems=_int(obj, "problems"),
            cases=_int(obj, "cases"),
            failures=_int(obj, "failures"),
            base=_int(obj, "base"),
            changes=_int(obj, "changes"),
            replayed=_int(obj, "replayed"),
            flips=_int(obj, "flips"),
            author=_str(obj, "author"),
            previous=_int(obj, "previous"),
            policy_version=_str(obj, "policy_version"),
            time=_str(obj, "time"),
            gateway=_str(obj, "gateway"),
        )


@dataclass(frozen=True, slots=True)
class ControlsRecord:
    """A live security control (:mod:`gateway.api.controls`), done or refused.

    ``actor`` is the officer (or, for ``revoke_my_consent``, the self-service agency) and
    ``reason`` the caller's words, both only as :func:`gateway.pipeline.freetext.recordable`
    lets them. ``outcome`` is ``"ok"`` or ``"refused"`` (then ``error``: the ErrorInfo
    reason). Fields per ``action``:

    * ``suspend``: ``agency``, ``reason``, ``newly``;
    * ``reinstate_request``, ``reinstate_approve``: ``agency``, ``reason``,
      ``requested_by`` (for an approval: the first officer);
    * ``revoke_certificate``: ``serial`` or ``thumbprint``, or ``crl_entries`` (how many
      serials a CRL listed); ``newly`` (how many were new, as ``count``), ``reason``;
    * ``revoke_consent``, ``revoke_my_consent``: ``consent_id``, ``via`` (``officer`` on
      behalf of the ``issuer`` or ``subject``, or ``subject`` itself), ``newly``, ``reason``;
    * ``consent_status``: ``consent_id``, ``state``.

    ``time`` and ``gateway`` are added by the writer of the log. None fields are absent.
    """

    KIND: ClassVar[str] = "controls"

    action: str
    actor: str
    outcome: str
    error: str | None = None
    agency: str | None = None
    consent_id: str | None = None
    serial: str | None = None
    thumbprint: str | None = None
    crl_entries: int | None = None
    count: int | None = None
    newly: bool | None = None
    via: str | None = None
    on_behalf_of: str | None = None
    requested_by: str | None = None
    state: str | None = None
    reason: str | None = None
    time: str | None = None
    gateway: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "action": self.action,
                "actor": self.actor,
                "outcome": self.outcome,
            },
            error=self.error,
            agency=self.agency,
            consent_id=self.consent_id,
            serial=self.serial,
            thumbprint=self.thumbprint,
            crl_entries=self.crl_entries,
            count=self.count,
            newly=self.newly,
            via=self.via,
            on_behalf_of=self.on_behalf_of,
            requested_by=self.requested_by,
            state=self.state,
            reason=self.reason,
            time=self.time,
            gateway=self.gateway,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ControlsRecord:
        """Read a decoded controls record (its ``kind`` is not checked); absent or mistyped
        fields read as ``""`` or None."""
        return cls(
            action=_str(obj, "action") or "",
            actor=_str(obj, "actor") or "",
            outcome=_str(obj, "outcome") or "",
            error=_str(obj, "error"),
            agency=_str(obj, "agency"),
            consent_id=_str(obj, "consent_id"),
            serial=_str(obj, "serial"),
            thumbprint=_str(obj, "thumbprint"),
            crl_entries=_int(obj, "crl_entries"),
            count=_int(obj, "count"),
            newly=_bool(obj, "newly"),
            via=_str(obj, "via"),
            on_behalf_of=_str(obj, "on_behalf_of"),
            requested_by=_str(obj, "requested_by"),
            state=_str(obj, "state"),
            reason=_str(obj, "reason"),
            time=_str(obj, "time"),
            gateway=_str(obj, "gateway"),
        )


@dataclass(frozen=True, slots=True)
class ScreeningRecord:
    """The audit record of one screen (:mod:`gateway.screening`), answered or refused.

    Like a query record: the subject only as a keyed pseudonym, the request as
    ``request_hmac``, the response as ``response_sha256``, free text only as
    :func:`gateway.pipeline.freetext.recordable` lets it, and the screen's own
    reservation and settlement in ``billing`` (the same block as a query's, so that
    start-up recovery and ``billing reconcile`` read it alike). ``lists`` maps each list
    screened to its state name (``on_list``, ``not_on_list``, ``unknown``, ``withheld``),
    never to the records behind it. ``batch_id``: the batch the screen was part of.
    ``outcome``: ``"ok"``, ``"partial"`` (some list unknown or withheld) or the refusal's
    reason in lower case.
    """

    KIND: ClassVar[str] = "screening"

    time: str = ""
    gateway: str = ""
    request_id: str = ""
    agency_id: str = ""
    cert_thumbprint: str = ""
    officer_id: str = ""
    case_reference: str = ""
    purpose: str = ""
    scenario: str = ""
    mode: str = ""
    request_hmac: str = ""
    charge_fen: int = 0
    subject_type: str = ""
    subject_pseudonym: str = ""
    batch_id: str | None = None
    billing: QueryBilling | None = None
    outcome: str | None = None
    error_field: str | None = None
    policy_version: str | None = None
    measures_version: str | None = None
    lists: Mapping[str, str] | None = None
    response_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "time": self.time,
                "gateway": self.gateway,
                "request_id": self.request_id,
                "agency_id": self.agency_id,
                "cert_thumbprint": self.cert_thumbprint,
                "officer_id": self.officer_id,
                "case_reference": self.case_reference,
                "purpose": self.purpose,
                "scenario": self.scenario,
                "mode": self.mode,
                "request_hmac": self.request_hmac,
                "charge_fen": self.charge_fen,
                "subject_type": self.subject_type,
                "subject_pseudonym": self.subject_pseudonym,
            },
            batch_id=self.batch_id,
            billing=None if self.billing is None else self.billing.to_json(),
            outcome=self.outcome,
            error_field=self.error_field,
            policy_version=self.policy_version,
            measures_version=self.measures_version,
            lists=None if self.lists is None else dict(self.lists),
            response_sha256=self.response_sha256,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ScreeningRecord:
        """Read a decoded screening record (its ``kind`` is not checked); absent or
        mistyped fields read as ``""``, 0 or None."""
        billing = obj.get("billing")
        lists = obj.get("lists")
        return cls(
            time=_str(obj, "time") or "",
            gateway=_str(obj, "gateway") or "",
            request_id=_str(obj, "request_id") or "",
            agency_id=_str(obj, "agency_id") or "",
            cert_thumbprint=_str(obj, "cert_thumbprint") or "",
            officer_id=_str(obj, "officer_id") or "",
            case_reference=_str(obj, "case_reference") or "",
            purpose=_str(obj, "purpose") or "",
            scenario=_str(obj, "scenario") or "",
            mode=_str(obj, "mode") or "",
            request_hmac=_str(obj, "request_hmac") or "",
            charge_fen=_int(obj, "charge_fen") or 0,
            subject_type=_str(obj, "subject_type") or "",
            subject_pseudonym=_str(obj, "subject_pseudonym") or "",
            batch_id=_str(obj, "batch_id"),
            billing=QueryBilling.from_json(billing) if isinstance(billing, Mapping) else None,
            outcome=_str(obj, "outcome"),
            error_field=_str(obj, "error_field"),
            policy_version=_str(obj, "policy_version"),
            measures_version=_str(obj, "measures_version"),
            lists={str(k): v for k, v in lists.items() if isinstance(v, str)}
            if isinstance(lists, Mapping)
            else None,
            response_sha256=_str(obj, "response_sha256"),
        )


@dataclass(frozen=True, slots=True)
class MeasureFeedbackRecord:
    """联合奖惩反馈: an agency reports which measure it applied after a screen.

    ``screen_request_id`` names the screen; ``list`` and ``measure`` are ids of the
    measures catalog; ``applied`` whether the agency applied it; ``decision_reference``
    and ``note`` are the caller's free text as :func:`gateway.pipeline.freetext.recordable`
    lets them. ``outcome``: ``"ok"`` or the refusal's reason in lower case.
    """

    KIND: ClassVar[str] = "screening_feedback"

    time: str = ""
    gateway: str = ""
    request_id: str = ""
    agency_id: str = ""
    officer_id: str = ""
    screen_request_id: str = ""
    list: str = ""
    measure: str = ""
    applied: bool = False
    decision_reference: str = ""
    note: str = ""
    outcome: str = "ok"
    measures_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "time": self.time,
                "gateway": self.gateway,
                "request_id": self.request_id,
                "agency_id": self.agency_id,
                "officer_id": self.officer_id,
                "screen_request_id": self.screen_request_id,
                "list": self.list,
                "measure": self.measure,
                "applied": self.applied,
                "decision_reference": self.decision_reference,
                "note": self.note,
                "outcome": self.outcome,
            },
            measures_version=self.measures_version,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MeasureFeedbackRecord:
        """Read a decoded feedback record; absent or mistyped fields read as empty."""
        return cls(
            time=_str(obj, "time") or "",
            gateway=_str(obj, "gateway") or "",
            request_id=_str(obj, "request_id") or "",
            agency_id=_str(obj, "agency_id") or "",
            officer_id=_str(obj, "officer_id") or "",
            screen_request_id=_str(obj, "screen_request_id") or "",
            list=_str(obj, "list") or "",
            measure=_str(obj, "measure") or "",
            applied=bool(_bool(obj, "applied")),
            decision_reference=_str(obj, "decision_reference") or "",
            note=_str(obj, "note") or "",
            outcome=_str(obj, "outcome") or "",
            measures_version=_str(obj, "measures_version"),
        )


#: Record kinds that carry a request's own reservation and settlement in ``billing``.
BILLED_KINDS: frozenset[str] = frozenset({QueryRecord.KIND, ScreeningRecord.KIND})


@dataclass(frozen=True, slots=True)
class ObjectionRecord:
    """A step of an objection or a credit-repair application (:mod:`gateway.objections`).

    ``action`` is ``file``, ``repair_apply``, ``statement`` (by an agency), ``routed``,
    ``answered``, ``overdue`` (noticed once, by the gateway's poller) or ``repair_check``
    (refused before routing). ``actor`` is the agency (``"gateway"`` for the poller);
    ``subject`` the subject's keyed pseudonym, never its identifier; ``record``, ``grounds``,
    ``statement`` and ``note`` only as :func:`gateway.pipeline.freetext.recordable` lets
    them (an identifier becomes its keyed pseudonym). ``outcome`` is ``"ok"`` or
    ``"refused"`` (then ``error``: the ErrorInfo reason); ``answer`` is the department's
    outcome (``corrected``, ``confirmed``, ``undetermined``, ``repair_approved``...). Dates
    are ISO days in Beijing time. None fields are absent.
    """

    KIND: ClassVar[str] = "objection"

    action: str
    actor: str
    outcome: str
    error: str | None = None
    objection_id: str | None = None
    objection_kind: str | None = None
    subject: str | None = None
    department: str | None = None
    dataset: str | None = None
    record: str | None = None
    grounds: str | None = None
    evidence_sha256: tuple[str, ...] | None = None
    consent_id: str | None = None
    via: str | None = None
    filed_on: str | None = None
    due_on: str | None = None
    answer: str | None = None
    answered_on: str | None = None
    note: str | None = None
    statement: str | None = None
    severity: str | None = None
    allowed_from: str | None = None
    time: str | None = None
    gateway: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "action": self.action,
                "actor": self.actor,
                "outcome": self.outcome,
            },
            error=self.error,
            objection_id=self.objection_id,
            objection_kind=self.objection_kind,
            subject=self.subject,
            department=self.department,
            dataset=self.dataset,
            record=self.record,
            grounds=self.grounds,
            evidence_sha256=None if self.evidence_sha256 is None else list(self.evidence_sha256),
            consent_id=self.consent_id,
            via=self.via,
            filed_on=self.filed_on,
            due_on=self.due_on,
            answer=self.answer,
            answered_on=self.answered_on,
            note=self.note,
            statement=self.statement,
            severity=self.severity,
            allowed_from=self.allowed_from,
            time=self.time,
            gateway=self.gateway,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ObjectionRecord:
        """Read a decoded objection record (its ``kind`` is not checked); absent or
        mistyped fields read as ``""`` or None."""
        evidence = obj.get("evidence_sha256")
        return cls(
            action=_str(obj, "action") or "",
            actor=_str(obj, "actor") or "",
            outcome=_str(obj, "outcome") or "",
            error=_str(obj, "error"),
            objection_id=_str(obj, "objection_id"),
            objection_kind=_str(obj, "objection_kind"),
            subject=_str(obj, "subject"),
            department=_str(obj, "department"),
            dataset=_str(obj, "dataset"),
            record=_str(obj, "record"),
            grounds=_str(obj, "grounds"),
            evidence_sha256=tuple(e for e in evidence if isinstance(e, str))
            if isinstance(evidence, list)
            else None,
            consent_id=_str(obj, "consent_id"),
            via=_str(obj, "via"),
            filed_on=_str(obj, "filed_on"),
            due_on=_str(obj, "due_on"),
            answer=_str(obj, "answer"),
            answered_on=_str(obj, "answered_on"),
            note=_str(obj, "note"),
            statement=_str(obj, "statement"),
            severity=_str(obj, "severity"),
            allowed_from=_str(obj, "allowed_from"),
            time=_str(obj, "time"),
            gateway=_str(obj, "gateway"),
        )


@dataclass(frozen=True, slots=True)
class SubjectAccessRecord:
    """A read of the subject index or the consent archive (:mod:`gateway.api.subject`).

    ``action`` is ``list_query_records`` (a subject's own), ``list_by_basis`` (an officer)
    or ``get_archived_consent`` (an auditor); ``principal`` the verified caller;
    ``subject_pseudonym`` the subject whose records were listed (keyed pseudonym, never the
    identifier); ``legal_basis`` and ``consent_id`` what was asked for (a published code, a
    consent id as query records name it); ``count`` how many entries were returned.
    """

    KIND: ClassVar[str] = "subject_access"

    action: str
    principal: str
    outcome: str = "ok"
    count: int | None = None
    subject_pseudonym: str | None = None
    legal_basis: str | None = None
    consent_id: str | None = None
    time: str | None = None
    gateway: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object appended to the log (None fields left out)."""
        return _set(
            {
                "kind": self.KIND,
                "action": self.action,
                "principal": self.principal,
                "outcome": self.outcome,
            },
            count=self.count,
            subject_pseudonym=self.subject_pseudonym,
            legal_basis=self.legal_basis,
            consent_id=self.consent_id,
            time=self.time,
            gateway=self.gateway,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SubjectAccessRecord:
        """Read a decoded record (its ``kind`` is not checked); absent or mistyped fields
        read as ``""`` or None."""
        return cls(
            action=_str(obj, "action") or "",
            principal=_str(obj, "principal") or "",
            outcome=_str(obj, "outcome") or "",
            count=_int(obj, "count"),
            subject_pseudonym=_str(obj, "subject_pseudonym"),
            legal_basis=_str(obj, "legal_basis"),
            consent_id=_str(obj, "consent_id"),
            time=_str(obj, "time"),
            gateway=_str(obj, "gateway"),
        )
