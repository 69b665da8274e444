"""Reading the reward and punishment lists from what a department returned: which entries
are in force on a day, and the :class:`ListStatus` a screen answers for a list.

    entries = current_entries(list_def, records, "2026-11-01")
    status = list_status(list_def, entries, measures, "government_procurement")

An entry is in force from its ``since_field`` date (inclusive) until the earliest of its
``until_field`` date, ``since`` plus the list's ``valid_days`` and the record's
``event_end_date`` (exclusive: on that day it is off the list). An entry whose credit
repair was approved never reaches these functions: after repair, publication and sharing
stop and the measures are lifted (NDRC credit repair measures, 2026), and the objection
desk's marks drop such records before the lists are read (the screener and the query path
apply them, :class:`~gateway.pipeline.query.RecordMarker`). Only the list's public fields
are read; nothing else of a record reaches the answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.screening.measures import ListDef, MeasuresCatalog
from protos.credit.v1 import common_pb2, screening_pb2

__all__ = ["KIND", "current_entries", "list_status"]

#: ``ListDef.kind`` -> the wire enum.
KIND = {"black": screening_pb2.LIST_KIND_BLACK, "red": screening_pb2.LIST_KIND_RED}


@dataclass(frozen=True, slots=True)
class _Entry:
    since: str
    until: str
    authority: str
    basis: str
    disputed: bool


def _date(record: common_pb2.Record, name: str) -> str:
    if not name or name not in record.fields:
        return ""
    value = record.fields[name]
    kind = value.WhichOneof("kind")
    return str(value.date) if kind == "date" else ""


def _text(record: common_pb2.Record, name: str) -> str:
    if not name or name not in record.fields:
        return ""
    value = record.fields[name]
    return str(value.text) if value.WhichOneof("kind") == "text" else ""


def _plus_days(day: str, days: int) -> str:
    try:
        return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()
    except ValueError:
        return ""


def current_entries(
    lst: ListDef,
    records: Iterable[common_pb2.Record],
    today: str,
) -> list[_Entry]:
    """The entries of ``lst`` among a department's ``records`` (repaired ones already
    dropped by the objection marks) that are in force on ``today`` (YYYY-MM-DD): listed on
    or before it, not yet removed, expired or ended. An entry ends at the earliest of its
    ``until_field``, ``since`` plus ``valid_days`` and the record's ``event_end_date``; on
    that day it is off the list."""
    out: list[_Entry] = []
    for r in records:
        since = _date(r, lst.since_field)
        if not since or since > today:
            continue
        ends = [_date(r, lst.until_field), r.event_end_date]
        if lst.valid_days:
            ends.append(_plus_days(since, lst.valid_days))
        until = min((e for e in ends if e), default="")
        if until and until <= today:
            continue
        out.append(
            _Entry(
                since=since,
                until=until,
                authority=_text(r, lst.authority_field) or lst.keeper,
                basis=_text(r, lst.basis_field) or lst.basis,
                disputed=bool(r.disputed),
            )
        )
    return out


def list_status(
    lst: ListDef, entries: list[_Entry], measures: MeasuresCatalog, scenario: str
) -> screening_pb2.ListStatus:
    """The :class:`ListStatus` of ``lst`` answered with ``entries`` in force: on the list
    since the earliest entry (its authority and basis), with the scenario's measures."""
    status = screening_pb2.ListStatus(
        list=lst.id,
        title=lst.title,
        kind=KIND[lst.kind],
        department=lst.department,
        state=screening_pb2.LIST_STATE_NOT_ON_LIST,
    )
    if not entries:
        return status
    first = min(entries, key=lambda e: e.since)
    status.state = screening_pb2.LIST_STATE_ON_LIST
    status.since = first.since
    status.until = (
        max((e.until for e in entries), default="") if all(e.until for e in entries) else ""
    )
    status.listing_authority = first.authority
    status.basis_document = first.basis
    status.disputed = any(e.disputed for e in entries)
    for m in measures.measures(lst.id, scenario):
        status.measures.add(id=m.id, text=m.text, legal_source=m.legal_source, binding=m.binding)
    return status
