# ruff: noqa: E501  (tables of cases read best one per line)
"""The measures catalog, the list reading rule, screening prices and the statistics."""

from __future__ import annotations

import datetime as dt
import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.billing.prices import load_prices, parse_prices
from gateway.domain.catalog import load_catalog
from gateway.domain.files import policies_path
from gateway.errors import ConfigError
from gateway.screening.lists import current_entries, list_status
from gateway.screening.measures import load_measures, parse_measures
from gateway.screening.screener import screen_digest
from gateway.screening.stats import tally
from protos.credit.v1 import common_pb2, screening_pb2

CATALOG = load_catalog()
MEASURES = load_measures(catalog=CATALOG)


def _doc() -> dict[str, Any]:
    return tomllib.loads(policies_path("measures.toml").read_text(encoding="utf-8"))


def test_the_shipped_catalog_loads_and_relevance_follows_the_measures() -> None:
    assert [x.id for x in MEASURES.relevant("government_procurement", "enterprise")] == [
        "dishonest_debtors",
        "major_tax_violations",
        "abnormal_operations",
        "wage_arrears",
    ]
    # A person is never on the A-taxpayer list; the household list holds only persons.
    person = [x.id for x in MEASURES.relevant("lending", "person")]
    assert "tax_a_list" not in person and "credit_household" in person
    assert "credit_household" not in [x.id for x in MEASURES.relevant("lending", "enterprise")]
    assert MEASURES.measure("dishonest_debtors", "dd-gp-exclude") is not None
    assert MEASURES.measure("dishonest_debtors", "ab-gp-factor") is None


def test_every_measure_names_its_legal_source() -> None:
    for measures in MEASURES.by_pair.values():
        for m in measures:
            assert m.legal_source and m.text and m.id


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["lists"]["dishonest_debtors"].update(dataset="nope"), "lists.dishonest_debtors.dataset"),
        # A screen reveals only public-tier facts.
        (lambda d: d["lists"]["wage_arrears"].update(dataset="social_security_arrears", since_field="arrears_since"), "lists.wage_arrears.since_field"),
        (lambda d: d["lists"]["dishonest_debtors"].update(kind="grey"), "lists.dishonest_debtors.kind"),
        (lambda d: d["measures"]["dishonest_debtors"].update(space=[]), "measures.dishonest_debtors.space"),
        (lambda d: d["measures"]["dishonest_debtors"]["honours"][0].pop("binding"), "measures.dishonest_debtors.honours[0].binding"),
        (lambda d: d["measures"]["tax_a_list"]["honours"][0].update(id="dd-gp-exclude"), "measures.tax_a_list.honours[0].id"),
    ],
)  # fmt: skip
def test_a_bad_catalog_is_refused_naming_the_key(change: Any, key: str) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(ConfigError) as err:
        parse_measures(doc, catalog=CATALOG)
    assert err.value.key == key


def _record(
    fields: dict[str, str], *, end: str = "", disputed: bool = False, rid: str = "1"
) -> common_pb2.Record:
    r = common_pb2.Record(record_id=rid, event_end_date=end, disputed=disputed)
    for name, value in fields.items():
        if name.endswith(("_on", "_until")):
            r.fields[name].date = value
        else:
            r.fields[name].text = value
    return r


DD = MEASURES.lists["dishonest_debtors"]
TAX = MEASURES.lists["major_tax_violations"]


def test_removed_expired_and_future_entries_are_off_the_list() -> None:
    today = "2026-11-01"
    live = _record(
        {
            "published_on": "2025-01-01",
            "court": "厦门市思明区人民法院",
            "basis_document": "（2024）闽0203民初1号",
        }
    )
    removed = _record({"published_on": "2024-01-01", "removed_on": "2026-11-01"})
    future = _record({"published_on": "2026-11-02"})
    assert len(current_entries(DD, [live, removed, future], today)) == 1
    # A repair approved takes an entry off the list before it gets here: the objection
    # desk's marks drop it (tests/integration/test_objections.py, an approved repair).
    # Major tax violations last three years from the decision (valid_days).
    old = _record({"decided_on": "2023-10-31"})
    recent = _record({"decided_on": "2023-11-05"})
    assert len(current_entries(TAX, [old], today)) == 0
    assert len(current_entries(TAX, [recent], today)) == 1
    status = list_status(DD, current_entries(DD, [live], today), MEASURES, "government_procurement")
    assert status.state == screening_pb2.LIST_STATE_ON_LIST
    assert (status.since, status.listing_authority, status.basis_document) == (
        "2025-01-01", "厦门市思明区人民法院", "（2024）闽0203民初1号",
    )  # fmt: skip
    assert [m.id for m in status.measures] == ["dd-gp-exclude"]


