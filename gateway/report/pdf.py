"""The report as a PDF (A4, Simplified Chinese), laid out like a credit report.

:func:`render_pdf` draws the content of :mod:`gateway.report.content` with reportlab (a
subset of the CJK TrueType font embedded) and attaches the report's JSON envelope as the
embedded file ``credit-report.json`` in an *uncompressed* stream, so that ``credit-audit``
reads it back with the standard library alone (:mod:`gateway.audit.reportcheck`).

Order of the document, after the PBoC report's: title and basic facts (report number, times,
subject, agency, purpose), one part per department (status, each dataset's records, items
withheld with the reason), then the audit receipt with the verification code as text and as a
QR code (segno, drawn as vector squares: no image library needed).

Every record field is shown: the catalog's fields under their Chinese titles, then any other
member of the Record under :data:`RECORD_LABELS` or, failing that, its proto name.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import segno
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFName, PDFStream, PDFString
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

__all__ = ["ATTACHMENT_NAME", "RECORD_LABELS", "VALUE_LABELS", "register_font", "render_pdf"]

#: The embedded file holding the signed JSON envelope.
ATTACHMENT_NAME = "credit-report.json"
#: Chinese labels of Record members other than ``fields``, and of the members of messages
#: they hold (add one per new member; until then its proto name shows). The dispute mark
#: and the subject's statement are issue 14's (credit.v1.DisputeMark, Record.statement).
RECORD_LABELS = {
    "record_id": "记录编号",
    "event_end_date": "失信行为（事件）结束日期",
    "disputed": "异议标注",
    "dispute": "异议情况",
    "objection_id": "异议编号",
    "filed_on": "异议提出日期",
    "due_on": "答复期限",
    "outcome": "处理状态",
    "department_note": "部门核查说明",
    "statement": "信息主体声明",
}
#: Enum values in words (content keeps the proto names; unknown ones show as they are).
VALUE_LABELS = {
    "OBJECTION_OUTCOME_PENDING": "待核查",
    "OBJECTION_OUTCOME_UNDETERMINED": "核查后仍无法确定",
}
_SKIP = {"fields"}
_FONT = "CreditReportCJK"
_LOADED: dict[str, str] = {}  # font file -> its registered name
_NUMERALS = "一二三四五六七八九十"


def register_font(font: Path) -> str:
    """Load ``font`` (once per process and file) and return the name reportlab knows it by.

    Raises OSError or reportlab's TTFError if it is not a usable TrueType font.
    """
    key = str(font.resolve())
    name = _LOADED.get(key)
    if name is None:
        name = f"{_FONT}{len(_LOADED)}"
        # subfontIndex 0: a .ttc collection's first face (Zen Hei; a .ttf has only one).
        pdfmetrics.registerFont(TTFont(name, key, subfontIndex=0))
        _LOADED[key] = name
    return name


def _styles(font: str) -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("body", fontName=font, fontSize=9.5, leading=14, wordWrap="CJK")
    return {
        "body": base,
        "small": ParagraphStyle("small", parent=base, fontSize=8, leading=11),
        "title": ParagraphStyle("title", parent=base, fontSize=22, leading=30, alignment=1),
        "subtitle": ParagraphStyle("subtitle", parent=base, fontSize=10, alignment=1),
        "h1": ParagraphStyle("h1", parent=base, fontSize=13, leading=20, spaceBefore=10),
        "h2": ParagraphStyle("h2", parent=base, fontSize=10.5, leading=16, spaceBefore=6),
        "code": ParagraphStyle("code", parent=base, fontSize=16, leading=22),
    }


def _money(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}{fen // 100:,}.{fen % 100:02d} 元"


def _text(value: Any, kind: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "是" if value else "否"
    if kind == "money_fen" and isinstance(value, int):
        return _money(value)
    if isinstance(value, list):
        return "；".join(_text(v) for v in value) or "—"
    if isinstance(value, dict):
        return "；".join(f"{RECORD_LABELS.get(k, k)}：{_text(v)}" for k, v in value.items()) or "—"
    text = str(value)
    return VALUE_LABELS.get(text, text) if text else "—"


def _beijing(utc: str) -> str:
    """``2026-11-30T08:00:00Z`` -> ``2026-11-30 16:00:00（北京时间，UTC+8）`` (content: UTC)."""
    try:
        at = dt.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return utc
    local = at + dt.timedelta(hours=8)  # China has one time zone and no daylight saving
    return f"{local:%Y-%m-%d %H:%M:%S}（北京时间，UTC+8）"


class _QR(Flowable):
    """A QR code drawn as vector squares (segno's module matrix)."""

    def __init__(self, payload: str, size: float) -> None:
        super().__init__()
        self._matrix = [list(row) for row in segno.make(payload, error="m", micro=False).matrix]
        self.width = self.height = size

    def draw(self) -> None:
        n = len(self._matrix)
        quiet = 2
        cell = self.width / (n + 2 * quiet)
        c = self.canv
        c.setFillColor(colors.black)
        for y, row in enumerate(self._matrix):
            for x, dark in enumerate(row):
                if dark:
                    c.rect(
                        (x + quiet) * cell,
                        self.height - (y + quiet + 1) * cell,
                        cell,
                        cell,
                        stroke=0,
                        fill=1,
                    )


def _grid(rows: Sequence[Sequence[Any]], widths: Sequence[float], header: bool = False) -> Table:
    table = Table([list(r) for r in rows], colWidths=list(widths), hAlign="LEFT")
    # A header row is shaded for a list; the first column for a sheet of label: value.
    shaded = (-1, 0) if header else (0, -1)
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("BACKGROUND", (0, 0), shaded, colors.HexColor("#f2f2f2")),
            ]
        )
    )
    return table


