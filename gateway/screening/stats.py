"""Screening statistics for the coordinating office (社会信用体系建设牵头部门): counts per
list, scenario and agency for a period, read from the signed audit log.

    stats = screening_stats("audit.sqlite", "log.vkey", start=date(2026, 11, 1),
                            end=date(2026, 11, 30))
    stats.per_list["dishonest_debtors"]["on_list"]      # screens that found a subject on it

Why the audit log and no store of its own: every screen and every feedback report is
already a signed ``screening`` / ``screening_feedback`` record there, so the counts are
evidence an auditor can recompute from the same log, and there is no second store that
could disagree with it or be written without a record. The cost is one scan of the log
per report (the records verified on the way), which suits a periodic report. Only records
a signed checkpoint covers are counted; later ones are reported as ``unsigned``.

Dates are local dates of ``tz`` (Beijing by default), both ends included.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from gateway.audit.note import load_verifiers
from gateway.audit.schema import MeasureFeedbackRecord, ScreeningRecord
from gateway.audit.store import open_reader
from gateway.audit.verify import verify_log

__all__ = ["ScreeningStats", "screening_stats", "tally"]

BEIJING = ZoneInfo("Asia/Shanghai")


@dataclass
class ScreeningStats:
    """What :func:`tally` counted. Screens are subjects screened (a batch of 1,000 counts
    1,000); ``refused`` screens disclosed nothing and count in no list."""

    start: dt.date
    end: dt.date
    screens: int = 0
    refused: int = 0
    #: list id -> state name (on_list, not_on_list, unknown, withheld) -> screens.
    per_list: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    #: scenario -> {"screens", "hits" (screens that found the subject on some list)}.
    per_scenario: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    #: agency id -> {"screens", "hits", "refused", "feedback", "applied"}.
    per_agency: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    #: (list, measure) -> {"applied", "not_applied"}.
    feedback: dict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    #: Records after the last signed checkpoint: not counted.
    unsigned: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (integers and strings only)."""
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "screens": self.screens,
            "refused": self.refused,
            "lists": {k: dict(v) for k, v in sorted(self.per_list.items())},
            "scenarios": {k: dict(v) for k, v in sorted(self.per_scenario.items())},
            "agencies": {k: dict(v) for k, v in sorted(self.per_agency.items())},
            "feedback": [
                {"list": lst, "measure": m, **dict(c)}
                for (lst, m), c in sorted(self.feedback.items())
            ],
            "unsigned": self.unsigned,
        }


def _local_day(time: str, tz: ZoneInfo) -> dt.date | None:
    try:
        when = dt.datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(tz).date()


def tally(
    records: Iterable[Mapping[str, Any]],
    *,
    start: dt.date,
    end: dt.date,
    tz: ZoneInfo = BEIJING,
) -> ScreeningStats:
    """Count the ``screening`` and ``screening_feedback`` records among ``records`` whose
    local day (``tz``) is within ``start``..``end``."""
    stats = ScreeningStats(start, end)
    for record in records:
        kind = record.get("kind")
        if kind not in (ScreeningRecord.KIND, MeasureFeedbackRecord.KIND):
            continue
        day = _local_day(str(record.get("time", "")), tz)
        if day is None or not start <= day <= end:
            continue
        if kind == MeasureFeedbackRecord.KIND:
            fb = MeasureFeedbackRecord.from_json(record)
            if fb.outcome != "ok":
                continue
            what = "applied" if fb.applied else "not_applied"
            stats.feedback[(fb.list, fb.measure)][what] += 1
            stats.per_agency[fb.agency_id]["feedback"] += 1
            if fb.applied:
                stats.per_agency[fb.agency_id]["applied"] += 1
            continue
        screen = ScreeningRecord.from_json(record)
        agency = stats.per_agency[screen.agency_id or "unauthenticated"]
        if screen.outcome not in ("ok", "partial") or screen.lists is None:
            stats.refused += 1
            agency["refused"] += 1
            continue
        stats.screens += 1
        agency["screens"] += 1
        scenario = stats.per_scenario[screen.scenario]
        scenario["screens"] += 1
        hit = False
        for list_id, state in screen.lists.items():
            stats.per_list[list_id][state] += 1
            hit = hit or state == "on_list"
        if hit:
            agency["hits"] += 1
            scenario["hits"] += 1
    return stats


def screening_stats(
    log: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    start: dt.date,
    end: dt.date,
    tz: ZoneInfo = BEIJING,
) -> ScreeningStats:
    """Verify the log at ``log`` (a SQLite file or an export folder) with the verifier
    key file ``key`` and :func:`tally` the records its signed checkpoints cover.

    Raises LogIntegrityError (the log fails verification), StorageError (unreadable),
    KeyFormatError (a bad key file).
    """
    reader = open_reader(log)
    collected: list[tuple[int, dict[str, Any]]] = []

    def keep(index: int, record: dict[str, Any]) -> None:
        if record.get("kind") in (ScreeningRecord.KIND, MeasureFeedbackRecord.KIND):
            collected.append((index, record))

    try:
        report = verify_log(
            reader, load_verifiers(key), allow_empty=True, allow_unsigned_tail=True, on_record=keep
        )
    finally:
        reader.close()
    signed = [r for i, r in collected if i < report.verified_size]
    stats = tally(signed, start=start, end=end, tz=tz)
    stats.unsigned = report.unsigned
    return stats
