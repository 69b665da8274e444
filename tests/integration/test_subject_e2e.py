"""The subject's rights over the whole federation (issue 14, items 2-5): "who looked at me",
access by legal basis, the consent archive. Real departments, the real gateway over mutual
TLS, real tokens, the real audit log; the subject index follows that log."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2, status_pb2

from gateway.audit.records import decode_record
from gateway.audit.store import open_reader
from gateway.cli import query as query_cli
from gateway.dev.devstack import DevStack
from gateway.subject.errors import SubjectStoreError
from protos.credit.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    objections_pb2,
    objections_pb2_grpc,
    query_pb2,
    subject_pb2,
    subject_pb2_grpc,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

R = query_pb2.WithholdReason
LOANS = "pbccrc/personal_loans"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    """A federation of its own: these tests move the subject service's calendar."""
    async with await DevStack.create(tmp_path_factory.mktemp("subject"), subjects=300) as s:
        yield s


def _me(stack: DevStack) -> str:
    assert stack.self_service_subject is not None
    return stack.self_service_subject["id"]


def _other_person(stack: DevStack) -> str:
    me = _me(stack)
    for s in stack.subjects.values():
        if s.get("type") == "person" and s["id"] != me:
            return str(s["id"])
    raise AssertionError("no second person in the synthetic data")


def _record(stack: DevStack, index: int) -> dict[str, Any]:
    reader = open_reader(stack.audit["log"])
    try:
        for entry in reader.iter_entries(index):
            return decode_record(entry.leaf, canonical=False)
    finally:
        reader.close()
    raise AssertionError(f"no audit entry {index}")


def _records(stack: DevStack) -> list[dict[str, Any]]:
    reader = open_reader(stack.audit["log"])
    try:
        return [decode_record(e.leaf, canonical=False) for e in reader.iter_entries(0)]
    finally:
        reader.close()


def _reason(err: grpc.aio.AioRpcError) -> str:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)  # type: ignore[arg-type]
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


def _withheld(response: query_pb2.QueryResponse, dept: str) -> set[tuple[str, int]]:
    for s in response.sections:
        if s.department == dept:
            return {(w.field, w.reason) for w in s.withheld}
    return set()


def _returned(response: query_pb2.QueryResponse, dept: str, dataset: str) -> int:
    return sum(
        len(d.records)
        for s in response.sections
        if s.department == dept
        for d in s.datasets
        if d.dataset == dataset
    )


async def _all_records(stack: DevStack, page_size: int = 0) -> list[subject_pb2.QueryRecordEntry]:
    out: list[subject_pb2.QueryRecordEntry] = []
    token = ""
    async with stack.client("self_service") as kiosk:
        while True:
            page = await kiosk.query_records(page_size=page_size, page_token=token)
            out.extend(page.records)
            token = page.next_page_token
            if not token:
                return out


async def test_a_subject_sees_who_queried_it_and_nobody_elses_queries(stack: DevStack) -> None:
    me, other = _me(stack), _other_person(stack)
    async with stack.client("ndrc") as ndrc:
        mine = await ndrc.query(person=me, purpose="supervision_inspection")
        theirs = await ndrc.query(person=other, purpose="supervision_inspection")
    listed = await _all_records(stack)
    indices = {r.log_index for r in listed}
    assert mine.receipt.log_index in indices
    assert theirs.receipt.log_index not in indices
    entry = next(r for r in listed if r.log_index == mine.receipt.log_index)
    assert entry.agency_id == "ndrc"
    assert entry.purpose == "supervision_inspection"
    assert entry.mode == query_pb2.QUERY_MODE_FREE
    assert entry.charge_fen == 0
    answered = {(s.department, d.dataset) for s in mine.sections for d in s.datasets}
    assert {(d.department, d.dataset) for d in entry.datasets} == answered
    # The time is the audit record's, and the record is about this subject.
    record = _record(stack, entry.log_index)
    assert record["time"] == entry.time
    assert record["agency_id"] == "ndrc"


async def test_an_agency_cannot_list_any_subjects_query_records(stack: DevStack) -> None:
    for agency in ("bank", "ndrc"):
        async with stack.client(agency) as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.query_records()
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _reason(caught.value) == "NOT_THE_SUBJECT"
    # The refusals are on the record, naming the agency.
    refusals = [
        r
        for r in _records(stack)
        if r.get("kind") == "refusal" and r.get("method") == "ListQueryRecords"
    ]
    assert {r["principal"] for r in refusals} >= {"bank", "ndrc"}