def _record_rows(record: Mapping[str, Any], p: Any) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for f in record.get("fields", []):
        label = f["title"] or f["name"]
        rows.append([p(label), p(_text(f["value"], f["type"]))])
    for key, value in record.items():
        if key in _SKIP:
            continue
        if isinstance(value, dict) and value:
            # A message (a dispute mark): one row per member, under the member's label.
            label = RECORD_LABELS.get(key, key)
            for k, v in value.items():
                rows.append([p(f"{label}：{RECORD_LABELS.get(k, k)}"), p(_text(v))])
            continue
        shown = _text(value)
        if key == "disputed":
            shown = "有异议，正在核查处理" if value else "无"
        rows.append([p(RECORD_LABELS.get(key, key)), p(shown)])
    return rows


def _story(content: Mapping[str, Any], code: str, qr_payload: str, font: str) -> list[Flowable]:
    st = _styles(font)

    def p(text: Any, style: str = "body") -> Paragraph:
        return Paragraph(escape(str(text)), st[style])

    subject = content["subject"]
    agency = content["agency"]
    purpose = content["purpose"]
    width = A4[0] - 36 * mm
    story: list[Flowable] = [
        p(content.get("title", "信用报告"), "title"),
        p("（信用信息共享平台联合查询结果）", "subtitle"),
        Spacer(1, 6 * mm),
        _grid(
            [
                [p("报告编号"), p(content["request_id"])],
                [p("生成时间"), p(_beijing(content["generated_at"]))],
                [p("查询日期"), p(content["query_date"])],
                [p("信息主体"), p(f"{subject['type_title']}  {subject['id']}")],
                [p("查询机构"), p(f"{agency['name'] or agency['id']}（{agency['id']}）")],
                [p("查询用途"), p(f"{purpose['title'] or purpose['code']}（{purpose['code']}）")],
                [
                    p("依据版本"),
                    p(f"策略 {content['policy_version']}；目录 {content['catalog_version']}"),
                ],
                [p("本次收费"), p(_money(int(content["charge"]["amount_fen"])))],
            ],
            [32 * mm, width - 32 * mm],
        ),
    ]
    for n, section in enumerate(content["sections"]):
        numeral = _NUMERALS[n] if n < len(_NUMERALS) else str(n + 1)
        name = section["name"] or section["department"]
        story.append(p(f"{numeral}、{name}", "h1"))
        status = f"查询状态：{section['status_title']}"
        if section["detail"] and section["status"] != "ok":
            status += f"（{section['detail']}）"
        story.append(p(status))
        for ds in section["datasets"]:
            title = ds["title"] or ds["dataset"]
            negative = "（负面信息）" if ds["negative"] else ""
            story.append(p(f"{title}{negative}：{len(ds['records'])} 条记录", "h2"))
            if ds["aged_out"]:
                story.append(
                    p(
                        f"另有 {ds['aged_out']} 条负面信息自失信行为终止之日起已满五年，"
                        "依《征信业管理条例》第十六条不予展示。",
                        "small",
                    )
                )
            for i, record in enumerate(ds["records"], start=1):
                story.append(p(f"记录 {i}", "small"))
                story.append(_grid(_record_rows(record, p), [48 * mm, width - 48 * mm]))
                story.append(Spacer(1, 2 * mm))
        if section["withheld"]:
            story.append(p("未提供的信息项及原因", "h2"))
            rows: list[list[Any]] = [[p("数据集"), p("信息项"), p("原因"), p("说明")]]
            for w in section["withheld"]:
                rows.append(
                    [
                        p(w["dataset_title"] or w["dataset"]),
                        p(w["field_title"] or w["field"] or "（整个数据集）"),
                        p(w["reason_title"]),
                        p(w["detail"] or "—"),
                    ]
                )
            story.append(_grid(rows, [34 * mm, 34 * mm, 40 * mm, width - 108 * mm], header=True))
    receipt = content["receipt"]
    story.append(p("审计回执与验证", "h1"))
    receipt_table = _grid(
        [
            [p("审计日志"), p(receipt["origin"])],
            [p("日志条目序号"), p(str(receipt["log_index"]))],
            [p("叶哈希（RFC 6962）"), p(receipt["leaf_hash"], "small")],
            [p("应答摘要（SHA-256）"), p(receipt["response_digest"], "small")],
            [p("验证码"), p(code, "code")],
        ],
        [38 * mm, width - 38 * mm - 42 * mm],
    )
    story.append(
        KeepTogether(
            [
                Table(
                    [[receipt_table, _QR(qr_payload, 40 * mm)]],
                    colWidths=[width - 42 * mm, 42 * mm],
                    hAlign="LEFT",
                    style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]),
                ),
                Spacer(1, 3 * mm),
                p(
                    "本报告由信用信息共享网关根据查询时各部门的答复生成，并以审计日志密钥签名"
                    "（Ed25519）。报告内嵌签名数据（附件 credit-report.json）及其审计日志包含证明；"
                    "可使用 credit-audit check-report 离线验证签名、验证码及审计回执。",
                    "small",
                ),
            ]
        )
    )
    return story


