"""Objections (Decree 631 Art. 25) and credit repair over the whole federation: real sample
departments in their own processes (the generic SQL adapter, over mutual TLS), the real
gateway, real tokens and consents. The department answers with its own command
(``credit-adapter objection answer``, the installed console script); the gateway's clock is a
:class:`~gateway.objections.ManualClock` the test moves."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from gateway.audit.schema import ObjectionRecord
from gateway.cli.connect import open_channel
from gateway.dev.devstack import DevStack
from gateway.objections import ManualClock, ObjectionDesk
from protos.credit.v1 import common_pb2, objections_pb2, objections_pb2_grpc, query_pb2
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
PENALTIES = "administrative_penalties"
CREDIT_ADAPTER = Path(sys.executable).with_name("credit-adapter")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    """A federation of its own: these tests add records to the market department's database
    and move the gateway's objection clock."""
    async with await DevStack.create(tmp_path_factory.mktemp("objections"), subjects=SUBJECTS) as s:
        desk = s.gateway.objections
        assert desk is not None
        desk.clock = ManualClock()
        yield s


def _desk(stack: DevStack) -> ObjectionDesk:
    assert stack.gateway.objections is not None
    return stack.gateway.objections


def _clock(stack: DevStack) -> ManualClock:
    clock = _desk(stack).clock
    assert isinstance(clock, ManualClock)
    return clock


def _publish_penalty(
    stack: DevStack, uscc: str, *, decided_on: dt.date, penalty: str = "罚款", fine_fen: int
) -> str:
    """The market department publishes a new penalty (its own database, its own act)."""
    with sqlite3.connect(stack.data_dir / "market.sqlite") as db:
        cur = db.execute(
            "INSERT INTO penalty (uscc, decision_no, violation, penalty, fine_fen, decided_on,"
            " authority, performed_on, under_objection)"
            " VALUES (?, ?, '虚假宣传', ?, ?, ?, '厦门市市场监督管理局', NULL, 0)",
            (
                uscc,
                f"厦市监罚〔2026〕{uuid.uuid4().hex[:6]}号",
                penalty,
                fine_fen,
                decided_on.isoformat(),
            ),
        )
        return str(cur.lastrowid)


def _answer(stack: DevStack, objection_id: str, outcome: str, note: str = "") -> str:
    """The department answers through its own command, the installed console script."""
    done = subprocess.run(
        [
            str(CREDIT_ADAPTER),
            "objection",
            "answer",
            "--mapping",
            str(REPO / "adapters" / "samples" / "market.toml"),
            "--db",
            str(stack.data_dir / "market.sqlite"),
            "--id",
            objection_id,
            "--outcome",
            outcome,
            "--note",
            note,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Agency:
    """An agency's ObjectionService stub over mutual TLS with its bound token."""

    def __init__(self, stack: DevStack, agency: str) -> None:
        # The agency's own token file: the self-service kiosk's names its subject.
        self.channel, self.metadata = open_channel(
            stack.gateway.address,
            ca=stack.pki.ca_cert.read_bytes(),
            cert=stack.pki.agency_cert(agency).read_bytes(),
            key=stack.pki.agency_key(agency).read_bytes(),
            token=stack.tokens[agency].read_text(encoding="utf-8").strip(),
        )
        self.stub = objections_pb2_grpc.ObjectionServiceStub(self.channel)

    async def file(self, **kw: object) -> objections_pb2.Objection:
        req = objections_pb2.FileObjectionRequest(request_id=str(uuid.uuid4()), **kw)  # type: ignore[arg-type]
        return await self.stub.File(req, metadata=self.metadata, timeout=10)

    async def close(self) -> None:
        await self.channel.close()


def _enterprise(uscc: str) -> common_pb2.Subject:
    return common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=uscc)


async def _penalties(stack: DevStack, uscc: str) -> dict[str, common_pb2.Record]:
    async with stack.client("procurement") as client:
        response = await client.query(
            enterprise=uscc,
            purpose="government_procurement",
            datasets=[f"market/{PENALTIES}"],
        )
    (section,) = [s for s in response.sections if s.department == "market"]
    assert section.status == query_pb2.SECTION_STATUS_OK
    return {r.record_id: r for ds in section.datasets for r in ds.records}


def _consent(stack: DevStack, uscc: str, grantee: str = "procurement") -> str:
    return stack.consent(
        subject_type="enterprise",
        subject_id=uscc,
        grantee=grantee,
        purpose="government_procurement",
        scope=["market/*"],
    )


def _person_consent(stack: DevStack, person: str) -> str:
    return stack.consent(
        subject_type="person",
        subject_id=person,
        grantee="ndrc",
        purpose="supervision_inspection",
        scope=["pbccrc/*", "hrss/*"],
    )


async def _scrape(stack: DevStack) -> str:
    def get() -> str:
        with urllib.request.urlopen(stack.gateway.metrics_url, timeout=10) as r:  # noqa: S310 - loopback
            return str(r.read().decode())

    return await asyncio.to_thread(get)


def _gauge(page: str, name: str, department: str) -> float:
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"department": department}:
                return float(sample.value)
    raise AssertionError(f"{name}{{department={department}}} is not on the page")


