"""Fakes of the portal's seams (its own interfaces: CreditSource, ReportSource) and the
application under Starlette's test client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.testclient import TestClient

from gateway.domain.catalog import Catalog
from gateway.portal.app import create_app
from gateway.portal.limiter import ClientLimiter
from gateway.portal.sources import (
    CreditSource,
    NoReports,
    PortalUpstreamError,
    ReportFile,
    ReportSource,
)
from protos.credit.v1 import common_pb2, query_pb2

CODE = "91350200MA2YJ1XR9G"
OTHER = "91110000600037341L"


def text(v: str) -> common_pb2.FieldValue:
    return common_pb2.FieldValue(text=v)


def date(v: str) -> common_pb2.FieldValue:
    return common_pb2.FieldValue(date=v)


def fen(v: int) -> common_pb2.FieldValue:
    return common_pb2.FieldValue(money_fen=v)


def section(
    department: str,
    status: int = query_pb2.SECTION_STATUS_OK,
    **datasets: list[dict[str, common_pb2.FieldValue]],
) -> query_pb2.DepartmentSection:
    out = query_pb2.DepartmentSection(department=department, status=status)
    for name, records in datasets.items():
        ds = out.datasets.add(dataset=name)
        for fields in records:
            ds.records.add(fields=fields)
    return out


def answer(
    *sections: query_pb2.DepartmentSection, day: str = "2026-11-30"
) -> query_pb2.QueryResponse:
    response = query_pb2.QueryResponse(request_id="r-1", query_date=day)
    response.sections.extend(sections)
    response.receipt.log_index = 41
    response.receipt.leaf_hash = b"\x01" * 32
    return response


def full_answer() -> query_pb2.QueryResponse:
    """An enterprise on the dishonest-debtor list, off the others, one penalty disputed."""
    penalties = section(
        "market",
        registration=[
            {"name": text("厦门示例科技有限公司"), "registered_capital_fen": fen(123456)}
        ],
        administrative_penalties=[
            {"decision_number": text("厦市监罚〔2025〕1号"), "fine_fen": fen(500000)}
        ],
        abnormal_operations=[],
    )
    penalties.datasets[1].records[0].disputed = True
    penalties.datasets[1].aged_out = 2
    return answer(
        penalties,
        section(
            "court",
            dishonest_debtors=[
                {"case_number": text("（2025）闽0203执1号"), "published_on": date("2025-06-01")}
            ],
        ),
        section("tax", query_pb2.SECTION_STATUS_NOT_FOUND),
        section("pbccrc", query_pb2.SECTION_STATUS_WITHHELD),
        section("hrss", wage_arrears_blacklist=[]),
    )


@dataclass
class FakeSource(CreditSource):
    """Answers every lookup with ``answer(code)``, or raises ``error``; records the codes."""

    answer: Callable[[str], query_pb2.QueryResponse] = lambda code: full_answer()
    error: PortalUpstreamError | None = None
    asked: list[str] = field(default_factory=list)

    async def lookup(self, code: str) -> query_pb2.QueryResponse:
        self.asked.append(code)
        if self.error is not None:
            raise self.error
        return self.answer(code)


@dataclass
class FakeReports(ReportSource):
    """A report source that hands out a fixed document per form."""

    asked: list[tuple[str, str]] = field(default_factory=list)
    error: Exception | None = None

    async def report(self, code: str, form: str) -> ReportFile:
        self.asked.append((code, form))
        if self.error is not None:
            raise self.error
        media = {"pdf": "application/pdf", "json": "application/json"}[form]
        return ReportFile(
            f"credit-report-{code}.{form}", media, b"%PDF-1.4 fake" if form == "pdf" else b"{}"
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Portal:
    client: TestClient
    source: FakeSource
    reports: ReportSource
    clock: Clock
    limiter: ClientLimiter


def make_portal(
    catalog: Catalog,
    *,
    reports: ReportSource | None = None,
    burst: int = 5,
    rate_per_s: float = 1 / 6,
) -> Portal:
    source = FakeSource()
    clock = Clock()
    limiter = ClientLimiter(rate_per_s=rate_per_s, burst=burst, clock=clock)
    reports = reports if reports is not None else NoReports()
    app = create_app(source=source, reports=reports, catalog=catalog, limiter=limiter)
    client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    return Portal(client, source, reports, clock, limiter)
