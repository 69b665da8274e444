"""List status (红黑名单) on the public page, read from the public-tier records of the datasets
that are lists.

A list is a dataset of the catalog (``policies/catalog.toml``) whose records say a subject is
on it: black lists bring joint punishment (失信惩戒), red lists incentives (守信激励). Which
datasets are lists is written down here, in :data:`LISTS`, because the catalog does not say
it; the title shown is the catalog's. See ``../shared/DOMAIN.md`` "Reward and punishment
lists" for their keepers and terms.

:func:`list_statuses` reads one answer of the gateway::

    on      a record without a removal date, or one removed in the future (在列)
    removed every record has a removal date on or before the query's date (已移出)
    off     the department answered and holds no record (未列入)
    unknown the department did not answer, or the dataset was not disclosed (暂无法确认)

The page shows the list's keeper and, when on a list, the date since when; never more
than the public records themselves say.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.domain.catalog import Catalog
from protos.credit.v1 import common_pb2, query_pb2

__all__ = ["LISTS", "ListDef", "ListKind", "ListState", "ListStatus", "list_statuses"]


class ListKind(enum.StrEnum):
    """Black lists punish (失信惩戒), red lists reward (守信激励)."""

    BLACK = "black"
    RED = "red"


class ListState(enum.StrEnum):
    """Where a subject stands on one list (see the module docstring)."""

    ON = "on"
    REMOVED = "removed"
    OFF = "off"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ListDef:
    """One list: the dataset that holds it, its kind, the fields that date it."""

    department: str
    dataset: str
    kind: ListKind
    #: The field holding the date the subject was put on the list.
    since_field: str
    #: The field holding the date it was taken off (empty: the list has none).
    removed_field: str = ""


#: The lists of the catalog, in the order the page shows them: black lists first.
LISTS: Final[Sequence[ListDef]] = (
    ListDef("court", "dishonest_debtors", ListKind.BLACK, "published_on", "removed_on"),
    ListDef("tax", "major_violations", ListKind.BLACK, "decided_on"),
    ListDef("market", "abnormal_operations", ListKind.BLACK, "listed_on", "removed_on"),
    ListDef("hrss", "wage_arrears_blacklist", ListKind.BLACK, "listed_on", "removed_on"),
    ListDef("tax", "a_list", ListKind.RED, "published_on"),
)


@dataclass(frozen=True, slots=True)
class ListStatus:
    """One list's line on the page."""

    title: str
    keeper: str
    kind: ListKind
    state: ListState
    #: YYYY-MM-DD: since when on it (ON) or when taken off (REMOVED); "" otherwise.
    date: str = ""


_ANSWERED: Final = frozenset({query_pb2.SECTION_STATUS_OK, query_pb2.SECTION_STATUS_NOT_FOUND})


def _date(record: common_pb2.Record, name: str) -> str:
    value = record.fields.get(name)
    return value.date if value is not None and value.WhichOneof("kind") == "date" else ""


def _status(
    spec: ListDef, sections: Mapping[str, query_pb2.DepartmentSection], today: str
) -> ListState | tuple[ListState, str]:
    section = sections.get(spec.department)
    if section is None or section.status not in _ANSWERED:
        return ListState.UNKNOWN
    if section.status == query_pb2.SECTION_STATUS_NOT_FOUND:
        return ListState.OFF
    result = next((d for d in section.datasets if d.dataset == spec.dataset), None)
    if result is None:
        return ListState.UNKNOWN  # not disclosed: the page cannot say either way
    current = [
        r
        for r in result.records
        if not spec.removed_field
        or not _date(r, spec.removed_field)
        or _date(r, spec.removed_field) > today
    ]
    if current:
        return ListState.ON, min((_date(r, spec.since_field) for r in current), default="")
    if result.records:
        return ListState.REMOVED, max(_date(r, spec.removed_field) for r in result.records)
    return ListState.OFF


def list_statuses(response: query_pb2.QueryResponse, catalog: Catalog) -> list[ListStatus]:
    """Every list of :data:`LISTS` the catalog has, with the subject's state on it in
    ``response``, whose ``query_date`` (YYYY-MM-DD, Beijing) decides whether a removal
    date has passed. Never raises."""
    sections = {s.department: s for s in response.sections}
    out: list[ListStatus] = []
    for spec in LISTS:
        dataset = catalog.dataset(spec.department, spec.dataset)
        department = catalog.departments.get(spec.department)
        if dataset is None or department is None:
            continue  # a catalog without this list: nothing to say about it
        found = _status(spec, sections, response.query_date)
        state, date = found if isinstance(found, tuple) else (found, "")
        out.append(ListStatus(dataset.title, department.name, spec.kind, state, date))
    return out
