"""An answer of the gateway as the page shows it: values, list states, sections."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.catalog import Catalog
from gateway.portal.lists import ListKind, ListState, list_statuses
from gateway.portal.view import enterprise_view, format_value
from gateway.screening.measures import MeasuresCatalog
from protos.credit.v1 import common_pb2, query_pb2
from tests.unit.portal.fakes import CODE, answer, date, full_answer, section, text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (common_pb2.FieldValue(money_fen=0), "0.00 元"),
        (common_pb2.FieldValue(money_fen=5), "0.05 元"),
        (common_pb2.FieldValue(money_fen=123456789), "1,234,567.89 元"),
        (common_pb2.FieldValue(money_fen=-150), "-1.50 元"),
        (common_pb2.FieldValue(boolean=True), "是"),
        (common_pb2.FieldValue(boolean=False), "否"),
        (common_pb2.FieldValue(date="2026-11-30"), "2026-11-30"),
        (common_pb2.FieldValue(integer=42), "42"),
        (common_pb2.FieldValue(text=""), "-"),
        (common_pb2.FieldValue(), "-"),
    ],
)
def test_values(value: common_pb2.FieldValue, shown: str) -> None:
    assert format_value(value) == shown


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_money_is_exact_for_every_amount(fen: int) -> None:
    shown = format_value(common_pb2.FieldValue(money_fen=fen)).removesuffix(" 元")
    assert int(shown.replace(",", "").replace(".", "")) == fen


def _states(
    response: query_pb2.QueryResponse, measures: MeasuresCatalog
) -> dict[str, tuple[str, str]]:
    return {s.title: (s.state.value, s.date) for s in list_statuses(response, measures)}


def test_list_states_from_the_records(measures: MeasuresCatalog) -> None:
    response = answer(
        section(
            "court",
            dishonest_debtors=[
                {"published_on": date("2024-01-02"), "removed_on": date("2025-01-01")},
                {"published_on": date("2025-03-04")},
            ],
        ),
        section(
            "market",
            abnormal_operations=[
                {"listed_on": date("2020-01-01"), "removed_on": date("2021-05-06")},
                {"listed_on": date("2022-01-01"), "removed_on": date("2023-07-08")},
            ],
        ),
        section(
            "hrss",
            wage_arrears_blacklist=[
                {"listed_on": date("2026-01-01"), "removed_on": date("2026-12-31")}
            ],
        ),
        section("tax", query_pb2.SECTION_STATUS_UNAVAILABLE),
        day="2026-11-30",
    )
    states = _states(response, measures)
    assert states["失信被执行人名单"] == ("on", "2025-03-04")
    assert states["经营异常名录"] == ("removed", "2023-07-08")
    # Removed on a date still to come: on the list today.
    assert states["拖欠农民工工资失信联合惩戒对象名单"] == ("on", "2026-01-01")
    assert states["重大税收违法失信主体"] == ("unknown", "")
    assert states["纳税信用A级纳税人名单"] == ("unknown", "")


def test_not_found_is_off_and_an_undisclosed_dataset_is_unknown(
    measures: MeasuresCatalog,
) -> None:
    response = answer(
        section("court", query_pb2.SECTION_STATUS_NOT_FOUND), section("tax", a_list=[])
    )
    states = _states(response, measures)
    assert states["失信被执行人名单"] == ("off", "")
    assert states["纳税信用A级纳税人名单"] == ("off", "")
    assert states["重大税收违法失信主体"] == ("unknown", "")  # tax answered, dataset absent
    assert states["经营异常名录"] == ("unknown", "")  # market not in the answer at all


def test_the_red_list_is_marked_red_and_only_enterprise_lists_are_shown(
    measures: MeasuresCatalog,
) -> None:
    shown = list_statuses(answer(), measures)
    kinds = {s.title: s.kind for s in shown}
    assert "信用户（信用村）" not in kinds  # households are persons
    assert [s.kind for s in shown] == sorted((s.kind for s in shown), key=lambda k: k != "black")
    assert kinds["纳税信用A级纳税人名单"] is ListKind.RED
    assert kinds["失信被执行人名单"] is ListKind.BLACK


def test_the_view_of_a_whole_answer(catalog: Catalog, measures: MeasuresCatalog) -> None:
    view = enterprise_view(CODE, full_answer(), catalog, measures)
    assert view.name == "厦门示例科技有限公司"
    assert view.found and not view.incomplete
    assert view.audit_index == 41
    assert view.nothing_public == ("中国人民银行征信中心",)
    market = view.sections[0]
    assert market.department == "市场监督管理局" and market.state == "ok"
    registration, penalties, abnormal = market.datasets
    assert registration.columns == ("企业名称", "注册资本")  # catalog order, present fields only
    assert penalties.rows[0].disputed and penalties.aged_out == 2
    assert abnormal.rows == ()
    assert [s.state for s in view.sections] == ["ok", "ok", "not_found", "ok"]
    on = [s for s in view.lists if s.state is ListState.ON]
    assert [s.title for s in on] == ["失信被执行人名单"]


def test_unknown_departments_and_fields_are_shown_by_id(
    catalog: Catalog, measures: MeasuresCatalog
) -> None:
    response = answer(section("mystery", things=[{"odd": text("v")}]))
    view = enterprise_view(CODE, response, catalog, measures)
    assert view.sections[0].department == "mystery"
    assert view.sections[0].datasets[0].title == "things"
    assert view.sections[0].datasets[0].columns == ("odd",)


def test_an_entry_past_its_term_is_no_longer_on_the_list(measures: MeasuresCatalog) -> None:
    # The major tax violation list lasts three years from the decision (measures.toml).
    old = answer(section("tax", major_violations=[{"decided_on": date("2022-01-10")}]))
    new = answer(section("tax", major_violations=[{"decided_on": date("2025-01-10")}]))
    assert _states(old, measures)["重大税收违法失信主体"][0] == "removed"
    assert _states(new, measures)["重大税收违法失信主体"] == ("on", "2025-01-10")


def test_an_entry_whose_event_ended_is_removed(measures: MeasuresCatalog) -> None:
    response = answer(section("court", dishonest_debtors=[{"published_on": date("2024-01-02")}]))
    response.sections[0].datasets[0].records[0].event_end_date = "2025-02-03"
    assert _states(response, measures)["失信被执行人名单"] == ("removed", "2025-02-03")
