"""Typed audit records encode to the very bytes the hand-built dicts did.

``_old_query_record``, ``_old_sections`` and ``_old_billing_*`` are the writers as they
were before the types, kept verbatim: existing logs must still verify, so a record built
the new way must encode to identical canonical bytes for the same inputs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import gateway.audit.auditor as auditing
from gateway.audit.auditor import QueryAuditor, response_digest
from gateway.audit.records import canonical_json, decode_record, encode_record
from gateway.audit.schema import (
    BillingLine,
    BillingRecord,
    PolicyAdminRecord,
    QueryBilling,
    QueryRecord,
    RefusalRecord,
)
from gateway.auth.identity import Caller
from gateway.billing.ledger import Entry, PricedLine, RequestRecord
from gateway.billing.reconcile import Movements, record_key, record_movements
from gateway.domain import names
from gateway.errors import GatewayError, InvalidArgumentError, QuotaExhaustedError
from gateway.pipeline.query import safe_request_id
from gateway.pipeline.validation import ValidQuery
from protos.credit.v1 import common_pb2, query_pb2

KEY = b"k" * 32
NOW = "2026-03-01T08:00:00.000Z"


def _old_sections(
    response: query_pb2.QueryResponse, allowed: Mapping[str, Mapping[str, Sequence[str]]] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in response.sections:
        granted = allowed.get(s.department, {}) if allowed is not None else None
        if granted is not None:
            fields = {d.dataset: list(granted.get(d.dataset, ())) for d in s.datasets if d.records}
        else:
            fields = {
                d.dataset: sorted({f for r in d.records for f in r.fields}) for d in s.datasets
            }
        out[s.department] = {
            "status": names.STATUS.get(s.status, "unspecified"),
            "datasets": [d.dataset for d in s.datasets],
            "records": sum(len(d.records) for d in s.datasets),
            "fields": fields,
            "aged_out": sum(d.aged_out for d in s.datasets),
            "withheld": [
                {
                    "dataset": w.dataset,
                    "field": w.field,
                    "reason": names.REASON.get(w.reason, "unspecified"),
                }
                for w in s.withheld
            ],
        }
    return out


def _old_query_record(
    a: QueryAuditor,
    query: ValidQuery | None,
    caller: Caller | None,
    request: query_pb2.QueryRequest,
    response: query_pb2.QueryResponse | None,
    error: GatewayError | None,
    *,
    consent_id: str = "",
    charge_fen: int = 0,
    billing: Mapping[str, Any] | None = None,
    allowed: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "query",
        "time": NOW,
        "gateway": a._origin,
        "request_id": safe_request_id(request),
        "agency_id": caller.agency_id if caller else "",
        "cert_thumbprint": caller.cert_thumbprint if caller else "",
        "officer_id": a.free_text(request.officer_id),
        "represented_party": a.free_text(request.represented_party),
        "case_reference": a.free_text(request.case_reference),
        "purpose": a._purpose(query, request.purpose),
        "mode": names.MODE.get(request.mode, "unspecified"),
        "consent_id": a.free_text(consent_id),
        "request_hmac": hmac.new(
            a._key, request.SerializeToString(deterministic=True), hashlib.sha256
        ).hexdigest(),
        "charge_fen": charge_fen,
    }
    if billing is not None:
        record["billing"] = dict(billing)
    if query is not None:
        record["subject_type"] = query.subject_type
        record["subject_pseudonym"] = a.pseudonym(query.subject_type, query.subject_id)
    else:
        record["subject_type"] = names.SUBJECT_TYPE.get(request.subject.type, "unspecified")
        record["subject_pseudonym"] = ""
    if error is not None:
        record["outcome"] = error.reason.lower()
        if isinstance(error, InvalidArgumentError):
            record["error_field"] = error.field
    if response is not None:
        record["outcome"] = "ok"
        record["policy_version"] = response.policy_version
        record["catalog_version"] = response.catalog_version
        record["departments"] = _old_sections(response, allowed)
        record["response_sha256"] = response_digest(response).hex()
        if any(
            s["withheld"] or s["status"] not in ("ok", "not_found")
            for s in record["departments"].values()
        ):
            record["outcome"] = "partial"
    return record


class _Log:
    """Captures what the auditor appends."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def append(self, record: dict[str, Any]) -> Any:
        self.records.append(record)
        return SimpleNamespace(origin="gw", index=len(self.records) - 1, leaf_hash=b"")


def _record(fields: dict[str, str]) -> common_pb2.Record:
    return common_pb2.Record(
        record_id="r", fields={k: common_pb2.FieldValue(text=v) for k, v in fields.items()}
    )


