"""Screening over a real federation: black, red and no list, two scenarios whose measures
differ, a 1,000-subject batch streaming with a department down, charges and audit records."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from gateway.audit.records import decode_record
from gateway.dev.devstack import DevStack
from gateway.identifiers import uscc_check_char
from protos.credit.v1 import common_pb2, query_pb2, screening_pb2, screening_pb2_grpc
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.slow

ON = screening_pb2.LIST_STATE_ON_LIST
OFF = screening_pb2.LIST_STATE_NOT_ON_LIST
UNKNOWN = screening_pb2.LIST_STATE_UNKNOWN


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with await DevStack.create(
        tmp_path_factory.mktemp("screen"), subjects=SUBJECTS, down=("hrss",)
    ) as s:
        yield s


def _stub(stack: DevStack, agency: str) -> tuple[screening_pb2_grpc.ScreeningServiceStub, tuple]:
    channel, metadata = stack.channel("agencies", agency)
    return screening_pb2_grpc.ScreeningServiceStub(channel), metadata


def _enterprise(uscc: str) -> common_pb2.Subject:
    return common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=uscc)


async def _screen(
    stack: DevStack,
    key: str,
    scenario: str,
    *,
    agency: str = "procurement",
    purpose: str = "government_procurement",
    mode: int = query_pb2.QUERY_MODE_FREE,
    request_id: str | None = None,
) -> screening_pb2.ScreenResponse:
    stub, md = _stub(stack, agency)
    kind = stack.subjects[key]["type"]
    subj = common_pb2.Subject(
        type=common_pb2.SUBJECT_TYPE_ENTERPRISE
        if kind == "enterprise"
        else common_pb2.SUBJECT_TYPE_PERSON,
        id=subject(stack, key),
    )
    return await stub.Screen(
        screening_pb2.ScreenRequest(
            request_id=request_id or str(uuid.uuid4()),
            subject=subj,
            scenario=scenario,
            purpose=purpose,
            mode=mode,
        ),
        metadata=md,
        timeout=10,
    )


def _uscc(n: int) -> str:
    """A valid unified social credit code, the n-th of a deterministic series."""
    body = f"91350200MA{n:07d}"
    return body + uscc_check_char(body)


def _by_list(response: screening_pb2.ScreenResponse) -> dict[str, screening_pb2.ListStatus]:
    return {s.list: s for s in response.lists}


@pytest.mark.asyncio(loop_scope="module")
async def test_a_subject_on_a_black_list_gets_the_binding_procurement_measure(
    stack: DevStack,
) -> None:
    r = await _screen(stack, "enterprise_all_departments", "government_procurement")
    lists = _by_list(r)
    assert list(lists) == [
        "dishonest_debtors",
        "major_tax_violations",
        "abnormal_operations",
        "wage_arrears",
    ]
    dd = lists["dishonest_debtors"]
    assert dd.state == ON and dd.kind == screening_pb2.LIST_KIND_BLACK
    assert dd.since and dd.listing_authority.endswith("人民法院") and dd.basis_document
    assert dd.disputed  # the showcase entry has an objection pending
    assert [(m.id, m.binding) for m in dd.measures] == [("dd-gp-exclude", True)]
    assert "政府采购法" in dd.measures[0].legal_source
    ab = lists["abnormal_operations"]
    assert ab.state == ON and [(m.id, m.binding) for m in ab.measures] == [("ab-gp-factor", False)]
    # Its major tax violation ended seven years ago: off the list.
    assert lists["major_tax_violations"].state == OFF
    # hrss is down: that list is unknown, the screen incomplete and hrss not charged.
    assert lists["wage_arrears"].state == UNKNOWN and not r.complete
    assert r.black_listed and r.binding_measure and not r.red_listed
    assert r.measures_version.startswith("2026.11.1-")
    assert r.receipt.log_index > 0 or r.receipt.leaf_hash
    # Never a record: no amounts, no case facts in what came back.
    text = r.SerializeToString().decode("utf-8", "replace")
    assert "支付欠款" not in text and "元及利息" not in text  # the obligation stays behind


@pytest.mark.asyncio(loop_scope="module")
async def test_two_scenarios_bring_different_measures(stack: DevStack) -> None:
    gp = _by_list(await _screen(stack, "enterprise_all_departments", "government_procurement"))
    ma = _by_list(await _screen(stack, "enterprise_all_departments", "market_access"))
    assert [m.id for m in gp["dishonest_debtors"].measures] == ["dd-gp-exclude"]
    assert [m.id for m in ma["dishonest_debtors"].measures] == ["dd-ma-restrict"]
    assert [(m.id, m.binding) for m in ma["abnormal_operations"].measures] == [
        ("ab-ma-inspect", False)
    ]
    assert "tax_a_list" in ma and "tax_a_list" not in gp


@pytest.mark.asyncio(loop_scope="module")
async def test_a_subject_on_a_red_list_and_one_on_none(stack: DevStack) -> None:
    red = await _screen(stack, "enterprise_clean", "market_access")
    a = _by_list(red)["tax_a_list"]
    assert a.state == ON and a.kind == screening_pb2.LIST_KIND_RED
    assert [(m.id, m.binding) for m in a.measures] == [("ta-ma-green", False)]
    assert red.red_listed and not red.black_listed and not red.binding_measure
    assert red.complete  # market_access asks no hrss list
    none = await _screen(stack, "enterprise_unknown", "market_access")
    assert {s.state for s in none.lists} == {OFF}
    assert not none.black_listed and not none.red_listed and none.complete
    assert all(not s.measures and not s.since for s in none.lists)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_person_screened_for_lending_is_charged_once_per_request_id(
    stack: DevStack,
) -> None:
    before = await stack.balance_fen("bank")
    rid = str(uuid.uuid4())
    first = await _screen(
        stack,
        "person_rural_household",
        "lending",
        agency="bank",
        purpose="lending",
        mode=query_pb2.QUERY_MODE_PAID,
        request_id=rid,
    )
    lists = _by_list(first)
    assert lists["credit_household"].state == ON
    assert [m.id for m in lists["credit_household"].measures] == ["ch-le-credit"]
    # court 20 + agriculture 30 fen; hrss (down) not charged.
    assert first.charge.amount_fen == 50
    again = await _screen(
        stack,
        "person_rural_household",
        "lending",
        agency="bank",
        purpose="lending",
        mode=query_pb2.QUERY_MODE_PAID,
        request_id=rid,
    )
    assert again.charge.amount_fen == 50
    assert await stack.balance_fen("bank") == before - 50
    # Cheaper than a query of the same datasets.
    assert first.charge.amount_fen < 200 + 300


@pytest.mark.asyncio(loop_scope="module")
async def test_refusals_and_feedback_are_on_the_record(stack: DevStack) -> None:
    stub, md = _stub(stack, "procurement")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.Screen(
            screening_pb2.ScreenRequest(
                request_id=str(uuid.uuid4()),
                subject=_enterprise("91110000600037341M"),
                scenario="government_procurement",
                purpose="government_procurement",
                mode=query_pb2.QUERY_MODE_FREE,
            ),
            metadata=md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _screen(stack, "enterprise_clean", "space_travel")
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    screened = await _screen(stack, "enterprise_all_departments", "government_procurement")
    ack = await stub.ReportMeasure(
        screening_pb2.MeasureFeedback(
            request_id=str(uuid.uuid4()),
            screen_request_id=screened.request_id,
            list="dishonest_debtors",
            measure="dd-gp-exclude",
            applied=True,
            decision_reference="bid 2026-17",
        ),
        metadata=md,
    )
    assert ack.receipt.leaf_hash
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await stub.ReportMeasure(
            screening_pb2.MeasureFeedback(
                request_id=str(uuid.uuid4()),
                screen_request_id=screened.request_id,
                list="dishonest_debtors",
                measure="ab-gp-factor",  # a measure of another list
                applied=True,
            ),
            metadata=md,
        )
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    log = stack.gateway._audit.log  # type: ignore[union-attr]
    leaves = await log.find_leaves([b'"kind":"screening'])
    records = [decode_record(leaf, canonical=False) for leaf in leaves]
    kinds = [r["kind"] for r in records]
    assert "screening_feedback" in kinds
    outcomes = {r.get("outcome") for r in records if r["kind"] == "screening"}
    assert {"partial", "invalid_identifier", "invalid_argument"} <= outcomes
    for r in records:
        blob = str(r)
        assert subject(stack, "enterprise_all_departments") not in blob
        assert "91110000600037341M" not in blob


@pytest.mark.asyncio(loop_scope="module")
async def test_a_batch_of_1000_streams_with_progress_and_per_subject_status(
    stack: DevStack,
) -> None:
    showcase = [s["id"] for s in stack.subjects.values() if s["type"] == "enterprise"]
    codes = showcase + [_uscc(i) for i in range(999 - len(showcase))]
    subjects = [_enterprise(c) for c in codes]
    subjects.insert(500, _enterprise("91110000600037341M"))  # one bad code
    stub, md = _stub(stack, "procurement")
    request = screening_pb2.ScreenBatchRequest(
        batch_id=str(uuid.uuid4()),
        scenario="government_procurement",
        purpose="government_procurement",
        mode=query_pb2.QUERY_MODE_FREE,
        subjects=subjects,
    )
    items = [item async for item in stub.ScreenBatch(request, metadata=md, timeout=300)]
    assert len(items) == 1000
    assert [i.done for i in items] == list(range(1, 1001))
    assert {i.total for i in items} == {1000}
    assert sorted(i.index for i in items) == list(range(1000))
    bad = [i for i in items if i.WhichOneof("outcome") == "error"]
    assert [(i.index, i.error.reason) for i in bad] == [(500, "INVALID_IDENTIFIER")]
    results = [i.result for i in items if i.WhichOneof("outcome") == "result"]
    assert all(not r.complete for r in results)  # hrss is down for every subject
    assert all(
        _by_list(r)["wage_arrears"].state == UNKNOWN
        and _by_list(r)["dishonest_debtors"].state in (ON, OFF)
        for r in results
    )
    assert len({r.request_id for r in results}) == 999


@pytest.mark.asyncio(loop_scope="module")
async def test_credit_query_screen_file_prints_progress_and_csv_then_stats_count_it(
    stack: DevStack, tmp_path: Path
) -> None:
    import asyncio
    import csv
    import io
    import json
    import sys

    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(stack.describe()), encoding="utf-8")
    bidders = tmp_path / "bidders.csv"
    rows = [subject(stack, "enterprise_all_departments"), subject(stack, "enterprise_clean")]
    rows += [_uscc(i) for i in range(200)] + ["91110000600037341M"]
    bidders.write_text("id\n" + "\n".join(rows) + "\n", encoding="utf-8")
    script = Path(sys.executable).parent / "credit-query"
    proc = await asyncio.create_subprocess_exec(
        str(script), "screen", "--demo", str(demo), "--agency", "procurement",
        "--file", str(bidders), "--scenario", "government_procurement",
        "--purpose", "government_procurement",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1, err  # one subject refused
    assert "screened 203/203" in err.decode() and "1 subjects refused" in err.decode()
    table = list(csv.DictReader(io.StringIO(out.decode())))
    first = [r for r in table if r["row"] == "1"]
    assert {r["list"]: r["state"] for r in first} == {
        "dishonest_debtors": "on_list",
        "major_tax_violations": "not_on_list",
        "abnormal_operations": "on_list",
        "wage_arrears": "unknown",
    }
    assert next(r["status"] for r in table if r["row"] == "203").startswith("INVALID_IDENTIFIER")
    gw = Path(sys.executable).parent / "credit-gateway"
    await asyncio.sleep(1.5)  # a checkpoint is signed at least every second
    proc = await asyncio.create_subprocess_exec(
        str(gw), "screening", "stats", "--audit-log", str(stack.audit["log"]),
        "--key", str(stack.audit["verifier_key"]), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["agencies"]["procurement"]["screens"] >= 202
    assert doc["lists"]["dishonest_debtors"]["on_list"] >= 1
    assert doc["scenarios"]["government_procurement"]["screens"] >= 202


@pytest.mark.asyncio(loop_scope="module")
async def test_garbage_and_bad_batches_get_clean_statuses_never_unknown(stack: DevStack) -> None:
    channel, md = stack.channel("agencies", "procurement")
    garbage = b"\xff\xff\xff\x0f\x01"
    unary = channel.unary_unary("/credit.v1.ScreeningService/Screen")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await unary(garbage, metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stream = channel.unary_stream("/credit.v1.ScreeningService/ScreenBatch")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        _ = [x async for x in stream(garbage, metadata=md)]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MALFORMED_REQUEST" in str(err.value.trailing_metadata())
    stub = screening_pb2_grpc.ScreeningServiceStub(channel)
    base = screening_pb2.ScreenBatchRequest(
        batch_id=str(uuid.uuid4()),
        scenario="government_procurement",
        purpose="government_procurement",
        mode=query_pb2.QUERY_MODE_FREE,
    )
    too_many = screening_pb2.ScreenBatchRequest()
    too_many.CopyFrom(base)
    too_many.subjects.extend([_enterprise(_uscc(0))] * 10_001)
    not_uuid = screening_pb2.ScreenBatchRequest()
    not_uuid.CopyFrom(base)
    not_uuid.batch_id = "batch-1"
    not_uuid.subjects.append(_enterprise(_uscc(0)))
    for bad in (base, too_many, not_uuid):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            _ = [x async for x in stub.ScreenBatch(bad, metadata=md, timeout=30)]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    anonymous = screening_pb2_grpc.ScreeningServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        _ = [x async for x in anonymous.ScreenBatch(not_uuid, timeout=30)]
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await channel.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_an_agency_without_grants_sees_every_list_withheld_and_pays_nothing(
    stack: DevStack,
) -> None:
    r = await _screen(
        stack, "enterprise_all_departments", "government_procurement", agency="nogrants"
    )
    assert {s.state for s in r.lists} == {screening_pb2.LIST_STATE_WITHHELD}
    assert not r.black_listed and not r.complete and r.charge.amount_fen == 0
    assert all(not s.since and not s.measures for s in r.lists)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_batch_cancelled_midway_leaves_nothing_reserved_and_the_books_reconcile(
    stack: DevStack,
) -> None:
    import asyncio
    import sys

    stub, md = _stub(stack, "bank")
    request = screening_pb2.ScreenBatchRequest(
        batch_id=str(uuid.uuid4()),
        scenario="lending",
        purpose="lending",
        mode=query_pb2.QUERY_MODE_PAID,
        subjects=[_enterprise(_uscc(i)) for i in range(1000)],
    )
    call = stub.ScreenBatch(request, metadata=md, timeout=300)
    seen = 0
    async for item in call:
        assert item.WhichOneof("outcome") == "result", item
        seen += 1
        if seen == 20:
            break
    call.cancel()
    meter = stack.gateway.meter
    assert meter is not None
    for _ in range(100):  # the screens under way finish or release within their deadlines
        if not await meter.ledger.run(meter.store.interrupted, None):
            break
        await asyncio.sleep(0.1)
    assert await meter.ledger.run(meter.store.interrupted, None) == []
    await asyncio.sleep(1.5)  # a checkpoint is signed at least every second
    gw = Path(sys.executable).parent / "credit-gateway"
    proc = await asyncio.create_subprocess_exec(
        str(gw), "billing", "--ledger", str(stack.workdir / "ledger.sqlite"), "reconcile",
        "--audit-log", str(stack.audit["log"]), "--key", str(stack.audit["verifier_key"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    # Screens book through the same ledger and their records carry their bookings.
    assert proc.returncode == 0, out.decode() + err.decode()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_measures_catalog_is_versioned_with_the_policy(stack: DevStack) -> None:
    from gateway.domain.files import policies_path
    from protos.credit.v1 import policy_admin_pb2 as pb
    from protos.credit.v1 import policy_admin_pb2_grpc

    before = await _screen(stack, "enterprise_all_departments", "government_procurement")
    text = policies_path("measures.toml").read_text(encoding="utf-8")
    changed = text.replace(
        'text = "不得作为供应商参加政府采购活动"', 'text = "不得参加政府采购活动（修订）"'
    )
    assert changed != text
    a_chan, a_md = stack.channel("officers", "officer_a")
    b_chan, b_md = stack.channel("officers", "officer_b")
    a = policy_admin_pb2_grpc.PolicyAdminStub(a_chan)
    b = policy_admin_pb2_grpc.PolicyAdminStub(b_chan)
    bad = await a.Draft(
        pb.DraftRequest(
            files=[
                pb.PolicyFile(
                    name="measures.toml", content=text.replace('kind = "red"', 'kind = "pink"', 1)
                )
            ],
            reason="a broken catalog",
        ),
        metadata=a_md,
    )
    checked = await a.Validate(pb.VersionRequest(version=bad.version.number), metadata=a_md)
    assert "measures.toml" in str(checked)
    draft = await a.Draft(
        pb.DraftRequest(
            files=[pb.PolicyFile(name="measures.toml", content=changed)], reason="memo 2026"
        ),
        metadata=a_md,
    )
    number = draft.version.number
    await b.Approve(pb.ApproveRequest(version=number, reason="reviewed"), metadata=b_md)
    await a.Activate(pb.ActivateRequest(version=number, reason="memo 2026"), metadata=a_md)
    after = await _screen(stack, "enterprise_all_departments", "government_procurement")
    assert after.measures_version != before.measures_version
    assert _by_list(after)["dishonest_debtors"].measures[0].text == "不得参加政府采购活动（修订）"
    assert after.policy_version != before.policy_version
    await a_chan.close()
    await b_chan.close()
