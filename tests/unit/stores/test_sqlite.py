"""The one durable SQLite set-up: its settings, read-only readers, the format stamp, and
that every store opens its file through it."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.stores.sqlite import ensure_format, open_durable, open_read_only
from gateway.stores.sqlite.audit import SQLiteStore
from gateway.stores.sqlite.ledger import SQLiteLedger
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore

REPO = Path(__file__).resolve().parents[3]
_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"


def _settings(conn: sqlite3.Connection) -> tuple[str, int, int, int]:
    return (
        str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
        int(conn.execute("PRAGMA synchronous").fetchone()[0]),
        int(conn.execute("PRAGMA foreign_keys").fetchone()[0]),
        int(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
    )


def test_open_durable_sets_wal_full_sync_foreign_keys_and_the_busy_timeout(
    tmp_path: Path,
) -> None:
    conn = open_durable(tmp_path / "x.db", schema=_SCHEMA, busy_timeout_s=2.5)
    assert _settings(conn) == ("wal", 2, 1, 2500)  # synchronous 2 = FULL
    assert conn.isolation_level is None  # the store begins its own transactions
    conn.close()


def test_every_store_gets_the_durable_settings(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    audit = SQLiteStore(tmp_path / "audit.db")
    versions = SQLiteVersionStore(tmp_path / "versions.db")
    try:
        assert _settings(ledger._conn) == ("wal", 2, 1, 10_000)
        assert _settings(audit._conn) == ("wal", 2, 1, 5_000)
        assert _settings(versions._conn) == ("wal", 2, 1, 5_000)
    finally:
        ledger.close()
        audit.close()
        versions.close()


def test_read_only_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    open_durable(path, schema=_SCHEMA).close()
    conn = open_read_only(path)
    assert conn.execute("SELECT count(*) FROM meta").fetchone()[0] == 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO meta VALUES ('a', 'b')")
    conn.close()
    with pytest.raises(sqlite3.OperationalError):
        open_read_only(tmp_path / "missing.db").execute("SELECT 1 FROM meta")


def test_ensure_format_stamps_a_new_file_and_reports_an_old_one(tmp_path: Path) -> None:
    conn = open_durable(tmp_path / "x.db", schema=_SCHEMA)
    assert ensure_format(conn, "fmt/1") == "fmt/1"
    assert ensure_format(conn, "fmt/2") == "fmt/1"  # the caller refuses the mismatch
    conn.close()


def test_no_store_opens_sqlite_by_itself() -> None:
    # The connection settings live in one place: no other production module calls connect.
    offenders = []
    for path in sorted((REPO / "gateway").rglob("*.py")):
        if path == REPO / "gateway" / "stores" / "sqlite" / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "sqlite3"
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_the_set_up_is_standard_library_only() -> None:
    # credit-audit imports it through the audit store: nothing but the stdlib may load.
    code = (
        "import sys; import gateway.stores.sqlite; "
        "print(sorted(m for m in sys.modules if m.startswith('gateway')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert out.strip() == "['gateway', 'gateway.stores', 'gateway.stores.sqlite']"