@given(
    since=st.dates(dt.date(2015, 1, 1), dt.date(2030, 1, 1)),
    removed=st.one_of(st.none(), st.dates(dt.date(2015, 1, 1), dt.date(2030, 1, 1))),
    today=st.dates(dt.date(2015, 1, 1), dt.date(2030, 1, 1)),
)
def test_on_the_list_exactly_between_listing_and_removal(
    since: dt.date, removed: dt.date | None, today: dt.date
) -> None:
    fields = {"published_on": since.isoformat()}
    if removed is not None:
        fields["removed_on"] = removed.isoformat()
    on = bool(current_entries(DD, [_record(fields)], today.isoformat()))
    assert on == (since <= today and (removed is None or today < removed))


def test_screening_prices_are_checked_cheaper_than_queries() -> None:
    prices = load_prices()
    prices.check_catalog(CATALOG)
    assert prices.screening is not None
    for key, fen in prices.screening.prices.items():
        assert fen < prices.prices[key]
    doc = tomllib.loads(policies_path("prices.toml").read_text(encoding="utf-8"))
    doc["screening"]["prices"]["court"]["dishonest_debtors"] = 200
    with pytest.raises(ConfigError) as err:
        parse_prices(doc).check_catalog(CATALOG)
    assert err.value.key == "screening.prices.court.dishonest_debtors"
    doc["screening"]["prices"]["court"]["dishonest_debtors"] = 2.5
    with pytest.raises(ConfigError) as err:
        parse_prices(doc)
    assert "float" in err.value.problem


def test_the_digest_leaves_the_receipt_out() -> None:
    r = screening_pb2.ScreenResponse(request_id="x", scenario="honours")
    before = screen_digest(r)
    r.receipt.log_index = 7
    assert screen_digest(r) == before and len(before) == 32


def test_stats_count_per_list_scenario_and_agency_within_the_beijing_period() -> None:
    def screen(
        time: str, agency: str, lists: dict[str, str] | None, outcome: str = "ok"
    ) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "kind": "screening",
            "time": time,
            "agency_id": agency,
            "scenario": "government_procurement",
            "outcome": outcome,
        }
        if lists is not None:
            rec["lists"] = lists
        return rec

    records = [
        screen("2026-11-01T10:00:00.000Z", "procurement", {"dishonest_debtors": "on_list", "wage_arrears": "unknown"}, "partial"),
        screen("2026-11-01T10:00:01.000Z", "procurement", {"dishonest_debtors": "not_on_list"}),
        # 2026-10-31T17:00Z is 2026-11-01 01:00 in Beijing: inside.
        screen("2026-10-31T17:00:00.000Z", "ndrc", {"dishonest_debtors": "not_on_list"}),
        # 2026-10-31T15:00Z is 23:00 on the 31st in Beijing: outside.
        screen("2026-10-31T15:00:00.000Z", "ndrc", {"dishonest_debtors": "on_list"}),
        screen("2026-11-01T11:00:00.000Z", "procurement", None, "invalid_identifier"),
        {"kind": "screening_feedback", "time": "2026-11-01T12:00:00.000Z", "agency_id": "procurement", "list": "dishonest_debtors", "measure": "dd-gp-exclude", "applied": True, "outcome": "ok"},
        {"kind": "query", "time": "2026-11-01T12:00:00.000Z", "agency_id": "procurement"},
    ]  # fmt: skip
    stats = tally(records, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30))
    doc = stats.to_json()
    assert doc["screens"] == 3 and doc["refused"] == 1
    assert doc["lists"]["dishonest_debtors"] == {"on_list": 1, "not_on_list": 2}
    assert doc["lists"]["wage_arrears"] == {"unknown": 1}
    assert doc["agencies"]["procurement"] == {
        "screens": 2,
        "hits": 1,
        "refused": 1,
        "feedback": 1,
        "applied": 1,
    }
    assert doc["agencies"]["ndrc"] == {"screens": 1}
    assert doc["scenarios"]["government_procurement"] == {"screens": 3, "hits": 1}
    assert doc["feedback"] == [
        {"list": "dishonest_debtors", "measure": "dd-gp-exclude", "applied": 1}
    ]