_RID = "0b6f8a52-6c1e-4d4e-9a53-2f1c3c1e9d10"


def _response(*, partial: bool) -> query_pb2.QueryResponse:
    market = query_pb2.DepartmentSection(
        department="market",
        status=query_pb2.SECTION_STATUS_OK,
        datasets=[
            query_pb2.DatasetResult(
                dataset="registration", records=[_record({"name": "某公司", "status": "存续"})]
            ),
            query_pb2.DatasetResult(dataset="licences", aged_out=2),
        ],
    )
    court = query_pb2.DepartmentSection(
        department="court",
        status=query_pb2.SECTION_STATUS_TIMED_OUT
        if partial
        else query_pb2.SECTION_STATUS_NOT_FOUND,
        withheld=[
            query_pb2.WithheldField(
                dataset="dishonest_debtors",
                field="amount",
                reason=query_pb2.WITHHOLD_REASON_CONSENT_REQUIRED,
            )
        ]
        if partial
        else [],
    )
    return query_pb2.QueryResponse(
        request_id=_RID, sections=[market, court], policy_version="7", catalog_version="c3"
    )


_REQUEST = query_pb2.QueryRequest(
    request_id=_RID,
    subject=common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id="91350100M000100Y43"),
    purpose="lending",
    mode=query_pb2.QUERY_MODE_PAID,
    officer_id="officer 7",
    case_reference="loan 2026-11 for 91350100M000100Y43",
    represented_party="",
)
# A validated query's request id is a UUID's canonical text (Validator.validate).
_QUERY = ValidQuery(_RID, "enterprise", "91350100M000100Y43", "lending", 2, ())
_CALLER = Caller("bank-001", "bank", cert_thumbprint="abc")
_BILLING = {
    "basis": "paid",
    "reserved_fen": 300,
    "charged_fen": 100,
    "state": "settled",
    "replay": False,
    "lines": [{"department": "market", "dataset": "registration", "amount_fen": 100}],
}

_CASES: dict[str, dict[str, Any]] = {
    "answered, fields from the decision": dict(
        query=_QUERY, caller=_CALLER, request=_REQUEST, response=_response(partial=False),
        error=None, consent_id="c-9", charge_fen=100, billing=_BILLING,
        allowed={"market": {"registration": ["name", "status"]}},
    ),
    "partial, fields from the records": dict(
        query=_QUERY, caller=_CALLER, request=_REQUEST, response=_response(partial=True),
        error=None,
    ),
    "invalid argument, no subject": dict(
        query=None, caller=_CALLER, request=_REQUEST, response=None,
        error=InvalidArgumentError("subject.id", "bad check digit"),
    ),
    "refused, with a partial billing block": dict(
        query=_QUERY, caller=None,
        request=query_pb2.QueryRequest(request_id=_RID, purpose="not a purpose 5"),
        response=None, error=QuotaExhaustedError("used up"),
        billing={"reserved_fen": 100, "charged_fen": 100, "state": "settled", "replay": False},
    ),
    "neither answer nor error": dict(
        query=None, caller=None, request=query_pb2.QueryRequest(), response=None, error=None
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_CASES))
async def test_a_query_record_encodes_to_the_bytes_of_the_old_dict(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditing, "_now", lambda: NOW)
    log = _Log()
    auditor = QueryAuditor(log, KEY, gateway_origin="gw", purposes=["lending"])  # type: ignore[arg-type]
    args = dict(_CASES[case])
    positional = [args.pop(k) for k in ("query", "caller", "request", "response", "error")]
    await auditor.append_query(*positional, **args)
    old = _old_query_record(auditor, *positional, **args)
    assert encode_record(log.records[0], seq=5) == encode_record(old, seq=5)
    # ... and the reader gives back what was written.
    leaf = encode_record(log.records[0], seq=5)
    assert QueryRecord.from_json(decode_record(leaf)).to_json() == log.records[0]


_AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
_REC = RequestRecord(
    request_id="q-1", account_id="bank-001", basis="paid", state="settled", digest="d",
    quota_key="", period="", quota_limit=0,
    lines=(PricedLine("market", "registration", 100), PricedLine("tax", "arrears", 300)),
    delivered=(PricedLine("market", "registration", 100),), reserved_fen=400,
    charged_fen=100, balance_fen=900, free_remaining=0, attempts=2, created_at=_AT,
    updated_at=_AT,
)  # fmt: skip
_ENTRY = Entry(
    seq=3, account_id="bank-001", kind="top_up", amount_fen=50_000, request_id="",
    reference="wire 2026-03-01", department="", dataset="", balance_fen=51_000, held_fen=0,
    at=_AT, actor="finance-1",
)  # fmt: skip


