"""What a credit report says, as plain JSON-able data built from one query's answer.

:func:`build_content` turns a :class:`~protos.credit.v1.query_pb2.QueryResponse` (the answer
exactly as the agency got it, receipt included) into the ``content`` member of a report
envelope (:mod:`gateway.audit.reportcheck`): strings, integers, booleans, lists and objects
only (never a float), so its canonical JSON is well defined and signable.

Records are converted field by field from the message itself (:func:`record_json`): a field
added to ``credit.v1.Record`` later (dispute marks with dates, the subject's statements)
appears in the content without a change here, and the PDF shows it under its name until
:data:`gateway.report.pdf.RECORD_LABELS` gives it a Chinese label.

Amounts are integer fen; dates are ``YYYY-MM-DD``; ``generated_at`` is UTC
(``YYYY-MM-DDTHH:MM:SSZ``); ``query_date`` is the gateway's date of the decision.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.domain import names
from gateway.domain.catalog import Catalog
from protos.credit.v1 import common_pb2, query_pb2

__all__ = [
    "REASON_TITLES",
    "STATUS_TITLES",
    "SUBJECT_TITLES",
    "ReportFacts",
    "build_content",
    "record_json",
]

#: Section statuses in words (the report's language).
STATUS_TITLES = {
    "ok": "已答复",
    "not_found": "无相关记录",
    "unavailable": "暂时无法获取",
    "timed_out": "超时未答复",
    "withheld": "不予提供",
    "unspecified": "未说明",
}
#: Why an item was withheld, in words.
REASON_TITLES = {
    "not_granted": "本机构无权查询该项",
    "consent_required": "须经信息主体书面同意",
    "paid_mode_required": "须以付费方式查询",
    "free_mode_required": "仅限免费查询",
    "prohibited_item": "法律禁止采集的信息",
    "state_secret": "涉及国家秘密",
    "department_unavailable": "提供部门暂时无法获取",
    "unspecified": "未说明",
}
SUBJECT_TITLES = {"enterprise": "企业（统一社会信用代码）", "person": "自然人（公民身份号码）"}
_FIELD_TYPES: dict[int, str] = {
    int(v): k.removeprefix("FIELD_TYPE_").lower() for k, v in common_pb2.FieldType.items()
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportFacts:
    """What the report states beside the answer: who asked, about whom, for what.

    ``subject_type`` is "enterprise" or "person"; ``subject_id`` the validated identifier;
    ``purpose_title`` and ``agency_name`` are display names ("" when unknown: the code shows).
    """

    agency_id: str
    agency_name: str
    purpose: str
    purpose_title: str
    subject_type: str
    subject_id: str


def _value(message: Message, fd: FieldDescriptor) -> Any:
    value = getattr(message, fd.name)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            return {str(k): _message(v) if isinstance(v, Message) else v for k, v in value.items()}
        if fd.is_repeated:
            return [_message(m) for m in value]
        return _message(value)
    if fd.is_repeated:
        return [_scalar(fd, v) for v in value]
    return _scalar(fd, value)


def _scalar(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        known = fd.enum_type.values_by_number.get(value) if fd.enum_type else None
        return known.name if known is not None else value
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return str(value)  # canonical JSON has no floats; none of our messages has one today
    return value


def _message(message: Message) -> dict[str, Any]:
    """Every set field of ``message`` by its proto name (proto3 defaults left out)."""
    if isinstance(message, common_pb2.FieldValue):
        kind = message.WhichOneof("kind")
        return {} if kind is None else {kind: getattr(message, kind)}
    return {fd.name: _value(message, fd) for fd, _ in message.ListFields()}


def record_json(
    record: common_pb2.Record, titles: Mapping[str, tuple[str, int]] | None = None
) -> dict[str, Any]:
    """One record as content: ``fields`` becomes an ordered list of ``{"name", "title",
    "type", "value"}`` (catalog order, then the rest by name); every other set field of the
    Record message appears under its proto name, as the message holds it.

    ``titles`` maps a field name to (Chinese title, catalog FieldType) from the catalog.
    """
    out = _message(record)
    titles = titles or {}
    order = {name: i for i, name in enumerate(titles)}
    fields = []
    for name in sorted(record.fields, key=lambda n: (order.get(n, len(order)), n)):
        value = record.fields[name]
        kind = value.WhichOneof("kind")
        title, declared = titles.get(name, ("", 0))
        fields.append(
            {
                "name": name,
                "title": title,
                "type": kind or _FIELD_TYPES.get(declared, "unspecified"),
                "value": None if kind is None else getattr(value, kind),
            }
        )
    out["fields"] = fields
    out.setdefault("disputed", False)  # always stated: "no objection" is part of the record
    return out


def _dataset_titles(
    catalog: Catalog, department: str, dataset: str
) -> tuple[str, bool, dict[str, tuple[str, int]]]:
    ds = catalog.dataset(department, dataset)
    if ds is None:
        return "", False, {}
    return ds.title, ds.negative, {f.name: (f.title, f.type) for f in ds.fields.values()}


def build_content(
    response: query_pb2.QueryResponse,
    facts: ReportFacts,
    catalog: Catalog,
    *,
    generated_at: dt.datetime,
) -> dict[str, Any]:
    """The report content for ``response`` (see the module docstring for its shape).

    ``generated_at`` must be timezone-aware; it is written in UTC. Raises ValueError if
    the response carries no audit receipt (a report must be checkable against the log).
    """
    receipt = response.receipt
    if not receipt.origin or not receipt.leaf_hash or not receipt.response_digest:
        raise ValueError("the answer carries no audit receipt")
    sections = []
    for section in response.sections:
        dept = catalog.departments.get(section.department)
        status = names.STATUS.get(section.status, "unspecified")
        datasets = []
        for result in section.datasets:
            title, negative, fields = _dataset_titles(catalog, section.department, result.dataset)
            datasets.append(
                {
                    "dataset": result.dataset,
                    "title": title,
                    "negative": negative,
                    "aged_out": result.aged_out,
                    "records": [record_json(r, fields) for r in result.records],
                }
            )
        withheld = []
        for w in section.withheld:
            title, _, fields = _dataset_titles(catalog, section.department, w.dataset)
            reason = names.REASON.get(w.reason, "unspecified")
            withheld.append(
                {
                    "dataset": w.dataset,
                    "dataset_title": title,
                    "field": w.field,
                    "field_title": fields.get(w.field, ("", 0))[0],
                    "reason": reason,
                    "reason_title": REASON_TITLES.get(reason, reason),
                    "detail": w.detail,
                }
            )
        sections.append(
            {
                "department": section.department,
                "name": dept.name if dept is not None else "",
                "status": status,
                "status_title": STATUS_TITLES.get(status, status),
                "detail": section.detail,
                "datasets": datasets,
                "withheld": withheld,
            }
        )
    at = generated_at.astimezone(dt.UTC).replace(microsecond=0)
    return {
        "title": "信用报告",
        "request_id": response.request_id,
        "generated_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "query_date": response.query_date,
        "subject": {
            "type": facts.subject_type,
            "type_title": SUBJECT_TITLES.get(facts.subject_type, facts.subject_type),
            "id": facts.subject_id,
        },
        "purpose": {"code": facts.purpose, "title": facts.purpose_title},
        "agency": {"id": facts.agency_id, "name": facts.agency_name},
        "policy_version": response.policy_version,
        "catalog_version": response.catalog_version,
        "sections": sections,
        "charge": {"amount_fen": response.charge.amount_fen},
        "receipt": {
            "origin": receipt.origin,
            "log_index": receipt.log_index,
            "leaf_hash": base64.b64encode(receipt.leaf_hash).decode(),
            "response_digest": receipt.response_digest.hex(),
        },
    }
