"""Free screens count per agency and day apart from free queries: a batch that uses up the
screening quota gets a per-subject QUOTA_EXHAUSTED and leaves the day's queries alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.dev.devstack import DevStack
from gateway.domain.files import policies_path
from protos.credit.v1 import common_pb2, query_pb2, screening_pb2, screening_pb2_grpc
from tests.integration.conftest import SUBJECTS, subject
from tests.integration.test_screening import _uscc

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    folder = tmp_path_factory.mktemp("quota")
    text = policies_path("prices.toml").read_text(encoding="utf-8")
    text = text.replace("procurement = 20000", "procurement = 5").replace(
        "procurement = 500", "procurement = 3"
    )
    prices = Path(folder) / "prices.toml"
    prices.write_text(text, encoding="utf-8")
    async with await DevStack.create(folder / "s", subjects=SUBJECTS, prices_file=prices) as s:
        yield s


@pytest.mark.asyncio(loop_scope="module")
async def test_screens_use_their_own_quota_and_refuse_per_subject(stack: DevStack) -> None:
    channel, md = stack.channel("agencies", "procurement")
    stub = screening_pb2_grpc.ScreeningServiceStub(channel)
    request = screening_pb2.ScreenBatchRequest(
        batch_id=str(uuid.uuid4()),
        scenario="government_procurement",
        purpose="government_procurement",
        mode=query_pb2.QUERY_MODE_FREE,
        subjects=[
            common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=_uscc(i))
            for i in range(8)
        ],
    )
    items = [i async for i in stub.ScreenBatch(request, metadata=md, timeout=60)]
    outcomes = sorted(i.WhichOneof("outcome") for i in items)
    assert outcomes == ["error"] * 3 + ["result"] * 5
    assert {i.error.reason for i in items if i.WhichOneof("outcome") == "error"} == {
        "QUOTA_EXHAUSTED"
    }
    # The day's free queries are untouched by the screens.
    client = stack.client("procurement")
    for _ in range(3):
        r = await client.query(
            enterprise=subject(stack, "enterprise_clean"), purpose="government_procurement"
        )
        assert r.charge.free_remaining >= 0
    assert r.charge.free_remaining == 0
    await client.close()
    await channel.close()