async def test_paging_walks_every_record_once_newest_first(stack: DevStack) -> None:
    async with stack.client("ndrc") as ndrc:
        for _ in range(3):
            await ndrc.query(person=_me(stack), purpose="supervision_inspection")
    whole = await _all_records(stack)
    paged = await _all_records(stack, page_size=1)
    assert [r.log_index for r in paged] == [r.log_index for r in whole]
    assert [r.log_index for r in whole] == sorted((r.log_index for r in whole), reverse=True)
    assert len({r.log_index for r in whole}) == len(whole) >= 4


async def test_a_forged_page_token_is_refused(stack: DevStack) -> None:
    async with stack.client("self_service") as kiosk:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await kiosk.query_records(page_token="not-a-token")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_legal_basis_opens_its_tiers_without_consent_and_is_audited(
    stack: DevStack,
) -> None:
    me = _me(stack)
    async with stack.client("ndrc") as ndrc:
        plain = await ndrc.query(person=me, purpose="supervision_inspection", datasets=[LOANS])
        by_law = await ndrc.query(
            person=me,
            purpose="supervision_inspection",
            datasets=[LOANS],
            legal_basis="supervision_law_art26",
            case_reference="JW-2026-017",
        )
    assert ("lender", R.WITHHOLD_REASON_CONSENT_REQUIRED) in _withheld(plain, "pbccrc")
    assert _withheld(by_law, "pbccrc") == set()
    assert _returned(by_law, "pbccrc", "personal_loans") > 0
    record = _record(stack, by_law.receipt.log_index)
    assert record["legal_basis"] == "supervision_law_art26"
    assert record["case_reference"] == "JW-2026-017"
    assert record["consent_id"] == ""
    today = dt.date.fromisoformat(by_law.query_date)
    assert record["confidential_until"] == (today + dt.timedelta(days=365)).isoformat()


async def test_a_confidential_query_is_hidden_from_the_subject_until_its_period_ends(
    stack: DevStack,
) -> None:
    async with stack.client("ndrc") as ndrc:
        secret = await ndrc.query(
            person=_me(stack),
            purpose="supervision_inspection",
            legal_basis="criminal_procedure_art144",
            case_reference="GA-2026-0042",
        )
    day = dt.date.fromisoformat(secret.query_date)
    service = stack.gateway.subject_service
    assert service is not None
    before = service.today
    try:
        service.today = lambda: day + dt.timedelta(days=729)
        assert secret.receipt.log_index not in {r.log_index for r in await _all_records(stack)}
        service.today = lambda: day + dt.timedelta(days=730)
        listed = {r.log_index: r for r in await _all_records(stack)}
        assert listed[secret.receipt.log_index].legal_basis == "criminal_procedure_art144"
    finally:
        service.today = before