def _objection_records(stack: DevStack) -> list[ObjectionRecord]:
    from gateway.audit.records import decode_record
    from gateway.stores.sqlite import open_read_only

    db = open_read_only(stack.audit["log"])
    try:
        rows = db.execute("SELECT leaf FROM entries ORDER BY idx").fetchall()
    finally:
        db.close()
    out = []
    for (data,) in rows:
        rec = decode_record(bytes(data))
        if rec.get("kind") == ObjectionRecord.KIND:
            out.append(ObjectionRecord.from_json(rec))
    return out


async def test_objections_marked_answered_three_ways_and_overdue(stack: DevStack) -> None:
    uscc = subject(stack, "enterprise_all_departments")
    today = _desk(stack).today()
    recent = today - dt.timedelta(days=10)
    ids = [_publish_penalty(stack, uscc, decided_on=recent, fine_fen=500_000) for _ in range(4)]
    corrected, confirmed, undetermined, unanswered = ids
    before = await _penalties(stack, uscc)
    assert all(not before[i].disputed for i in ids)

    agency = Agency(stack, "procurement")
    try:
        # Without the subject's consent an agency may not file for it.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agency.file(
                subject=_enterprise(uscc), department="market", dataset=PENALTIES,
                record_id=corrected, grounds="金额有误",
            )  # fmt: skip
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # A statement holding an identifier is refused (it would be shown with the record).
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agency.file(
                subject=_enterprise(uscc), department="market", dataset=PENALTIES,
                record_id=corrected, grounds="金额有误", consent_token=_consent(stack, uscc),
                statement=f"本企业 {uscc} 不认可",
            )  # fmt: skip
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert uscc not in (refused.value.details() or "")

        # A consent granted to another agency is not this agency's authority.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agency.file(
                subject=_enterprise(uscc), department="market", dataset=PENALTIES,
                record_id=corrected, grounds="金额有误",
                consent_token=_consent(stack, uscc, grantee="bank"),
            )  # fmt: skip
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

        filed = {}
        for rid in ids:
            filed[rid] = await agency.file(
                subject=_enterprise(uscc), department="market", dataset=PENALTIES,
                record_id=rid, grounds="处罚决定已撤销，记录未更新",
                evidence_sha256=["ab" * 32], consent_token=_consent(stack, uscc),
                statement="本企业已提出异议，处罚决定已被撤销" if rid == confirmed else "",
            )  # fmt: skip
        for obj in filed.values():
            assert obj.outcome == common_pb2.OBJECTION_OUTCOME_PENDING
            assert obj.filed_on == today.isoformat()
            assert obj.due_on == (today + dt.timedelta(days=20)).isoformat()
            assert obj.routed  # the department was up: received at once
        # A second objection against an open one is refused.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await agency.file(
                subject=_enterprise(uscc), department="market", dataset=PENALTIES,
                record_id=corrected, grounds="再次", consent_token=_consent(stack, uscc),
            )  # fmt: skip
        assert again.value.code() is grpc.StatusCode.ALREADY_EXISTS

        # The very next query returns every one marked, with the objection's date.
        marked = await _penalties(stack, uscc)
        for rid in ids:
            rec = marked[rid]
            assert rec.disputed
            assert rec.dispute.objection_id == filed[rid].objection_id
            assert rec.dispute.filed_on == today.isoformat()
            assert rec.dispute.outcome == common_pb2.OBJECTION_OUTCOME_PENDING
        assert marked[confirmed].statement == "本企业已提出异议，处罚决定已被撤销"

        # The department answers: corrected (the record changed at its source first),
        # confirmed, undetermined.
        with sqlite3.connect(stack.data_dir / "market.sqlite") as db:
            db.execute("UPDATE penalty SET fine_fen = 0, penalty = '警告' WHERE id = ?",
                       (int(corrected),))  # fmt: skip
        _answer(stack, filed[corrected].objection_id, "corrected", "已更正为警告")
        _answer(stack, filed[confirmed].objection_id, "confirmed", "经核查记录无误")
        _answer(stack, filed[undetermined].objection_id, "undetermined", "双方说法均予记载")
        await _desk(stack).poll_once()

        after = await _penalties(stack, uscc)
        assert not after[corrected].disputed and not after[corrected].HasField("dispute")
        assert after[corrected].fields["penalty"].text == "警告"
        assert after[corrected].statement == ""
        assert not after[confirmed].disputed
        assert after[confirmed].statement == "本企业已提出异议，处罚决定已被撤销"
        assert after[undetermined].disputed
        assert after[undetermined].dispute.outcome == common_pb2.OBJECTION_OUTCOME_UNDETERMINED
        assert after[undetermined].dispute.department_note == "双方说法均予记载"
        assert after[unanswered].disputed

        status = await agency.stub.Status(
            objections_pb2.ObjectionStatusRequest(objection_id=filed[corrected].objection_id),
            metadata=agency.metadata,
        )
        assert status.outcome == common_pb2.OBJECTION_OUTCOME_CORRECTED
        assert status.answered_on and not status.overdue

        # Twenty days pass: nothing yet. The twenty-first: the unanswered one is overdue.
        _clock(stack).advance(days=20)
        await _desk(stack).poll_once()
        page = await _scrape(stack)
        assert _gauge(page, "credit_gateway_objections_overdue", "market") == 0
        _clock(stack).advance(days=1)
        await _desk(stack).poll_once()
        status = await agency.stub.Status(
            objections_pb2.ObjectionStatusRequest(objection_id=filed[unanswered].objection_id),
            metadata=agency.metadata,
        )
        assert status.overdue and status.outcome == common_pb2.OBJECTION_OUTCOME_PENDING
        overdue = await agency.stub.List(
            objections_pb2.ListObjectionsRequest(overdue_only=True), metadata=agency.metadata
        )
        assert [o.objection_id for o in overdue.objections] == [filed[unanswered].objection_id]
        page = await _scrape(stack)
        assert _gauge(page, "credit_gateway_objections_overdue", "market") == 1
        assert _gauge(page, "credit_gateway_objections_open", "market") == 1
        assert uscc not in page, [ln for ln in page.splitlines() if uscc in ln]

        # Another agency sees none of it.
        other = Agency(stack, "bank")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await other.stub.Status(
                    objections_pb2.ObjectionStatusRequest(
                        objection_id=filed[unanswered].objection_id
                    ),
                    metadata=other.metadata,
                )
            assert hidden.value.code() is grpc.StatusCode.NOT_FOUND
        finally:
            await other.close()
    finally:
        await agency.close()
        _clock(stack).now = dt.datetime.now(dt.UTC)

    # Every step is on the signed record, the subject by pseudonym only.
    records = _objection_records(stack)
    steps = {
        (r.action, r.answer) for r in records if r.objection_id == filed[corrected].objection_id
    }
    assert {("file", None), ("routed", None), ("answered", "corrected")} <= steps
    assert any(r.action == "overdue" and r.objection_id == filed[unanswered].objection_id
               for r in records)  # fmt: skip
    assert any(r.outcome == "refused" and r.error == "HOLDS_IDENTIFIER" for r in records)
    text = json.dumps([r.to_json() for r in records], ensure_ascii=False)
    assert uscc not in text


