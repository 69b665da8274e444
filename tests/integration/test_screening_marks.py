"""Screening applies the gateway's own objection marks as the query path does
(:meth:`gateway.objections.ObjectionDesk.for_subject`, read once per screen): an entry under
objection makes its list ``disputed`` though the department's own flag says nothing; the
department's answer (*confirmed*) takes the mark off; the marks are read once per screen,
however many list records the departments return.

Real parts: the development federation (mutual TLS, real departments on SQLite), the
objection filed over ``ObjectionService`` with the subject's consent, the department's answer
through its installed ``credit-adapter objection answer`` command."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from gateway.dev.devstack import DevStack
from gateway.domain.identifiers import uscc_check_char
from gateway.objections import ManualClock
from protos.credit.v1 import query_pb2, screening_pb2, screening_pb2_grpc
from tests.integration.conftest import SUBJECTS
from tests.integration.test_objections import Agency, _answer, _consent, _desk, _enterprise

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIST = "abnormal_operations"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with await DevStack.create(
        tmp_path_factory.mktemp("screening-marks"), subjects=SUBJECTS
    ) as s:
        desk = _desk(s)
        desk.clock = ManualClock()
        yield s


async def test_an_objection_marks_the_screened_list_and_marks_are_read_once(
    stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "91350200MA7654321"
    uscc = body + uscc_check_char(body)
    today = _desk(stack).today()
    with sqlite3.connect(stack.data_dir / "market.sqlite") as db:
        rids = [
            str(
                db.execute(
                    "INSERT INTO abnormal_list (uscc, reason, listed_on, listing_authority)"
                    " VALUES (?, ?, ?, '厦门市市场监督管理局')",
                    (uscc, reason, (today - dt.timedelta(days=days)).isoformat()),
                ).lastrowid
            )
            for reason, days in (("通过登记的住所无法联系", 40), ("未按规定公示年度报告", 20))
        ]
    store = _desk(stack).store
    reads: list[int] = []
    real = store.marks

    def counted() -> Any:
        reads.append(1)
        return real()

    monkeypatch.setattr(store, "marks", counted)
    agency = Agency(stack, "procurement")
    screens = screening_pb2_grpc.ScreeningServiceStub(agency.channel)

    async def abnormal() -> screening_pb2.ListStatus:
        reads.clear()
        response = await screens.Screen(
            screening_pb2.ScreenRequest(
                request_id=str(uuid.uuid4()), subject=_enterprise(uscc),
                scenario="government_procurement", purpose="government_procurement",
                mode=query_pb2.QUERY_MODE_FREE,
            ),
            metadata=agency.metadata, timeout=10,
        )  # fmt: skip
        (status,) = [s for s in response.lists if s.list == LIST]
        return status

    try:
        before = await abnormal()
        assert before.state == screening_pb2.LIST_STATE_ON_LIST and not before.disputed
        assert len(reads) == 1  # two records on this list, more on others: one read
        filed = await agency.file(
            subject=_enterprise(uscc), department="market", dataset=LIST, record_id=rids[1],
            grounds="已按时公示年度报告", consent_token=_consent(stack, uscc),
        )  # fmt: skip
        with sqlite3.connect(stack.data_dir / "market.sqlite") as db:
            flags = db.execute(
                "SELECT under_objection FROM abnormal_list WHERE uscc = ?", (uscc,)
            ).fetchall()
        assert {bool(f) for (f,) in flags} == {False}  # the department says nothing
        marked = await abnormal()
        assert (marked.state, marked.disputed) == (screening_pb2.LIST_STATE_ON_LIST, True)
        assert marked.since == (today - dt.timedelta(days=40)).isoformat()
        assert len(reads) == 1
        _answer(stack, filed.objection_id, "confirmed", "核实无误，维持列入")
        await _desk(stack).poll_once()
        after = await abnormal()
        assert (after.state, after.disputed) == (screening_pb2.LIST_STATE_ON_LIST, False)
    finally:
        await agency.close()
