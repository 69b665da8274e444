"""gateway.report.pdf: the report renders (pdftoppm) with readable Chinese (pdftotext finds
the headings), the CJK font is embedded, and the signed JSON is attached. Tests that need
poppler-utils or the font say NOT RUN where they are missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.report.maker import MadeReport, ReportMaker
from gateway.report.pdf import ATTACHMENT_NAME
from tests.unit.report.report_kit import USCC, font, kit, need


@pytest.fixture(scope="module")
def made() -> MadeReport:
    return kit().make()


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    assert "Error" not in done.stderr, done.stderr  # poppler reads the file without complaint
    return done.stdout


def test_the_report_renders_with_readable_chinese(made: MadeReport, tmp_path: Path) -> None:
    pdftotext = need("pdftotext")
    pdftoppm = need("pdftoppm")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(made.pdf)
    _run(pdftoppm, "-png", "-r", "50", str(pdf), str(tmp_path / "page"))
    pages = sorted(tmp_path.glob("page*.png"))
    assert pages and all(p.read_bytes().startswith(b"\x89PNG") for p in pages)
    text = _run(pdftotext, "-enc", "UTF-8", str(pdf), "-")
    for heading in (
        "信用报告",
        "信息主体",
        "查询机构",
        "查询用途",
        "一、市场监督管理局",
        "行政处罚信息（负面信息）",
        "异议标注",
        "有异议，正在核查处理",
        "未提供的信息项及原因",
        "须经信息主体书面同意",
        "二、税务局",
        "超时未答复",
        "审计回执与验证",
        "验证码",
    ):
        assert heading in text, heading
    assert USCC in text and made.code in text and "12,345.67 元" in text
    assert "2026-11-30 16:00:00（北京时间，UTC+8）" in text  # generated 08:00 UTC
    assert "示例商业银行（bank-001）" in text and "贷款审批（lending）" in text


def test_the_cjk_font_is_embedded(made: MadeReport, tmp_path: Path) -> None:
    pdffonts = need("pdffonts")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(made.pdf)
    rows = [line.split() for line in _run(pdffonts, str(pdf)).splitlines()[2:]]
    cjk = [row for row in rows if "WenQuanYi" in row[0] or "UMing" in row[0] or "Droid" in row[0]]
    assert cjk and all(row[3:5] == ["yes", "yes"] for row in cjk)  # embedded, subset
    # Anything else is reportlab's default standard-14 font, which draws no text here.
    assert all(row[0] == "Helvetica" for row in rows if row not in cjk)


def test_the_signed_json_is_attached(made: MadeReport, tmp_path: Path) -> None:
    pdfdetach = need("pdfdetach")
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(made.pdf)
    assert ATTACHMENT_NAME in _run(pdfdetach, "-list", str(pdf))
    _run(pdfdetach, "-save", "1", "-o", str(tmp_path / "a.json"), str(pdf))
    attached = (tmp_path / "a.json").read_bytes()
    assert attached.startswith(made.json.rstrip(b"\n}"))  # the JSON form, plus pdf_signature


def test_members_record_gains_later_are_drawn(tmp_path: Path) -> None:
    # Issue 14 adds Record.dispute (a DisputeMark) and Record.statement: content carries them
    # by their proto names (record_json), and the PDF draws them under their labels.
    pdftotext = need("pdftotext")
    k = kit()
    content = k.content()
    record = content["sections"][0]["datasets"][0]["records"][0]
    record["dispute"] = {
        "objection_id": "OBJ-1",
        "filed_on": "2026-11-01",
        "due_on": "2026-11-21",
        "outcome": "OBJECTION_OUTCOME_PENDING",
    }
    record["statement"] = "该处罚已全额缴纳罚款"
    record["some_future_member"] = "shown by its name"
    made = ReportMaker(k.signer, font()).make(content, k.proof())
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(made.pdf)
    text = _run(pdftotext, "-enc", "UTF-8", str(pdf), "-")
    for shown in (
        "异议情况：异议编号",
        "OBJ-1",
        "异议情况：答复期限",
        "2026-11-21",
        "待核查",
        "信息主体声明",
        "该处罚已全额缴纳罚款",
        "some_future_member",
    ):
        assert shown in text, shown