async def test_credit_repair_refused_before_its_period_then_approved(
    stack: DevStack, tmp_path: Path
) -> None:
    uscc = subject(stack, "enterprise_all_departments")
    desk = _desk(stack)
    clock = _clock(stack)
    start = clock.now
    today = desk.today()
    # A general penalty (a fine under 100,000 yuan) published ten days ago: 3 months minimum.
    rid = _publish_penalty(stack, uscc, decided_on=today - dt.timedelta(days=10), fine_fen=900_000)
    agency = Agency(stack, "procurement")
    try:

        def repair() -> objections_pb2.ApplyRepairRequest:
            return objections_pb2.ApplyRepairRequest(
                request_id=str(uuid.uuid4()), subject=_enterprise(uscc), department="market",
                dataset=PENALTIES, record_id=rid, grounds="已履行处罚决定并完成整改",
                consent_token=_consent(stack, uscc),
            )  # fmt: skip

        with pytest.raises(grpc.aio.AioRpcError) as early:
            await agency.stub.ApplyRepair(repair(), metadata=agency.metadata)
        assert early.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        allowed = today - dt.timedelta(days=10)
        assert "general" in (early.value.details() or "")
        # The README's `credit-query objection repair`, through the installed script.
        demo = tmp_path / "demo.json"
        demo.write_text(json.dumps(stack.describe()), encoding="utf-8")
        consent_file = tmp_path / "consent.jwt"
        consent_file.write_text(_consent(stack, uscc), encoding="utf-8")
        cli = await asyncio.to_thread(
            _credit_query,
            "objection", "--demo", str(demo), "--agency", "procurement", "repair",
            "--enterprise", uscc, "--record", f"market/{PENALTIES}/{rid}",
            "--grounds", "已履行处罚决定并完成整改", "--consent-file", str(consent_file),
        )  # fmt: skip
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert "FAILED_PRECONDITION" in cli.stderr and "general" in cli.stderr
        assert uscc not in cli.stderr
        # Registration is not public credit information that can be repaired.
        not_repairable = repair()
        not_repairable.dataset = "registration"
        not_repairable.record_id = uscc
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await agency.stub.ApplyRepair(not_repairable, metadata=agency.metadata)
        assert wrong.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        clock.advance(days=100)  # past three months from publication
        applied = await agency.stub.ApplyRepair(repair(), metadata=agency.metadata)
        assert applied.kind == common_pb2.OBJECTION_KIND_REPAIR
        assert applied.severity == "general"
        assert applied.repair_allowed_from > allowed.isoformat()
        assert applied.routed
        assert rid in await _penalties(stack, uscc)  # shared until the department decides

        _answer(stack, applied.objection_id, "repair_approved", "已完成信用修复")
        await desk.poll_once()
        assert rid not in await _penalties(stack, uscc)  # no longer shared
        assert desk.is_repaired("market", PENALTIES, rid)  # nor screened
        status = await agency.stub.Status(
            objections_pb2.ObjectionStatusRequest(objection_id=applied.objection_id),
            metadata=agency.metadata,
        )
        assert status.outcome == common_pb2.OBJECTION_OUTCOME_REPAIR_APPROVED
    finally:
        await agency.close()
        clock.now = start
    records = [r for r in _objection_records(stack) if r.objection_kind == "repair"]
    assert any(r.outcome == "refused" and r.error == "REPAIR_TOO_EARLY" for r in records)
    assert any(r.action == "answered" and r.answer == "repair_approved" for r in records)


