"""One answer of the gateway as the public page shows it: Chinese titles, values, states.

:func:`enterprise_view` turns a ``QueryResponse`` (the portal agency's answer about one
enterprise: public-tier fields only) and the published catalog into plain data the template
renders; the template does the escaping, this module never builds HTML.

What the page shows, per department that answered: each disclosed dataset with its records
(columns in catalog order, titled as in the catalog), a record under objection marked
disputed (Art. 25), the count of negative records no longer shown after five years
(Art. 16); a department that did not answer is named, so the visitor knows the page may be
incomplete. A department with nothing public (the central bank's credit reference center) is
named once, without its fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.domain.catalog import Catalog
from gateway.portal.lists import ListStatus, list_statuses
from gateway.screening.measures import MeasuresCatalog
from protos.credit.v1 import common_pb2, query_pb2

__all__ = [
    "DatasetView",
    "EnterpriseView",
    "RowView",
    "SectionView",
    "enterprise_view",
    "format_value",
]

#: Each section state as the page says it.
SECTION_TEXT: Final = {
    query_pb2.SECTION_STATUS_OK: "已查询",
    query_pb2.SECTION_STATUS_NOT_FOUND: "未查询到该企业的记录",
    query_pb2.SECTION_STATUS_UNAVAILABLE: "该部门暂时无法连接，以下信息可能不完整",
    query_pb2.SECTION_STATUS_TIMED_OUT: "该部门未在规定时间内答复，以下信息可能不完整",
    query_pb2.SECTION_STATUS_WITHHELD: "无依法可向社会公示的信息",
}
_FAILED: Final = frozenset(
    {query_pb2.SECTION_STATUS_UNAVAILABLE, query_pb2.SECTION_STATUS_TIMED_OUT}
)


@dataclass(frozen=True, slots=True)
class RowView:
    """One record: its cells in the dataset's column order, and whether it is disputed."""

    cells: tuple[str, ...]
    disputed: bool = False


@dataclass(frozen=True, slots=True)
class DatasetView:
    """One disclosed dataset: title, column titles, records, records aged out."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[RowView, ...]
    aged_out: int = 0


@dataclass(frozen=True, slots=True)
class SectionView:
    """One department's part of the page."""

    department: str
    status: str
    #: ``ok``, ``not_found``, ``failed`` (unavailable or timed out) or ``withheld``.
    state: str
    datasets: tuple[DatasetView, ...] = ()


@dataclass(frozen=True, slots=True)
class EnterpriseView:
    """What the enterprise page shows (see the module docstring)."""

    code: str
    #: The registered name (企业名称) from market regulation's registration record, or "".
    name: str
    query_date: str
    lists: Sequence[ListStatus]
    sections: Sequence[SectionView]
    #: Departments with nothing public to show, by name.
    nothing_public: Sequence[str] = field(default_factory=tuple)
    #: Whether any department holds a record of the enterprise.
    found: bool = False
    #: Whether some department did not answer (the page may be incomplete).
    incomplete: bool = False
    #: The audit log's index of the query's record (``#N``), for the visitor's reference.
    audit_index: int | None = None


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d} 元"


def format_value(value: common_pb2.FieldValue) -> str:
    """A field's value as the page prints it: money in yuan (``1,234.50 元``, exact, from
    integer fen), booleans as 是/否, dates as written (YYYY-MM-DD), an empty value as
    ``-``. Never raises."""
    kind = value.WhichOneof("kind")
    if kind == "money_fen":
        return _yuan(value.money_fen)
    if kind == "boolean":
        return "是" if value.boolean else "否"
    if kind is None:
        return "-"
    text = str(getattr(value, kind))
    return text or "-"


def _dataset_view(
    department: str, result: query_pb2.DatasetResult, catalog: Catalog
) -> DatasetView:
    spec = catalog.dataset(department, result.dataset)
    present = {name for record in result.records for name in record.fields}
    order = list(spec.fields) if spec is not None else []
    names = [n for n in order if n in present] + sorted(present.difference(order))
    titles = tuple(
        (spec.fields[n].title or n) if spec is not None and n in spec.fields else n for n in names
    )
    rows = tuple(
        RowView(
            tuple(format_value(record.fields[n]) if n in record.fields else "-" for n in names),
            record.disputed,
        )
        for record in result.records
    )
    title = spec.title if spec is not None else result.dataset
    return DatasetView(title, titles, rows, result.aged_out)


def enterprise_view(
    code: str,
    response: query_pb2.QueryResponse,
    catalog: Catalog,
    measures: MeasuresCatalog,
) -> EnterpriseView:
    """The page's view of ``response``, the gateway's answer about enterprise ``code``
    (validated upper case). Departments and datasets are titled from ``catalog``; one the
    catalog does not know is shown by its id. The lists are ``measures``'s. Never raises."""
    sections: list[SectionView] = []
    nothing_public: list[str] = []
    name = ""
    found = False
    incomplete = False
    for section in response.sections:
        dept = catalog.departments.get(section.department)
        dept_name = dept.name if dept is not None else section.department
        status = SECTION_TEXT.get(section.status, "状态未知")
        if section.status == query_pb2.SECTION_STATUS_WITHHELD:
            nothing_public.append(dept_name)
            continue
        if section.status in _FAILED:
            incomplete = True
            sections.append(SectionView(dept_name, status, "failed"))
            continue
        if section.status == query_pb2.SECTION_STATUS_NOT_FOUND:
            sections.append(SectionView(dept_name, status, "not_found"))
            continue
        datasets = tuple(_dataset_view(section.department, d, catalog) for d in section.datasets)
        found = found or any(d.rows for d in datasets)
        if section.department == "market" and not name:
            name = _registered_name(section)
        sections.append(SectionView(dept_name, status, "ok", datasets))
    receipt = response.receipt
    return EnterpriseView(
        code=code,
        name=name,
        query_date=response.query_date,
        lists=list_statuses(response, measures),
        sections=sections,
        nothing_public=tuple(nothing_public),
        found=found,
        incomplete=incomplete,
        audit_index=receipt.log_index if receipt.leaf_hash else None,
    )


def _registered_name(section: query_pb2.DepartmentSection) -> str:
    for result in section.datasets:
        if result.dataset == "registration":
            for record in result.records:
                value = record.fields.get("name")
                if value is not None and value.WhichOneof("kind") == "text":
                    return value.text
    return ""
