"""Art. 16 ageing at the day boundary, and dropping of unrequested fields."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline.disclosure import aged_out, ageing_cutoff, filter_records
from protos.credit.v1 import common_pb2


def _anniversary(end: dt.date) -> dt.date:
    try:
        return end.replace(year=end.year + 5)
    except ValueError:  # 29 February: the earlier day, in the subject's favour
        return end.replace(year=end.year + 5, day=28)


def _rec(end: str = "", **fields: str) -> common_pb2.Record:
    r = common_pb2.Record(event_end_date=end)
    for k, v in fields.items():
        r.fields[k].text = v
    return r


def test_boundary_day() -> None:
    today = dt.date(2026, 11, 27)
    cutoff = ageing_cutoff(today)
    assert aged_out(_rec("2021-11-27"), cutoff)  # exactly five years: gone
    assert not aged_out(_rec("2021-11-28"), cutoff)  # one day less: still shown
    assert not aged_out(_rec(""), cutoff)  # ongoing events never age out


@given(
    st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2030, 12, 31)),
    st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2040, 12, 31)),
)
def test_cutoff_agrees_with_the_anniversary_rule(end: dt.date, today: dt.date) -> None:
    assert aged_out(_rec(end.isoformat()), ageing_cutoff(today)) == (today >= _anniversary(end))


def test_filter_drops_unasked_fields_and_counts_them() -> None:
    records = [_rec(name="a", secret="x"), _rec("2010-01-01", name="b")]
    kept, dropped, aged = filter_records(
        records, frozenset({"name"}), negative=True, cutoff="2020-01-01"
    )
    assert [dict(r.fields) for r in kept] == [{"name": common_pb2.FieldValue(text="a")}]
    assert (dropped, aged) == (1, 1)


def test_positive_records_never_age_out() -> None:
    kept, _, aged = filter_records(
        [_rec("2000-01-01", name="a")], frozenset({"name"}), negative=False, cutoff="2020-01-01"
    )
    assert len(kept) == 1 and aged == 0
