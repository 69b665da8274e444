"""List status (红黑名单) on the public page, read from the public-tier records of the datasets
that are lists.

Which datasets are lists, their keepers and how long an entry lasts are the measures
catalog's (``policies/measures.toml``, :mod:`gateway.screening.measures`), and whether an
entry is in force on the query's date is decided by the very rule screening applies
(:func:`gateway.screening.lists.current_entries`: listed on or before the day, not yet
removed, not past its term, its event not ended), so the page and a screen never disagree.
Only the lists that hold enterprises are shown; the page shows no measures (they are for
deciding agencies, not the public). :func:`list_statuses` reads one answer of the gateway::

    on      an entry in force (在列), since the earliest one's date
    removed records, none in force: removed, expired or ended (已移出), the latest end date
    off     the department answered and holds no record (未列入)
    unknown the department did not answer, or the dataset was not disclosed (暂无法确认)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.screening.lists import current_entries
from gateway.screening.measures import ListDef, MeasuresCatalog
from protos.credit.v1 import common_pb2, query_pb2

__all__ = ["ListKind", "ListState", "ListStatus", "list_statuses"]


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
class ListStatus:
    """One list's line on the page."""

    title: str
    keeper: str
    kind: ListKind
    state: ListState
    #: YYYY-MM-DD: since when on it (ON) or when the last entry ended (REMOVED); "" otherwise.
    date: str = ""


_ANSWERED: Final = frozenset({query_pb2.SECTION_STATUS_OK, query_pb2.SECTION_STATUS_NOT_FOUND})


def _date(record: common_pb2.Record, name: str) -> str:
    value = record.fields.get(name) if name else None
    return value.date if value is not None and value.WhichOneof("kind") == "date" else ""


def _status(
    lst: ListDef, sections: Mapping[str, query_pb2.DepartmentSection], today: str
) -> tuple[ListState, str]:
    section = sections.get(lst.department)
    if section is None or section.status not in _ANSWERED:
        return ListState.UNKNOWN, ""
    if section.status == query_pb2.SECTION_STATUS_NOT_FOUND:
        return ListState.OFF, ""
    result = next((d for d in section.datasets if d.dataset == lst.dataset), None)
    if result is None:
        return ListState.UNKNOWN, ""  # not disclosed: the page cannot say either way
    entries = current_entries(lst, result.records, today)
    if entries:
        return ListState.ON, min(e.since for e in entries)
    if result.records:
        ended = [_date(r, lst.until_field) or r.event_end_date for r in result.records]
        return ListState.REMOVED, max((e for e in ended if e), default="")
    return ListState.OFF, ""


def list_statuses(
    response: query_pb2.QueryResponse, measures: MeasuresCatalog
) -> Sequence[ListStatus]:
    """Every enterprise list of ``measures``, black lists first, each with the subject's
    state in ``response``, whose ``query_date`` (YYYY-MM-DD, Beijing) is the day an entry
    must be in force on. Never raises."""
    sections = {s.department: s for s in response.sections}
    lists = [lst for lst in measures.lists.values() if "enterprise" in lst.subject_types]
    lists.sort(key=lambda lst: lst.kind != ListKind.BLACK)  # stable: file order kept
    out: list[ListStatus] = []
    for lst in lists:
        state, date = _status(lst, sections, response.query_date)
        out.append(ListStatus(lst.title, lst.keeper, ListKind(lst.kind), state, date))
    return out
