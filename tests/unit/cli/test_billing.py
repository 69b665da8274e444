"""``credit-gateway billing``: offline balance, top-up, statement (CSV), credit limit, check."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.billing.ledger import PricedLine, ReserveSpec
from gateway.cli.billing import CSV_COLUMNS, billing_main
from gateway.stores.sqlite.ledger import SQLiteLedger


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = billing_main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    SQLiteLedger(path).close()
    return path


def test_top_up_balance_and_idempotent_retry(db: Path) -> None:
    code, out, _ = run(
        "--ledger", str(db), "top-up", "bank", "50000", "--reference", "TX-1", "--create"
    )
    assert code == 0 and "booked" in out and "balance ¥500.00" in out
    code, out, _ = run("--ledger", str(db), "top-up", "bank", "50000", "--reference", "TX-1")
    assert code == 0 and "already booked" in out
    code, out, _ = run("--ledger", str(db), "balance", "bank")
    assert code == 0 and "balance ¥500.00" in out


def test_decimal_amount_is_refused(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run("--ledger", str(db), "top-up", "bank", "12.50", "--reference", "TX-1")
    assert code == 2
    assert "integer fen" in capsys.readouterr().err


def test_unknown_account_and_missing_file(tmp_path: Path, db: Path) -> None:
    code, _, err = run("--ledger", str(db), "top-up", "bank", "5", "--reference", "TX-1")
    assert code == 2 and "no account" in err
    code, _, err = run("--ledger", str(db), "balance", "bank")
    assert code == 2 and "no account" in err
    code, _, err = run("--ledger", str(tmp_path / "typo.db"), "balance")
    assert code == 2 and "no such ledger" in err
    assert not (tmp_path / "typo.db").exists()


def test_statement_csv(db: Path) -> None:
    ledger = SQLiteLedger(db)
    try:
        # 2026-11-05 02:00 UTC is 10:00 in Shanghai; 2026-11-30 17:00 UTC is 1 December there.
        ledger.top_up("bank", 10_000, "TX-1", datetime(2026, 11, 5, 2, tzinfo=UTC), create=True)
        ledger.reserve(
            ReserveSpec(
                request_id="r1",
                account_id="bank",
                basis="paid",
                lines=(
                    PricedLine("tax", "arrears", 300),
                    PricedLine("court", "dishonest_debtors", 200),
                ),
                digest="d",
                at=datetime(2026, 11, 6, 3, tzinfo=UTC),
            )
        )
        ledger.settle("r1", frozenset({("tax", "arrears")}), datetime(2026, 11, 6, 3, tzinfo=UTC))
        ledger.top_up("bank", 1, "TX-late", datetime(2026, 11, 30, 17, tzinfo=UTC))
    finally:
        ledger.close()

    code, out, _ = run(
        "--ledger",
        str(db),
        "statement",
        "bank",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--csv",
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [(r["kind"], r["amount_fen"], r["balance_fen"]) for r in rows] == [
        ("top_up", "10000", "10000"),
        ("reserve", "300", "10000"),
        ("reserve", "200", "10000"),
        ("charge", "300", "9700"),
        ("release", "200", "9700"),
    ]
    assert rows[3]["balance_change_fen"] == "-300"
    assert rows[3]["request_id"] == "r1" and rows[3]["dataset"] == "arrears"

    code, out, _ = run(
        "--ledger", str(db), "statement", "bank", "--from", "2026-12-01", "--to", "2026-12-01"
    )
    assert code == 0
    assert "opening balance ¥97.00" in out and "TX-late" in out and "closing balance ¥97.01" in out

    code, _, err = run(
        "--ledger", str(db), "statement", "bank", "--from", "2026-12-01", "--to", "2026-11-01"
    )
    assert code == 2 and "before" in err


def test_credit_limit_and_check(db: Path) -> None:
    assert run("--ledger", str(db), "top-up", "bank", "100", "--reference", "T", "--create")[0] == 0
    code, out, _ = run("--ledger", str(db), "credit-limit", "bank", "500")
    assert code == 0 and "available ¥6.00" in out
    code, out, _ = run("--ledger", str(db), "check")
    assert code == 0 and "consistent" in out

    conn = sqlite3.connect(db)
    conn.execute("UPDATE accounts SET balance_fen = 1")
    conn.commit()
    conn.close()
    code, out, _ = run("--ledger", str(db), "check")
    assert code == 1 and "bank" in out


# --- --config: the gateway's own ledger, SQLite or PostgreSQL ------------------------------


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[gateway]\ninsecure_dev_plaintext = true\n[departments.tax]\naddress = "h:1"\n' + extra,
        encoding="utf-8",
    )
    return path


def test_config_names_the_sqlite_ledger(tmp_path: Path, db: Path) -> None:
    config = _config(tmp_path, f'[billing]\nledger = "{db}"\n')
    code, _, err = run(
        "--config", str(config), "top-up", "bank", "500", "--reference", "TX-1", "--create"
    )
    assert code == 0, err
    assert run("--ledger", str(db), "balance", "bank")[1].count("¥5.00") == 2


def test_config_uses_the_postgres_ledger(tmp_path: Path, pg_url: str) -> None:
    config = _config(tmp_path, f'[storage]\nurl = "{pg_url}"\n')
    code, out, err = run(
        "--config", str(config), "top-up", "bank", "500", "--reference", "TX-1", "--create"
    )
    assert code == 0 and "booked" in out, err
    code, out, _ = run("--config", str(config), "--json", "balance", "bank")
    assert code == 0 and '"balance_fen": 500' in out
    code, out, _ = run("--config", str(config), "check")
    assert code == 0 and "ledger consistent: 1 accounts" in out


def test_config_refuses_a_schema_that_is_behind(tmp_path: Path, pg_empty_url: str) -> None:
    config = _config(tmp_path, f'[storage]\nurl = "{pg_empty_url}"\n')
    code, _, err = run("--config", str(config), "balance")
    assert code == 2 and "credit-gateway db migrate" in err


def test_ledger_and_config_are_one_or_the_other(tmp_path: Path, db: Path) -> None:
    config = _config(tmp_path, f'[billing]\nledger = "{db}"\n')
    assert run("--ledger", str(db), "--config", str(config), "balance")[0] == 2
    code, _, err = run("balance")
    assert code == 2 and "--ledger FILE or --config" in err