def _old_billing_event(
    kind: str, rec: RequestRecord, amount_fen: int, reason: str, movements: Movements
) -> dict[str, Any]:
    lines = rec.delivered if kind == "charge" else rec.lines
    event: dict[str, Any] = {
        "kind": "billing",
        "event": kind,
        "request_id": rec.request_id,
        "attempt": rec.attempts,
        "agency_id": rec.account_id,
        "basis": rec.basis,
        "amount_fen": amount_fen,
        "movements": movements.as_dict(),
        "lines": [
            {"department": x.department, "dataset": x.dataset, "amount_fen": x.amount_fen}
            for x in lines
        ],
        "balance_fen": rec.balance_fen,
        "free_remaining": rec.free_remaining,
        "at": rec.updated_at.isoformat(),
    }
    if reason:
        event["reason"] = reason
    return event


def _old_top_up(entry: Entry, actor: str, reason: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "billing",
        "event": "top_up",
        "request_id": "",
        "reference": entry.reference,
        "agency_id": entry.account_id,
        "amount_fen": entry.amount_fen,
        "balance_fen": entry.balance_fen,
        "actor": actor,
        "at": entry.at.isoformat(),
    }
    if reason is not None:
        event["reason"] = reason
    return event


@pytest.mark.parametrize(
    ("kind", "amount", "reason", "movements"),
    [
        ("charge", 100, "", Movements(charge=100, release=300)),
        ("release", 400, "department timed out", Movements(reserve=400, release=400)),
        ("refund", 100, "recovered", Movements(refund=100)),
    ],
)
def test_a_billing_event_encodes_to_the_bytes_of_the_old_dict(
    kind: str, amount: int, reason: str, movements: Movements
) -> None:
    lines = _REC.delivered if kind == "charge" else _REC.lines
    new = BillingRecord(
        event=kind, request_id=_REC.request_id, attempt=_REC.attempts,
        agency_id=_REC.account_id, basis=_REC.basis, amount_fen=amount,
        movements=movements.as_dict(),
        lines=tuple(BillingLine(x.department, x.dataset, x.amount_fen) for x in lines),
        balance_fen=_REC.balance_fen, free_remaining=_REC.free_remaining,
        at=_REC.updated_at.isoformat(), reason=reason or None,
    )  # fmt: skip
    old = _old_billing_event(kind, _REC, amount, reason, movements)
    assert canonical_json(new.to_json()) == canonical_json(old)
    assert BillingRecord.from_json(old) == new
    assert record_movements(new.to_json()) == movements
    assert record_key(new.to_json()) == ("request", "q-1")


@pytest.mark.parametrize("reason", [None, "recorded at start-up"])
def test_a_top_up_event_encodes_to_the_bytes_of_the_old_dict(reason: str | None) -> None:
    new = BillingRecord(
        event="top_up", request_id="", reference=_ENTRY.reference, agency_id=_ENTRY.account_id,
        amount_fen=_ENTRY.amount_fen, balance_fen=_ENTRY.balance_fen, actor="finance-1",
        at=_ENTRY.at.isoformat(), reason=reason,
    )  # fmt: skip
    old = _old_top_up(_ENTRY, "finance-1", reason)
    assert canonical_json(new.to_json()) == canonical_json(old)
    assert record_key(old) == ("top_up", "wire 2026-03-01")


def test_reading_is_lenient_with_old_and_odd_records() -> None:
    # Written before movements existed: the amount counts under its event.
    old = {"kind": "billing", "event": "charge", "request_id": "q", "amount_fen": 7}
    assert record_movements(old) == Movements(charge=7)
    assert BillingRecord.from_json(old).movements is None
    odd = {"kind": "query", "request_id": 5, "billing": {"reserved_fen": "x", "lines": 3}}
    q = QueryRecord.from_json(odd)
    assert q.request_id == "" and q.billing == QueryBilling()
    assert record_key(odd) is None


def _old_refusal(
    service: str, method: str, reason: str, status: str, principal: str, thumb: str, field: str
) -> dict[str, Any]:
    """The edge's refusal fields as it built them before the types (verbatim)."""
    record: dict[str, Any] = {
        "service": service,
        "method": method,
        "outcome": reason.lower(),
        "status": status,
        "principal": principal,
        "cert_thumbprint": thumb,
    }
    if field:
        record["error_field"] = field
    return record


