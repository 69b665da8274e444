"""Nothing personal in the permanent record, end to end: a
federation over real mutual TLS, a refused and an answered query carrying free
text, a policy officer's and finance staff's free text; the signed audit log
file, the gateway's JSON log lines and the error details are searched for the
identifier in every form."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.audit.records import decode_record
from gateway.dev.devstack import DevStack
from gateway.pipeline.freetext import PSEUDONYM_PREFIX
from gateway.runtime.logs import JsonFormatter
from protos.credit.v1 import billing_pb2, billing_pb2_grpc, policy_admin_pb2, policy_admin_pb2_grpc
from tests.integration.conftest import subject
from tests.unit.privacy_kit import leaks

pytestmark = pytest.mark.asyncio(loop_scope="module")

ISSUE_ID = "11010519491231002X"
SPLIT = "１１０１０５-1949 1231.002x"  # the same number, full-width and split
HEX_UUID = "550e8400e29b41d4a716446655440000"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[_Capture]:
    """Every log line of the gateway process, as the JSON formatter writes it."""
    capture = _Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


async def _records(stack: DevStack) -> list[tuple[bytes, dict[str, Any]]]:
    log = stack.gateway._audit.log  # type: ignore[union-attr]
    out = []
    for i in range(log.size):
        leaf = await log.read_leaf(i)
        assert leaf is not None
        out.append((leaf, decode_record(leaf)))
    return out


def _files_hold(stack: DevStack, needle: str) -> bool:
    """Whether the audit log's files on disk (database, write-ahead log) hold
    ``needle`` as UTF-8 bytes."""
    folder = stack.audit["log"].parent
    blob = b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())
    return needle.encode() in blob or needle.lower().encode() in blob


def _bad_request_field(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    return bad.field_violations[0].field


async def test_a_refused_query_records_no_identifier_anywhere(
    stack: DevStack, captured: _Capture
) -> None:
    async with stack.client("ndrc") as client:
        for field, text in (("officer_id", ISSUE_ID), ("case_reference", SPLIT)):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await client.query(
                    enterprise=subject(stack, "enterprise_clean"),
                    purpose="supervision_inspection",
                    **{field: text},
                )
            err = exc.value
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (err.details() or "").startswith(field)
            assert _bad_request_field(err) == field
            status = rpc_status.from_call(err)
            assert status is not None and not leaks(ISSUE_ID, json.dumps(str(status)))
    refused = [
        (leaf, r)
        for leaf, r in await _records(stack)
        if r.get("kind") == "query" and r.get("error_field") in ("officer_id", "case_reference")
    ]
    assert len(refused) == 2
    for leaf, record in refused:
        assert record["outcome"] == "invalid_argument"
        assert record[record["error_field"]].startswith(PSEUDONYM_PREFIX)
        assert record["purpose"] == "supervision_inspection"  # a known purpose, by name
        assert not leaks(ISSUE_ID, leaf)
    assert not _files_hold(stack, ISSUE_ID) and not _files_hold(stack, SPLIT)
    assert captured.lines and not any(leaks(ISSUE_ID, line) for line in captured.lines)


async def test_an_answered_query_records_its_free_text_as_written(
    stack: DevStack, captured: _Capture
) -> None:
    async with stack.client("ndrc") as client:
        response = await client.query(
            enterprise=subject(stack, "enterprise_clean"),
            purpose="supervision_inspection",
            case_reference=HEX_UUID,  # was refused: a UUID in hex form
            officer_id="officer 7",
        )
    leaf = await stack.gateway._audit.log.read_leaf(response.receipt.log_index)  # type: ignore[union-attr]
    assert leaf is not None
    record = decode_record(leaf)
    assert record["outcome"] in ("ok", "partial")
    assert record["case_reference"] == HEX_UUID and record["officer_id"] == "officer 7"
    assert any(
        '"outcome": "ok"' in line or '"outcome": "partial"' in line for line in captured.lines
    )


async def test_officer_and_finance_free_text_is_refused_and_not_recorded(
    stack: DevStack, captured: _Capture
) -> None:
    officer = sorted(stack.officer_tokens)[0]
    channel, md = stack.channel("officers", officer)
    async with channel:
        stub = policy_admin_pb2_grpc.PolicyAdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Draft(
                policy_admin_pb2.DraftRequest(reason=f"complaint by {SPLIT}"), metadata=md
            )
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request_field(exc.value) == "reason"
    channel, md = stack.channel("finance", "finance")
    async with channel:
        stub = billing_pb2_grpc.BillingAdminStub(channel)
        for field in ("reference", "note"):
            request = billing_pb2.TopUpRequest(
                account_id="bank", amount_fen=100, reference="t-4711", note="ok"
            )
            setattr(request, field, f"for {ISSUE_ID}")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.TopUp(request, metadata=md)
            assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert _bad_request_field(exc.value) == field
            assert ISSUE_ID not in (exc.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetBalance(billing_pb2.GetBalanceRequest(account_id=ISSUE_ID), metadata=md)
        assert exc.value.code() is grpc.StatusCode.NOT_FOUND
        assert ISSUE_ID not in (exc.value.details() or "")
    drafts = [
        (leaf, r)
        for leaf, r in await _records(stack)
        if r.get("kind") == "policy_admin" and r.get("action") == "draft"
    ]
    assert drafts and drafts[-1][1]["reason"].startswith(PSEUDONYM_PREFIX)
    assert not any(leaks(ISSUE_ID, leaf) for leaf, _ in await _records(stack))
    assert not _files_hold(stack, ISSUE_ID) and not _files_hold(stack, SPLIT)
    assert not any(leaks(ISSUE_ID, line) for line in captured.lines)
