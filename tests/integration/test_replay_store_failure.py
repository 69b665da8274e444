"""A gateway whose SQLite replay store breaks while it serves fails closed: a new token
(whose ``jti`` must be recorded before it is trusted) is refused ``UNAVAILABLE``
``REPLAY_STORE_UNAVAILABLE`` with the public message, never ``UNKNOWN`` and never the file's
path or SQLite's text; the refusal is audited, no department asked, nothing charged.

Real parts: the development federation (mutual TLS, real tokens, the gateway's own
``[auth] replay_store`` file); the break is made from outside, as a damaged file would be
(its table dropped by another connection)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.cli.connect import build_request
from gateway.dev.devstack import DevStack
from protos.credit.v1 import query_pb2_grpc
from tests.integration.conftest import subject

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]


async def test_a_broken_replay_store_refuses_new_tokens_unavailable(tmp_path: Path) -> None:
    async with await DevStack.create(tmp_path / "s", subjects=60) as stack:
        request = build_request(
            enterprise=subject(stack, "enterprise_clean"), purpose="government_procurement"
        )
        channel, metadata = stack.channel("agencies", "procurement")  # a freshly minted token
        async with channel:
            answer = await query_pb2_grpc.QueryServiceStub(channel).Query(
                request, metadata=metadata, timeout=30
            )
        assert answer.request_id == request.request_id  # the store works before the break
        replay = Path(stack.describe()["replay_store"])
        conn = sqlite3.connect(replay)
        conn.execute("DROP TABLE seen_jti")
        conn.commit()
        conn.close()
        refused = build_request(
            enterprise=subject(stack, "enterprise_clean"), purpose="government_procurement"
        )
        channel, metadata = stack.channel("agencies", "procurement")  # a new jti
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await query_pb2_grpc.QueryServiceStub(channel).Query(
                    refused, metadata=metadata, timeout=30
                )
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "the gateway cannot record new tokens now; try again later"
        status = rpc_status.from_call(err.value)
        assert status is not None
        infos = []
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                infos.append(info.reason)
        assert infos == ["REPLAY_STORE_UNAVAILABLE"]
        # The refusal is on the audit record (durable before the answer): no department
        # asked, nothing charged.
        conn = sqlite3.connect(stack.audit["log"])
        (leaf,) = conn.execute("SELECT leaf FROM entries ORDER BY idx DESC LIMIT 1").fetchone()
        conn.close()
        record = json.loads(leaf)
        assert record["request_id"] == refused.request_id
        assert (record["kind"], record["outcome"]) == ("query", "replay_store_unavailable")
        assert record["charge_fen"] == 0 and "departments" not in record