def _logged(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """What ``QueryAuditor.append_event`` appends."""
    return {"kind": kind, "time": "2026-03-01T08:00:00+00:00", "gateway": "gw-1", **fields}


@pytest.mark.parametrize(
    ("principal", "thumb", "field"),
    [("", "", "request"), ("bank-001", "dGh1bWI", ""), ("auditor-1", "", "tree_size")],
)
def test_a_refusal_record_encodes_to_the_bytes_of_the_old_dict(
    principal: str, thumb: str, field: str
) -> None:
    new = RefusalRecord(
        service="credit.v1.AuditService", method="GetInclusionProof",
        outcome="invalid_argument", status="INVALID_ARGUMENT", principal=principal,
        cert_thumbprint=thumb, error_field=field or None,
    ).to_json()  # fmt: skip
    old = _old_refusal(
        "credit.v1.AuditService", "GetInclusionProof", "INVALID_ARGUMENT", "INVALID_ARGUMENT",
        principal, thumb, field,
    )  # fmt: skip
    kind = new.pop("kind")
    assert kind == RefusalRecord.KIND == "refusal"
    assert canonical_json(_logged(kind, new)) == canonical_json(_logged("refusal", old))
    read = RefusalRecord.from_json(_logged("refusal", old))
    assert read.time == "2026-03-01T08:00:00+00:00" and read.gateway == "gw-1"
    assert canonical_json(read.to_json()) == canonical_json(_logged("refusal", old))


def _free(text: str) -> str:
    return "hmac:x" if "9" in text else text


def _old_policy_admin(action: str, officer: str, **fields: Any) -> dict[str, Any]:
    """The workflow's record fields as it built them before the types (verbatim)."""
    record = {"action": action, "officer": _free(officer), **fields}
    if "reason" in record:
        record["reason"] = _free(record["reason"])
    if "files" in record:
        record["files"] = [_free(name) for name in record["files"]]
    return record


_DONE = {"outcome": "ok", "version": 3}
_POLICY_ADMIN_CASES: list[tuple[str, dict[str, Any]]] = [
    ("draft", {**_DONE, "parent": 2, "content_hash": "ab12", "files": ["policy.csv", "n9"],
               "reason": "ticket 4711"}),
    ("draft", {**_DONE, "parent": 0, "content_hash": "ab12", "files": [], "reason": "9"}),
    ("validate", {**_DONE, "problems": 0}),
    ("test", {**_DONE, "cases": 41, "failures": 1}),
    ("diff", {**_DONE, "base": 2, "changes": 5}),
    ("replay", {**_DONE, "replayed": 100, "flips": 3}),
    ("approve", {**_DONE, "author": "officer_a", "reason": "looks right"}),
    ("activate", {**_DONE, "previous": 2, "policy_version": "v3-ab12", "reason": "go"}),
    ("rollback", {**_DONE, "previous": 3, "policy_version": "v2-cd34", "reason": "undo"}),
    ("draft", {"outcome": "refused", "error": "INVALID_ARGUMENT", "reason": "x"}),
    ("approve", {"outcome": "refused", "error": "FOUR_EYES", "version": 3, "reason": "ok"}),
    ("activate", {"outcome": "refused", "error": "NOT_APPROVED", "version": 3,
                  "previous": 0, "reason": "go"}),
    ("list", {"outcome": "refused", "error": "PERMISSION_DENIED"}),
]  # fmt: skip


@pytest.mark.parametrize(("action", "fields"), _POLICY_ADMIN_CASES)
@pytest.mark.parametrize("officer", ["officer_b", "9"])
def test_a_policy_admin_record_encodes_to_the_bytes_of_the_old_dict(
    action: str, fields: dict[str, Any], officer: str
) -> None:
    typed = dict(fields)
    if "reason" in typed:
        typed["reason"] = _free(typed["reason"])
    if "files" in typed:
        typed["files"] = tuple(_free(name) for name in typed["files"])
    new = PolicyAdminRecord(action=action, officer=_free(officer), **typed).to_json()
    old = _old_policy_admin(action, officer, **fields)
    kind = new.pop("kind")
    assert kind == PolicyAdminRecord.KIND == "policy_admin"
    assert canonical_json(_logged(kind, new)) == canonical_json(_logged(kind, old))
    read = PolicyAdminRecord.from_json(_logged(kind, old))
    assert canonical_json(read.to_json()) == canonical_json(_logged(kind, old))


@pytest.mark.parametrize(
    "ns",
    [0, 999_999, 1_764_547_151_123_456_789, 1_764_547_151_999_999_999, 1_764_547_152_000_000_000],
)
def test_the_record_time_is_what_datetime_writes(ns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record's ``time``, formatted once a second, is ``isoformat`` to the millisecond
    (truncated), UTC as ``Z``: the text the records held before."""
    monkeypatch.setattr(auditing.time, "time_ns", lambda: ns)
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    assert auditing._now() == when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