async def test_a_basis_the_agency_kind_may_not_cite_is_refused_with_the_reason_and_audited(
    stack: DevStack,
) -> None:
    async with stack.client("bank") as bank:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bank.query(
                person=_me(stack),
                purpose="lending",
                mode="paid",
                legal_basis="supervision_law_art26",
                case_reference="X-1",
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(caught.value) == "LEGAL_BASIS_NOT_CITABLE"
    assert "government_body" in (caught.value.details() or "")
    refused = [
        r
        for r in _records(stack)
        if r.get("kind") == "query" and r.get("outcome") == "legal_basis_not_citable"
    ]
    assert refused and refused[-1]["agency_id"] == "bank"
    assert refused[-1]["legal_basis"] == "supervision_law_art26"


async def test_a_basis_needing_a_case_reference_refuses_a_query_without_one(
    stack: DevStack,
) -> None:
    async with stack.client("ndrc") as ndrc:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ndrc.query(
                person=_me(stack),
                purpose="supervision_inspection",
                legal_basis="supervision_law_art26",
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _reason(caught.value) == "CASE_REFERENCE_REQUIRED"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ndrc.query(
                person=_me(stack),
                purpose="administrative_licensing",
                legal_basis="supervision_law_art26",
                case_reference="JW-1",
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _reason(caught.value) == "LEGAL_BASIS_PURPOSE"


async def test_officers_list_queries_per_basis_and_agencies_cannot(stack: DevStack) -> None:
    async with stack.client("ndrc") as ndrc:
        made = await ndrc.query(
            person=_other_person(stack),
            purpose="supervision_inspection",
            legal_basis="tax_administration_art54_6",
            case_reference="SW-77",
        )
    channel, md = stack.channel("officers", "officer_a")
    try:
        stub = subject_pb2_grpc.LegalBasisAdminStub(channel)
        page = await stub.ListQueriesByBasis(
            subject_pb2.ListQueriesByBasisRequest(legal_basis="tax_administration_art54_6"),
            metadata=md,
        )
        found = {q.query.log_index: q for q in page.queries}
        assert found[made.receipt.log_index].case_reference == "SW-77"
        assert found[made.receipt.log_index].query.agency_id == "ndrc"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListQueriesByBasis(
                subject_pb2.ListQueriesByBasisRequest(legal_basis="no_such_basis"), metadata=md
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await channel.close()
    channel, md = stack.channel("agencies", "ndrc")
    try:
        stub = subject_pb2_grpc.LegalBasisAdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListQueriesByBasis(
                subject_pb2.ListQueriesByBasisRequest(legal_basis="tax_administration_art54_6"),
                metadata=md,
            )
        assert caught.value.code() in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        )
    finally:
        await channel.close()
    access = [r for r in _records(stack) if r.get("kind") == "subject_access"]
    assert any(r["action"] == "list_by_basis" and r["principal"] == "officer_a" for r in access)


async def test_a_consent_a_query_used_is_archived_and_an_auditor_reads_it_back(
    stack: DevStack,
) -> None:
    me = _me(stack)
    token = stack.consent(
        subject_type="person",
        subject_id=me,
        grantee="bank",
        purpose="lending",
        scope=["pbccrc/personal_loans"],
    )
    async with stack.client("bank") as bank:
        answered = await bank.query(
            person=me, purpose="lending", mode="paid", datasets=[LOANS], consent_token=token
        )
    assert _returned(answered, "pbccrc", "personal_loans") > 0
    cid = _record(stack, answered.receipt.log_index)["consent_id"]
    assert cid
    channel, md = stack.channel("auditors", "auditor")
    try:
        stub = subject_pb2_grpc.LegalBasisAdminStub(channel)
        archived = await stub.GetArchivedConsent(
            subject_pb2.GetArchivedConsentRequest(consent_id=cid), metadata=md
        )
        assert archived.compact_jws == token
        assert archived.retain_until > archived.archived_at
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetArchivedConsent(
                subject_pb2.GetArchivedConsentRequest(consent_id="never-used"), metadata=md
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()
    # The archive holds the consent encrypted: its subject's identifier is not in the file.
    archive = stack.audit["log"].with_name(stack.audit["log"].stem + ".consents.sqlite")
    assert archive.is_file()
    assert me.encode() not in archive.read_bytes()
    assert token.split(".")[1].encode() not in archive.read_bytes()
    assert archive.stat().st_mode & 0o077 == 0
    channel, md = stack.channel("officers", "officer_a")
    try:
        stub = subject_pb2_grpc.LegalBasisAdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetArchivedConsent(
                subject_pb2.GetArchivedConsentRequest(consent_id=cid), metadata=md
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()
    got = [
        r
        for r in _records(stack)
        if r.get("kind") == "subject_access" and r.get("action") == "get_archived_consent"
    ]
    assert got and json.dumps(got[-1]).find(me) == -1


async def test_the_self_report_prints_records_marks_statements_objections_and_query_records(
    stack: DevStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    me = _me(stack)
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(stack.describe()), encoding="utf-8")
    async with stack.client("bank") as bank:
        token = stack.consent(
            subject_type="person", subject_id=me, grantee="bank", purpose="lending", scope=[LOANS]
        )
        paid = await bank.query(
            person=me, purpose="lending", mode="paid", datasets=[LOANS], consent_token=token
        )
    rid = next(
        r.record_id for s in paid.sections for d in s.datasets for r in d.records if not r.disputed
    )
    async with stack.client("self_service") as kiosk:
        objections = objections_pb2_grpc.ObjectionServiceStub(kiosk.channel)
        filed = await objections.File(
            objections_pb2.FileObjectionRequest(
                request_id=str(uuid.uuid4()),
                subject=common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_PERSON, id=me),
                department="pbccrc",
                dataset="personal_loans",
                record_id=rid,
                grounds="该笔贷款金额有误",
                statement="本人对该笔贷款金额有异议",
            ),
            metadata=kiosk.metadata,
        )
    argv = ["--demo", str(demo), "--agency", "self_service", "--self"]
    assert await asyncio.to_thread(query_cli.main, argv) == 0
    text = capsys.readouterr().out
    assert "CREDIT REPORT (本人信用报告) of person" in text
    assert me not in text  # the identifier is masked on a printout
    assert f"DISPUTED since {filed.filed_on}, answer due {filed.due_on}" in text
    assert "本人对该笔贷款金额有异议" in text
    assert f"{filed.objection_id}: pbccrc/personal_loans {rid}, filed {filed.filed_on}" in text
    assert f"answer due {filed.due_on}" in text
    line = next(x for x in text.splitlines() if f"audit #{paid.receipt.log_index}" in x)
    assert " bank  lending  paid " in line and "pbccrc/personal_loans" in line
    # --json carries the same, machine-readable (the second free self-query of the year).
    assert await asyncio.to_thread(query_cli.main, [*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert filed.objection_id in {o["objectionId"] for o in doc["open_objections"]}
    assert str(paid.receipt.log_index) in {r["logIndex"] for r in doc["query_records"]}
    # Not a self-service credential: the report is refused, exit 1.
    bank_argv = ["--demo", str(demo), "--agency", "bank", "--self", "--person", me]
    assert await asyncio.to_thread(query_cli.main, bank_argv) == 1


async def test_a_query_whose_consent_cannot_be_archived_is_refused_and_charges_nothing(
    stack: DevStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = stack.gateway.consent_archive
    assert archive is not None

    async def broken(*args: object, **kwargs: object) -> None:
        raise SubjectStoreError("consent archive write failed: disk full")

    me = _me(stack)
    token = stack.consent(
        subject_type="person", subject_id=me, grantee="bank", purpose="lending", scope=[LOANS]
    )
    balance = await stack.balance_fen("bank")
    monkeypatch.setattr(archive, "keep", broken)
    async with stack.client("bank") as bank:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bank.query(
                person=me, purpose="lending", mode="paid", datasets=[LOANS], consent_token=token
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _reason(caught.value) == "SUBJECT_STORE_UNAVAILABLE"
    assert "disk" not in (caught.value.details() or "")  # the operator's message stays inside
    assert await stack.balance_fen("bank") == balance
    refused = [
        r
        for r in _records(stack)
        if r.get("kind") == "query" and r.get("outcome") == "subject_store_unavailable"
    ]
    assert refused and refused[-1]["agency_id"] == "bank"


async def _prove(stub: Any, md: Any, index: int) -> Any:
    for _ in range(40):  # a fresh entry is under a signed checkpoint within about a second
        try:
            return await stub.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(index=index), metadata=md
            )
        except grpc.aio.AioRpcError as exc:
            if _reason(exc) != "NOT_YET_INTEGRATED":
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("never integrated")


async def test_the_subject_proves_the_queries_about_it_and_no_others(stack: DevStack) -> None:
    me, other = _me(stack), _other_person(stack)
    async with stack.client("ndrc") as ndrc:
        mine = await ndrc.query(person=me, purpose="supervision_inspection")
        theirs = await ndrc.query(person=other, purpose="supervision_inspection")
        secret = await ndrc.query(
            person=me,
            purpose="supervision_inspection",
            legal_basis="supervision_law_art26",
            case_reference="JW-9",
        )
    async with stack.client("self_service") as kiosk:
        stub = audit_pb2_grpc.AuditServiceStub(kiosk.channel)
        proof = await _prove(stub, kiosk.metadata, mine.receipt.log_index)
        assert proof.leaf_hash == mine.receipt.leaf_hash
        denied = []
        for index in (theirs.receipt.log_index, secret.receipt.log_index):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _prove(stub, kiosk.metadata, index)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            denied.append(caught.value.details())
        # The confidential entry is refused exactly as another subject's: no oracle.
        assert denied[0] == denied[1]
