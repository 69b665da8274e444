"""Inputs an outside tester sent to finance's tools: dates at the ends of the
calendar and an identity number typed as an account id. Each gets a clean
refusal naming the field, never INTERNAL, a traceback or the text itself."""

from __future__ import annotations

import io
from datetime import UTC, date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.api.billing import period_bounds
from gateway.cli.billing import billing_main
from gateway.errors import InvalidArgumentError, NotFoundError
from gateway.stores.sqlite.ledger import SQLiteLedger

BEIJING = ZoneInfo("Asia/Shanghai")
ISSUE_ID = "11010519491231002X"


@pytest.mark.parametrize(
    ("first", "last", "field"),
    [
        (date(1, 1, 1), date(2026, 1, 1), "from_date"),  # before year 1 in UTC
        (date(2026, 1, 1), date(9999, 12, 31), "to_date"),  # its next day is past 9999
    ],
)
def test_dates_at_the_ends_of_the_calendar_are_invalid_arguments(
    first: date, last: date, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        period_bounds(first, last, BEIJING)
    assert exc.value.field == field and "out of range" in exc.value.problem


def test_the_widest_period_that_fits_is_served() -> None:
    start, end = period_bounds(date(1, 1, 2), date(9999, 12, 30), BEIJING)
    assert start.tzinfo is UTC and start < end


def _ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    SQLiteLedger(path).close()
    return path


def test_the_billing_cli_refuses_year_one_without_a_traceback(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["statement", "bank", "--from", "0001-01-01", "--to", "2026-01-01"]
    code = billing_main([*argv, "--ledger", str(_ledger(tmp_path))], out=out, err=err)
    assert code == 2
    assert err.getvalue().startswith("error: from_date: out of range")
    assert "Traceback" not in err.getvalue() + out.getvalue()


def test_an_unknown_account_is_not_echoed_when_it_holds_an_identifier(tmp_path: Path) -> None:
    ledger = SQLiteLedger(_ledger(tmp_path))
    try:
        start, end = period_bounds(date(2026, 1, 1), date(2026, 1, 31), BEIJING)
        with pytest.raises(NotFoundError) as exc:
            ledger.statement(ISSUE_ID, start, end)
        assert ISSUE_ID not in exc.value.message and "no account" in exc.value.message
        with pytest.raises(NotFoundError) as exc:
            ledger.statement("nobody", start, end)
        assert exc.value.message == "no account 'nobody'"  # plain text is still named
    finally:
        ledger.close()
