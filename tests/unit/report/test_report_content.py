"""gateway.report.content: a report's content is plain, float-free JSON built from the answer,
and every member of credit.v1.Record reaches it (new members too, without a code change)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.descriptor import FieldDescriptor

from gateway.audit.records import canonical_json
from gateway.domain.catalog import load_catalog
from gateway.report import build_content
from gateway.report.content import record_json
from protos.credit.v1 import common_pb2
from tests.unit.report.report_kit import USCC, facts, kit, response


def _set_every_field(message: common_pb2.Record) -> None:
    """Give every field of ``message`` a value that is not its default, whatever its type."""
    for fd in message.DESCRIPTOR.fields:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value = getattr(message, fd.name)["k"]
            if isinstance(value, common_pb2.FieldValue):
                value.text = "v"
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            target = getattr(message, fd.name)
            child = target.add() if fd.is_repeated else target
            _set_every_field(child)
            if not fd.is_repeated:
                child.SetInParent()
            continue
        sample: object = {
            FieldDescriptor.TYPE_STRING: "2026-01-01",
            FieldDescriptor.TYPE_BOOL: True,
            FieldDescriptor.TYPE_BYTES: b"\x01",
        }.get(fd.type, 1)
        if fd.is_repeated:
            getattr(message, fd.name).append(sample)
        else:
            setattr(message, fd.name, sample)


def test_every_member_of_record_reaches_the_content() -> None:
    # Issue 14 adds dispute marks and statements to Record: they appear here as they are.
    record = common_pb2.Record()
    _set_every_field(record)
    out = record_json(record)
    assert set(out) == {fd.name for fd in common_pb2.Record.DESCRIPTOR.fields}
    assert out["fields"] == [{"name": "k", "title": "", "type": "text", "value": "v"}]
    canonical_json(out)  # no float, nothing JSON cannot hold


def test_fields_follow_the_catalog_order_with_titles_and_types() -> None:
    content = kit().content()
    market = content["sections"][0]
    assert (market["name"], market["status"], market["status_title"]) == (
        "市场监督管理局",
        "ok",
        "已答复",
    )
    penalties = market["datasets"][0]
    assert (penalties["title"], penalties["negative"], penalties["aged_out"]) == (
        "行政处罚信息",
        True,
        2,
    )
    record = penalties["records"][0]
    assert [f["name"] for f in record["fields"]] == ["decision_number", "fine_fen", "decided_on"]
    assert record["fields"][1] == {
        "name": "fine_fen",
        "title": "罚没款金额",
        "type": "money_fen",
        "value": 1234567,
    }
    assert record["disputed"] is True and record["event_end_date"] == "2024-01-02"
    assert market["withheld"] == [
        {
            "dataset": "registration",
            "dataset_title": "企业登记信息",
            "field": "address",
            "field_title": "住所",
            "reason": "consent_required",
            "reason_title": "须经信息主体书面同意",
            "detail": "no consent token",
        }
    ]
    tax = content["sections"][1]
    assert (tax["status"], tax["detail"], tax["datasets"]) == ("timed_out", "deadline", [])


def test_the_header_states_who_asked_about_whom_when() -> None:
    content = kit().content()
    assert content["subject"] == {
        "type": "enterprise",
        "type_title": "企业（统一社会信用代码）",
        "id": USCC,
    }
    assert content["agency"] == {"id": "bank-001", "name": "示例商业银行"}
    assert content["purpose"] == {"code": "lending", "title": "贷款审批"}
    assert content["generated_at"] == "2026-11-30T08:00:00Z"
    assert content["charge"] == {"amount_fen": 500}
    assert content["receipt"]["response_digest"] == bytes(range(32)).hex()
    canonical_json(content)


def test_an_answer_without_a_receipt_makes_no_report() -> None:
    r = response()
    r.ClearField("receipt")
    with pytest.raises(ValueError, match="no audit receipt"):
        build_content(r, facts(), load_catalog(), generated_at=dt.datetime.now(dt.UTC))
