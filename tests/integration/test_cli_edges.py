"""The console scripts' rough edges: options in the positions
the README shows, explicit flags over ``--demo``, no silent plaintext, a quiet closed pipe,
one money presentation, statement times in the zone that selects them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.log import AuditLog
from gateway.audit.note import Ed25519Signer, generate_key, write_key_files
from gateway.cli.billing import billing_main
from gateway.cli.console import EXIT_BROKEN_PIPE, yuan
from gateway.cli.console import field_text as _value
from gateway.cli.query import _connection, _parser
from gateway.cli.query import main as query_main
from gateway.stores.sqlite.ledger import SQLiteLedger
from protos.credit.v1 import common_pb2

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


# --- billing: options before or after the command; yuan for people, fen for machines ---


def _billing(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = billing_main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    book = SQLiteLedger(path, create=True)
    try:
        # 2026-11-30 17:00 UTC is 1 December, 01:00, in Beijing.
        book.top_up("bank", 123_450, "TX-1", datetime(2026, 11, 30, 17, tzinfo=UTC), create=True)
    finally:
        book.close()
    return path


def test_billing_ledger_before_or_after_the_command(ledger: Path) -> None:
    before = _billing("--ledger", str(ledger), "balance", "bank")
    after = _billing("balance", "bank", "--ledger", str(ledger))
    assert before == after
    assert before[0] == 0
    assert before[1] == (
        "bank: balance ¥1,234.50, held ¥0.00, credit limit ¥0.00, available ¥1,234.50\n"
    )
    code, _, err = _billing("balance", "bank")
    assert code == 2 and "--ledger" in err


def test_issue_input_billing_through_the_installed_script(ledger: Path) -> None:
    """``credit-gateway billing --ledger F balance bank`` exited 2, unrecognized arguments."""
    for argv in (
        ["billing", "--ledger", str(ledger), "balance", "bank"],
        ["--log-level", "WARNING", "billing", "balance", "bank", "--ledger", str(ledger)],
        ["billing", "--ledger", str(ledger), "balance", "bank", "--log-level=WARNING"],
    ):
        proc = subprocess.run(
            [str(BIN / "credit-gateway"), *argv], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, (argv, proc.stderr)
        assert proc.stdout.startswith("bank: balance ¥1,234.50"), argv


def test_billing_json_gives_fen(ledger: Path) -> None:
    code, out, _ = _billing("--ledger", str(ledger), "--json", "balance")
    assert code == 0
    assert json.loads(out) == {
        "accounts": [
            {
                "account": "bank",
                "balance_fen": 123_450,
                "held_fen": 0,
                "credit_limit_fen": 0,
                "available_fen": 123_450,
            }
        ]
    }


def test_statement_selects_and_prints_beijing_time(ledger: Path) -> None:
    # The entry is on 1 December in Beijing: November's statement has none, December's has it
    # at 01:00+08:00, not at 17:00 UTC of 30 November.
    base = ("--ledger", str(ledger), "statement", "bank")
    code, out, _ = _billing(*base, "--from", "2026-11-01", "--to", "2026-11-30")
    assert code == 0 and "TX-1" not in out
    code, out, _ = _billing(*base, "--from", "2026-12-01", "--to", "2026-12-01")
    assert code == 0
    head, opening, entry, closing = out.splitlines()
    assert (
        head
        == "bank: statement 2026-12-01 to 2026-12-01, dates and times in Asia/Shanghai, UTC+08:00"
    )
    assert opening == "bank: opening balance ¥0.00"
    assert " 2026-12-01T01:00:00+08:00 top_up " in entry and "¥1,234.50" in entry
    assert closing == "bank: closing balance ¥1,234.50"
    code, out, _ = _billing(*base, "--from", "2026-12-01", "--to", "2026-12-01", "--csv")
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["at"] == "2026-12-01T01:00:00+08:00" and row["amount_fen"] == "123450"
    code, out, _ = _billing(*base, "--from", "2026-12-01", "--to", "2026-12-01", "--json")
    statement = json.loads(out)
    assert statement["timezone"] == "Asia/Shanghai"
    assert statement["closing_balance_fen"] == 123_450
    assert statement["entries"][0]["at"] == "2026-12-01T01:00:00+08:00"


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_yuan_is_exact_and_reads_back(fen: int) -> None:
    text = yuan(fen)
    assert re.fullmatch(r"-?¥\d{1,3}(,\d{3})*\.\d\d", text)
    assert Decimal(text.replace("¥", "").replace(",", "")) * 100 == fen


def test_credit_query_prints_money_as_the_billing_cli_does() -> None:
    assert _value(common_pb2.FieldValue(money_fen=150_000)) == "¥1,500.00"
    assert _value(common_pb2.FieldValue(money_fen=5)) == "¥0.05"


# --- credit-query: explicit flags win over --demo; never a silent plaintext -------------


def _demo(tmp_path: Path, *, tls: bool = True) -> Path:
    files: dict[str, Any] = {"gateway_address": "127.0.0.1:1111"}
    if tls:
        for name in ("ca.pem", "bank.pem", "bank.key", "bank.jwt"):
            (tmp_path / name).write_text(f"demo {name}")
        files |= {
            "ca_cert": str(tmp_path / "ca.pem"),
            "agencies": {
                "bank": {
                    "cert": str(tmp_path / "bank.pem"),
                    "key": str(tmp_path / "bank.key"),
                    "token_file": str(tmp_path / "bank.jwt"),
                }
            },
        }
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps(files))
    return demo


QUERY = ["--person", "360426199101010071", "--purpose", "lending"]


def test_explicit_flags_win_over_demo(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    mine = tmp_path / "mine.pem"
    mine.write_text("my own CA")
    args = _parser().parse_args(
        ["--demo", str(demo), "--agency", "bank", "--gateway", "10.0.0.7:443",
         "--ca", str(mine), *QUERY]
    )  # fmt: skip
    conn = _connection(args)
    assert conn["address"] == "10.0.0.7:443"
    assert conn["ca"] == b"my own CA"
    assert conn["cert"] == b"demo bank.pem" and conn["token"] == "demo bank.jwt"
    only_demo = _connection(_parser().parse_args(["--demo", str(demo), "--agency", "bank", *QUERY]))
    assert only_demo["address"] == "127.0.0.1:1111" and only_demo["ca"] == b"demo ca.pem"


def test_no_plaintext_without_the_loud_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before any connection is tried.
    assert query_main(["--gateway", "127.0.0.1:1", *QUERY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("credit-query: mutual TLS needs --ca")
    assert "--insecure-dev-plaintext" in err
    (tmp_path / "plain").mkdir()
    assert query_main(["--demo", str(_demo(tmp_path / "plain", tls=False)), *QUERY]) == 2
    assert "mutual TLS needs" in capsys.readouterr().err

    loud = _parser().parse_args(["--gateway", "127.0.0.1:1", "--insecure-dev-plaintext", *QUERY])
    assert _connection(loud) == {"address": "127.0.0.1:1", "dev_agency": "development"}
    both = ["--demo", str(_demo(tmp_path)), "--agency", "bank", "--insecure-dev-plaintext"]
    assert query_main([*both, *QUERY]) == 2
    assert "excludes --ca, --cert, --key, --token-file" in capsys.readouterr().err


# --- a closed pipe ends every console script quietly -----------------------------------


def _closed_stdout(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run with a standard output nobody reads: the pipe's read end is closed before the
    command starts, so its first write meets EPIPE (what ``| head`` does, without a race)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            list(argv), stdout=write, stderr=subprocess.PIPE, cwd=ROOT, timeout=120, check=False
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "script", ["credit-gateway", "credit-query", "credit-adapter", "credit-audit"]
)
def test_help_into_a_closed_pipe_is_quiet(script: str) -> None:
    # argparse itself swallows the failed write of its help; nothing may surface at exit.
    proc = _closed_stdout(str(BIN / script), "--help")
    assert proc.stderr == b""
    assert proc.returncode in (0, EXIT_BROKEN_PIPE)


def _audit_log(folder: Path) -> tuple[Path, Path]:
    skey, vkey = generate_key("credit-gateway.test/audit")
    write_key_files(skey, vkey, folder / "audit.key", folder / "audit.pub")

    async def fill() -> None:
        log = await AuditLog.open(folder / "audit.db", Ed25519Signer.from_key_string(skey))
        for i in range(5):
            await log.append({"kind": "test", "i": i})
        await log.close()

    asyncio.run(fill())
    return folder / "audit.db", folder / "audit.pub"


def test_output_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    db, key = _audit_log(tmp_path)
    for argv in (
        ["credit-adapter", "describe", "--mapping", "adapters/samples/market.toml"],
        ["credit-audit", "verify", str(db), "--key", str(key)],
    ):
        proc = _closed_stdout(str(BIN / argv[0]), *argv[1:])
        assert proc.stderr == b"", argv
        assert proc.returncode == EXIT_BROKEN_PIPE, argv


def test_broken_pipe_mid_output_is_quiet(ledger: Path, tmp_path: Path) -> None:
    book = SQLiteLedger(ledger)
    try:
        for i in range(3000):  # more than a pipe buffer of statement lines
            book.top_up("bank", 1, f"TX-{i + 2}", datetime(2026, 12, 2, tzinfo=UTC))
    finally:
        book.close()
    proc = _closed_stdout(
        str(BIN / "credit-gateway"), "billing", "--ledger", str(ledger),
        "statement", "bank", "--from", "2026-12-01", "--to", "2026-12-31",
    )  # fmt: skip
    assert proc.stderr == b""
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_an_empty_path_is_refused_naming_its_flag() -> None:
    """``--ca ""`` was read as the current folder: "[Errno 21] Is a directory: '.'"."""
    script = Path(sys.executable).parent / "credit-query"
    argv = [str(script), "--gateway", "127.0.0.1:1", "--ca", "", "--enterprise", "x"]
    proc = subprocess.run(
        [*argv, "--purpose", "lending"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "argument --ca: an empty path" in proc.stderr
    assert "Errno" not in proc.stderr and "Traceback" not in proc.stderr