async def test_the_subject_files_through_self_service_and_sees_only_its_own(
    stack: DevStack,
) -> None:
    person = subject(stack, "person_with_loans")

    async def loans(agency: str = "ndrc") -> dict[str, common_pb2.Record]:
        # The supervisor looks (free, with the person's consent); the subject itself once
        # (two free reports a year).
        async with stack.client(agency) as client:
            if agency == "self_service":
                response = await client.query(person=person, purpose="self_query")
            else:
                response = await client.query(
                    person=person,
                    purpose="supervision_inspection",
                    consent_token=_person_consent(stack, person),
                )
        return {
            r.record_id: r
            for s in response.sections
            if s.department == "pbccrc"
            for ds in s.datasets
            if ds.dataset == "personal_loans"
            for r in ds.records
        }

    rid = next(r for r, rec in (await loans()).items() if not rec.disputed)
    kiosk = Agency(stack, "self_service")
    try:
        me = common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_PERSON, id=person)
        obj = await kiosk.file(
            subject=me, department="pbccrc", dataset="personal_loans",
            record_id=rid, grounds="该笔贷款金额有误",
        )  # fmt: skip
        assert obj.routed
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kiosk.stub.AddStatement(
                objections_pb2.AddStatementRequest(
                    objection_id=obj.objection_id, statement=f"我的身份证号 {person}"
                ),
                metadata=kiosk.metadata,
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        updated = await kiosk.stub.AddStatement(
            objections_pb2.AddStatementRequest(
                objection_id=obj.objection_id, statement="本人对该笔贷款金额有异议"
            ),
            metadata=kiosk.metadata,
        )
        assert updated.statement == "本人对该笔贷款金额有异议"
        mine = await kiosk.stub.List(
            objections_pb2.ListObjectionsRequest(open_only=True), metadata=kiosk.metadata
        )
        assert [o.objection_id for o in mine.objections] == [obj.objection_id]
        assert mine.objections[0].due_on
        # The kiosk speaks for its own subject only.
        other = common_pb2.Subject(
            type=common_pb2.SUBJECT_TYPE_ENTERPRISE,
            id=subject(stack, "enterprise_all_departments"),
        )
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await kiosk.stub.List(
                objections_pb2.ListObjectionsRequest(subject=other), metadata=kiosk.metadata
            )
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        shown = (await loans("self_service"))[rid]
        assert shown.disputed and shown.statement == "本人对该笔贷款金额有异议"
    finally:
        await kiosk.close()


def _credit_query(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("credit-query")), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_line_files_follows_and_states(stack: DevStack, tmp_path: Path) -> None:
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(stack.describe()), encoding="utf-8")
    person = subject(stack, "person_with_loans")
    consent = _person_consent(stack, person)
    async with stack.client("ndrc") as client:
        response = await client.query(
            person=person, purpose="supervision_inspection", consent_token=consent
        )
    loans = [
        r.record_id
        for s in response.sections
        if s.department == "hrss"
        for ds in s.datasets
        if ds.dataset == "income"
        for r in ds.records
    ]
    evidence = tmp_path / "payslip.pdf"
    evidence.write_bytes(b"%PDF-1.4 a payslip")
    conn = ["objection", "--demo", str(demo), "--agency", "self_service"]
    filed = await asyncio.to_thread(
        _credit_query,
        *conn, "--json", "file", "--person", person, "--record", f"hrss/income/{loans[0]}",
        "--grounds", "收入数额有误", "--evidence", str(evidence),
    )  # fmt: skip
    assert filed.returncode == 0, filed.stderr
    (obj,) = json.loads(filed.stdout)
    assert obj["outcome"] == "OBJECTION_OUTCOME_PENDING" and obj["routed"]
    # The digest was computed here; the department received only it.
    hrss_db = sqlite3.connect(stack.data_dir / "hrss.sqlite")
    try:
        (sent,) = hrss_db.execute(
            "SELECT evidence_sha256 FROM gateway_objections WHERE objection_id = ?",
            (obj["objectionId"],),
        ).fetchone()
    finally:
        hrss_db.close()
    assert sent == hashlib.sha256(evidence.read_bytes()).hexdigest()

    stated = await asyncio.to_thread(
        _credit_query, *conn, "statement", obj["objectionId"], "本人声明：收入记录有误"
    )
    assert stated.returncode == 0, stated.stderr
    assert "statement: 本人声明：收入记录有误" in stated.stdout
    listed = await asyncio.to_thread(_credit_query, *conn, "list", "--open")
    assert listed.returncode == 0, listed.stderr
    assert obj["objectionId"] in listed.stdout and "due " in listed.stdout
    refused = await asyncio.to_thread(
        _credit_query, *conn, "statement", obj["objectionId"], f"身份证 {person}"
    )
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr
    assert person not in refused.stderr
    # The query table shows the mark, its dates and the statement.
    consent_file = tmp_path / "consent.jwt"
    consent_file.write_text(consent, encoding="utf-8")
    shown = await asyncio.to_thread(
        _credit_query, "--demo", str(demo), "--agency", "ndrc", "--person", person,
        "--purpose", "supervision_inspection", "--dataset", "hrss/income",
        "--consent-file", str(consent_file),
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    line = next(ln for ln in shown.stdout.splitlines() if f"#{loans[0]} " in ln)
    assert "[DISPUTED] since" in line and "本人声明：收入记录有误" in line


async def test_an_approved_repair_takes_a_list_entry_off_every_screen(stack: DevStack) -> None:
    # Issue 15's screening asks issue 14's objection desk: a repaired entry is not screened.
    from gateway.domain.identifiers import uscc_check_char
    from protos.credit.v1 import screening_pb2, screening_pb2_grpc

    body = "91350200MA9876543"
    uscc = body + uscc_check_char(body)
    today = _desk(stack).today()
    with sqlite3.connect(stack.data_dir / "market.sqlite") as db:
        rid = str(
            db.execute(
                "INSERT INTO abnormal_list (uscc, reason, listed_on, listing_authority)"
                " VALUES (?, '通过登记的住所无法联系', ?, '厦门市市场监督管理局')",
                (uscc, (today - dt.timedelta(days=30)).isoformat()),
            ).lastrowid
        )
    agency = Agency(stack, "procurement")
    screens = screening_pb2_grpc.ScreeningServiceStub(agency.channel)

    async def abnormal() -> int:
        response = await screens.Screen(
            screening_pb2.ScreenRequest(
                request_id=str(uuid.uuid4()), subject=_enterprise(uscc),
                scenario="government_procurement", purpose="government_procurement",
                mode=query_pb2.QUERY_MODE_FREE,
            ),
            metadata=agency.metadata, timeout=10,
        )  # fmt: skip
        (status,) = [s for s in response.lists if s.list == "abnormal_operations"]
        return int(status.state)

    try:
        assert await abnormal() == screening_pb2.LIST_STATE_ON_LIST
        applied = await agency.stub.ApplyRepair(
            objections_pb2.ApplyRepairRequest(
                request_id=str(uuid.uuid4()), subject=_enterprise(uscc), department="market",
                dataset="abnormal_operations", record_id=rid, grounds="已更正住所并可联系",
                consent_token=_consent(stack, uscc),
            ),
            metadata=agency.metadata,
        )  # fmt: skip
        assert applied.severity == "minor" and applied.routed  # no minimum period
        assert await abnormal() == screening_pb2.LIST_STATE_ON_LIST  # until it is decided
        _answer(stack, applied.objection_id, "repair_approved", "已移出经营异常名录")
        await _desk(stack).poll_once()
        assert await abnormal() == screening_pb2.LIST_STATE_NOT_ON_LIST
    finally:
        await agency.close()