def _attach(canvas: Canvas, envelope: bytes) -> None:
    """Attach ``envelope`` as ``credit-report.json``, its stream left uncompressed."""
    doc = canvas._doc  # type: ignore[attr-defined]  # reportlab's document: no public API
    stream = PDFStream(
        # No /Subtype: its name would be application#2Fjson, which reportlab cannot write.
        PDFDictionary({"Type": PDFName("EmbeddedFile")}),
        content=envelope,
        filters=[],  # no FlateDecode: the standard library must find the bytes
    )
    spec = PDFDictionary(
        {
            "Type": PDFName("Filespec"),
            "F": PDFString(ATTACHMENT_NAME),
            "UF": PDFString(ATTACHMENT_NAME),
            "Desc": PDFString("signed report content (credit-gateway-report/1)"),
            "AFRelationship": PDFName("Data"),
            "EF": PDFDictionary({"F": doc.Reference(stream)}),
        }
    )
    names = PDFDictionary({"Names": PDFArray([PDFString(ATTACHMENT_NAME), doc.Reference(spec)])})
    doc.Catalog.Names = PDFDictionary({"EmbeddedFiles": names})


def render_pdf(
    content: Mapping[str, Any], *, code: str, qr_payload: str, envelope: bytes, font: Path
) -> bytes:
    """Draw ``content`` and attach ``envelope``; returns the PDF file's bytes.

    ``code`` is the verification code printed in the receipt part; ``qr_payload`` the text
    its QR code holds. Raises OSError or reportlab's TTFError if ``font`` cannot be read.
    """
    name = register_font(font)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title="信用报告",
        author="credit-gateway",
        subject=f"{content['subject']['type_title']} {content['request_id']}",
        pageCompression=1,  # page streams compressed: the envelope stays the only marker
    )
    attached = False

    def page(canvas: Canvas, _doc: Any) -> None:
        nonlocal attached
        if not attached:
            _attach(canvas, envelope)
            attached = True
        canvas.saveState()
        canvas.setFont(name, 8)
        canvas.drawString(18 * mm, 10 * mm, f"验证码 {code}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"第 {canvas.getPageNumber()} 页")
        canvas.restoreState()

    doc.build(_story(content, code, qr_payload, name), onFirstPage=page, onLaterPages=page)
    return out.getvalue()
