"""What operators and finance staff see of a running gateway: one JSON log line
per query without identifiers or tokens, and the finance-only billing service."""

from __future__ import annotations

import json
import logging

import grpc
import pytest

from gateway.dev.devstack import DevStack
from gateway.runtime.logs import JsonFormatter
from protos.credit.v1 import billing_pb2, billing_pb2_grpc
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_one_json_line_per_query_and_no_personal_data(stack: DevStack) -> None:
    capture = _Capture()
    logger = logging.getLogger("credit_gateway.query")
    logger.addHandler(capture)
    level = logger.level
    logger.setLevel(logging.INFO)
    person = subject(stack, "person_with_loans")
    try:
        async with stack.client("bank") as client:
            response = await client.query(person=person, purpose="lending", mode="paid")
            with pytest.raises(grpc.aio.AioRpcError):
                await client.query(person=person[:-1] + "0", purpose="lending", mode="paid")
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)
    entries = [json.loads(line) for line in capture.lines if '"msg": "query"' in line]
    assert [e["outcome"] for e in entries][-2:] in (
        ["ok", "invalid_identifier"],
        ["partial", "invalid_identifier"],
    )
    ok = entries[-2]
    assert ok["request_id"] == response.request_id and ok["agency"] == "bank"
    assert isinstance(ok["latency_ms"], float)
    text = "\n".join(capture.lines)
    token = stack.tokens["bank"].read_text().strip()
    assert person not in text and person[:-1] not in text and token not in text


async def test_billing_admin_is_for_finance_staff_only(stack: DevStack) -> None:
    channel, md = stack.channel("finance", "finance")
    async with channel:
        stub = billing_pb2_grpc.BillingAdminStub(channel)
        answer = await stub.GetBalance(
            billing_pb2.GetBalanceRequest(account_id="bank"), metadata=md
        )
    assert answer.account.balance_fen == await stack.balance_fen("bank")
    channel, md = stack.channel("agencies", "bank")
    async with channel:
        stub = billing_pb2_grpc.BillingAdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="bank"), metadata=md)
    assert exc.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
