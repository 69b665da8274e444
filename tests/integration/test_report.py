"""Signed credit reports end to end: the Report RPC over the real federation (mutual TLS,
real departments, the real audit log and ledger), the command lines through the installed
console scripts, and credit-audit check-report offline."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import grpc
import pytest

from gateway.api.edge import Edge
from gateway.api.report import ReportService
from gateway.audit.note import load_verifiers
from gateway.audit.reportcheck import check_report
from gateway.cli.connect import build_request
from gateway.dev.devstack import DevStack
from gateway.errors import ConfigError
from gateway.report import find_font
from protos.credit.v1 import report_pb2, report_pb2_grpc
from tests.integration.conftest import subject
from tests.pg import PgCluster, fresh_database
from tests.unit.report.report_kit import kit

pytestmark = pytest.mark.asyncio(loop_scope="module")

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _font() -> None:
    try:
        find_font()
    except ConfigError as err:
        pytest.skip(f"NOT RUN: {err.problem}")


def _record(stack: DevStack, index: int) -> dict[str, object]:
    conn = sqlite3.connect(stack.audit["log"])
    try:
        (leaf,) = conn.execute("SELECT leaf FROM entries WHERE idx = ?", (index,)).fetchone()
    finally:
        conn.close()
    return dict(json.loads(leaf))


async def test_a_report_is_the_query_audited_and_signed(stack: DevStack) -> None:
    request = build_request(
        enterprise=subject(stack, "enterprise_all_departments"), purpose="supervision_inspection"
    )
    async with stack.client("ndrc") as client:
        made = await client.report(request)
    answer = made.response
    assert answer.request_id == request.request_id and answer.receipt.leaf_hash
    record = _record(stack, answer.receipt.log_index)
    assert record["kind"] == "query" and record["request_id"] == request.request_id
    checked = check_report(made.pdf, load_verifiers(stack.audit["verifier_key"]))
    assert checked.verification_code == made.verification_code
    assert checked.pdf and checked.checkpoint.size > answer.receipt.log_index
    content = checked.content
    assert content["agency"]["id"] == "ndrc" and content["agency"]["name"]
    assert content["purpose"] == {"code": "supervision_inspection", "title": "监督检查"}
    assert [s["department"] for s in content["sections"]] == [s.department for s in answer.sections]
    # The disputed and aged-out records of this subject reach the report.
    datasets = [d for s in content["sections"] for d in s["datasets"]]
    assert any(r["disputed"] for d in datasets for r in d["records"])
    assert sum(d["aged_out"] for d in datasets) >= 1
    withheld = [w for s in content["sections"] for w in s["withheld"]]
    assert any(w["reason"] == "consent_required" for w in withheld)


async def test_a_paid_report_is_charged_once_like_the_query(stack: DevStack) -> None:
    request = build_request(
        enterprise=subject(stack, "enterprise_clean"), purpose="lending", mode="paid"
    )
    before = await stack.balance_fen("bank")
    async with stack.client("bank") as client:
        first = await client.report(request)
        again = await client.report(request)  # a retry: the same request id
    charged = first.response.charge.amount_fen
    assert charged > 0
    assert await stack.balance_fen("bank") == before - charged
    assert again.response.charge.amount_fen == charged
    verifiers = load_verifiers(stack.audit["verifier_key"])
    assert check_report(again.pdf, verifiers).content["charge"] == {"amount_fen": charged}


async def test_a_refused_report_is_refused_as_the_query_would_be(stack: DevStack) -> None:
    request = build_request(enterprise=subject(stack, "enterprise_clean"), purpose="curiosity")
    async with stack.client("ndrc") as client:
        with pytest.raises(grpc.aio.AioRpcError) as as_report:
            await client.report(request)
        with pytest.raises(grpc.aio.AioRpcError) as as_query:
            await client.send(request)
    assert as_report.value.code() is as_query.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert as_report.value.details() == as_query.value.details()


@pytest.mark.parametrize("font", ["missing.ttc", "not-a-font.ttf"])
async def test_without_a_usable_font_nothing_is_asked_or_charged(
    stack: DevStack, tmp_path: Path, font: str
) -> None:
    if font == "not-a-font.ttf":
        (tmp_path / font).write_bytes(b"\x00\x01\x00\x00 not a font")
    gw = stack.gateway
    assert gw._service is not None and gw._audit is not None
    service = ReportService(
        gw._service,
        gw._audit.log,
        catalog=lambda: gw.catalog,
        purposes=dict,
        font=tmp_path / font,
    )
    server = grpc.aio.server(interceptors=[Edge()], options=[("grpc.so_reuseport", 0)])
    report_pb2_grpc.add_ReportServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    size = gw._audit.log.size
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = build_request(
                enterprise=subject(stack, "enterprise_clean"), purpose="lending", mode="paid"
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await report_pb2_grpc.ReportServiceStub(channel).Report(
                    report_pb2.ReportRequest(query=request), timeout=10
                )
    finally:
        await server.stop(0)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert font not in (err.value.details() or "")  # no path reaches a caller
    assert gw._audit.log.size == size  # no query ran, so nothing was recorded


async def _script(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_command_lines(stack: DevStack, tmp_path: Path) -> None:
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(stack.describe()), encoding="utf-8")
    pdf, as_json = tmp_path / "report.pdf", tmp_path / "report.json"
    code, out = await _script(
        str(BIN / "credit-query"), "report", "--demo", str(demo), "--agency", "procurement",
        "--enterprise", subject(stack, "enterprise_all_departments"),
        "--purpose", "government_procurement", "--out", str(pdf), "--json", str(as_json),
    )  # fmt: skip
    assert code == 0, out
    assert out.startswith("report ") and str(pdf) in out
    key = str(stack.audit["verifier_key"])
    audit = str(BIN / "credit-audit")
    for form in (pdf, as_json):
        code, out = await _script(audit, "check-report", str(form), "--key", key)
        assert code == 0, out
        assert out.startswith("OK: report ")
    code, out = await _script(
        audit, "check-report", str(pdf), "--key", key, "--log", str(stack.audit["log"])
    )
    assert code == 0 and "agrees" in out, out
    # A copy with one changed byte, in the middle of the drawn pages, is refused.
    data = bytearray(pdf.read_bytes())
    data[len(data) // 2] ^= 0x01
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(bytes(data))
    code, out = await _script(audit, "check-report", str(changed), "--key", key)
    assert code == 1 and out.startswith("FAILED: "), out


async def test_a_failed_report_command_writes_nothing(stack: DevStack, tmp_path: Path) -> None:
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(stack.describe()), encoding="utf-8")
    code, out = await _script(
        str(BIN / "credit-query"), "report", "--demo", str(demo), "--agency", "procurement",
        "--enterprise", subject(stack, "enterprise_clean"), "--purpose", "curiosity",
        "--out", str(tmp_path / "report.pdf"),
    )  # fmt: skip
    assert code == 1 and "INVALID_ARGUMENT" in out
    assert list(tmp_path.iterdir()) == [demo]


async def test_check_report_refuses_a_report_of_another_log(
    stack: DevStack, tmp_path: Path
) -> None:
    # Another gateway's log (its own key): its report is not proved by this log's checkpoints.
    other = kit()
    made = other.make()
    (tmp_path / "r.pdf").write_bytes(made.pdf)
    code, out = await _script(
        str(BIN / "credit-audit"), "check-report", str(tmp_path / "r.pdf"),
        "--key", str(stack.audit["verifier_key"]),
    )  # fmt: skip
    assert code == 1 and "not a trusted key" in out, out


REPORT = "/credit.v1.ReportService/Report"


@pytest.mark.parametrize(
    ("who", "body", "expected"),
    [
        (("agencies", "ndrc"), b"\xff\xff\xff\xff\x0f", grpc.StatusCode.INVALID_ARGUMENT),
        (("agencies", "ndrc"), b"", grpc.StatusCode.INVALID_ARGUMENT),
        (("auditors", "auditor"), b"", None),
    ],
)
async def test_odd_calls_are_refused_cleanly(
    stack: DevStack, who: tuple[str, str], body: bytes, expected: grpc.StatusCode | None
) -> None:
    channel, metadata = stack.channel(*who)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(REPORT)(body, timeout=30, metadata=metadata)
    code = err.value.code()
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
    if expected is not None:
        assert code is expected
    else:  # not an agency: refused before anything is asked
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert "Error" not in (err.value.details() or "") and "/" not in (err.value.details() or "")


async def test_check_report_reads_a_postgresql_log(
    tmp_path: Path, pg_url: str, pg_cluster: PgCluster
) -> None:
    """``check-report --log`` reads the log many gateways share, as every other credit-audit
    command does: the report's checkpoint is a view of that database's tree; another
    database (no entries) disagrees; a password option without ``--log`` is a usage error."""
    async with await DevStack.create(
        tmp_path / "s", subjects=60, storage_url=pg_url, sqlite_stores=()
    ) as pg_stack:
        request = build_request(
            enterprise=subject(pg_stack, "enterprise_clean"), purpose="government_procurement"
        )
        async with pg_stack.client("procurement") as client:
            made = await client.report(request)
        key = str(pg_stack.audit["verifier_key"])
        report = tmp_path / "report.json"
        report.write_bytes(made.json)
        password = tmp_path / "pg.pass"
        password.write_text("unused-by-trust-auth\n", encoding="utf-8")
        password.chmod(0o600)
        audit = str(BIN / "credit-audit")
        code, out = await _script(
            audit, "check-report", str(report), "--key", key, "--log", pg_url,
            "--password-file", str(password),
        )  # fmt: skip
        assert code == 0, out
        index = made.response.receipt.log_index
        assert f"receipt entry {index} is in" in out and f"the log {pg_url} agrees" in out, out
    with fresh_database(pg_cluster) as other:  # migrated, no entries: not this report's log
        code, out = await _script(audit, "check-report", str(report), "--key", key, "--log", other)
    assert (code, out) == (1, "FAILED: index 0: the log has no checkpoint at all\n")
    code, out = await _script(
        audit, "check-report", str(report), "--key", key, "--password-file", str(password)
    )
    assert code == 2 and "for a postgresql:// --log" in out, out
