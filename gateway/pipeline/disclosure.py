"""The last check before anything leaves: defence in depth on what departments
returned.

* a field the gateway did not ask for is dropped and counted (a department
  that over-shares is a finding, not a crash);
* negative records whose event ended five years or more before the query day
  are not returned (Art. 16);
* disputed records keep their ``disputed`` mark (Art. 25): it is part of the
  record and never stripped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from protos.credit.v1 import common_pb2

__all__ = ["aged_out", "ageing_cutoff", "filter_records"]

AGEING_YEARS = 5


def ageing_cutoff(today: dt.date) -> str:
    """The ISO date on or before which a negative event must have ended to be
    aged out today.

    A record whose event ended on day E is returned up to the day before
    E + 5 years and not from that anniversary on. For an end date of 29
    February the anniversary in a common year is 28 February: the earlier
    day, in favour of the subject.
    """
    try:
        cutoff = today.replace(year=today.year - AGEING_YEARS)
    except ValueError:  # today is 29 February; five years back has none
        cutoff = today.replace(year=today.year - AGEING_YEARS, day=28)
    if today.month == 2 and today.day == 28:
        # Today is the anniversary of a 29 February too (see docstring).
        leap_day = _leap_day(today.year - AGEING_YEARS)
        if leap_day is not None:
            return leap_day
    return cutoff.isoformat()


def _leap_day(year: int) -> str | None:
    try:
        return dt.date(year, 2, 29).isoformat()
    except ValueError:
        return None


def aged_out(record: common_pb2.Record, cutoff: str) -> bool:
    """Whether ``record`` ended on or before ``cutoff`` (ISO dates), so it may no longer be
    disclosed.
    """
    end = record.event_end_date
    # ISO dates compare correctly as strings; an ongoing event has no end date.
    return bool(end) and end <= cutoff


def filter_records(
    records: Iterable[common_pb2.Record],
    allowed_fields: frozenset[str],
    *,
    negative: bool,
    cutoff: str,
) -> tuple[list[common_pb2.Record], int, int]:
    """Return (records to disclose, fields dropped, records aged out).

    Records are edited in place: they came from the department for this query
    only and are not shared.
    """
    kept: list[common_pb2.Record] = []
    dropped = 0
    aged = 0
    allowed = allowed_fields
    for record in records:
        if negative and aged_out(record, cutoff):
            aged += 1
            continue
        fields = record.fields
        if len(fields) > len(allowed) or not allowed.issuperset(fields):
            for name in [n for n in fields if n not in allowed]:
                del fields[name]
                dropped += 1
        kept.append(record)
    return kept, dropped, aged
