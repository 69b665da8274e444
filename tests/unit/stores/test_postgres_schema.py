"""The PostgreSQL schema: versioned migrations, applied only by ``credit-gateway db``,
checked by serving processes; ``[storage]`` configuration (never a password in a URL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import parse_config
from gateway.stores.postgres.connect import connect, open_pool
from gateway.stores.postgres.migrate import (
    SchemaMismatch,
    applied,
    available,
    migrate,
    require_current,
)
from gateway.stores.postgres.url import PgConfigError, PgTarget, check_url

_BASE = {"gateway": {"insecure_dev_plaintext": True}, "departments": {"tax": {"address": "h:1"}}}


def test_migrations_are_numbered_and_named() -> None:
    migs = available()
    assert migs, "the build ships migrations"
    assert [m.version for m in migs] == sorted({m.version for m in migs})
    assert migs[0].version == 1 and migs[0].name == "storage_meta"


def test_migrate_applies_all_once_then_nothing(pg_empty_url: str) -> None:
    with psycopg.connect(pg_empty_url) as conn:
        with pytest.raises(SchemaMismatch, match="db migrate"):
            require_current(conn)
        first = migrate(conn)
        assert [m.version for m in first] == [m.version for m in available()]
        assert migrate(conn) == []
        require_current(conn)
        assert set(applied(conn)) == {m.version for m in available()}


def test_an_edited_migration_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE schema_migrations SET sha256 = 'x' WHERE version = 1")
        conn.commit()
        with pytest.raises(SchemaMismatch, match="changed after it was applied"):
            require_current(conn)
        with pytest.raises(SchemaMismatch, match="changed after it was applied"):
            migrate(conn)


def test_a_newer_builds_schema_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, sha256) VALUES (9999, 'future', 'h')"
        )
        conn.commit()
        with pytest.raises(SchemaMismatch, match="9999_future.*at least as new"):
            require_current(conn)


def test_pool_times_out_instead_of_waiting_forever(pg_url: str) -> None:
    import psycopg_pool

    pool = open_pool(PgTarget(url=pg_url), min_size=1, max_size=1, timeout_s=0.3)
    try:
        with pool.connection(), pytest.raises(psycopg_pool.PoolTimeout):
            pool.getconn(timeout=0.3)
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:secret@h/db", "must not contain a password"),
        ("postgresql://u@h/db?password=secret", "must not contain a password"),
        ("mysql://u@h/db", "must start with postgresql://"),
    ],
)
def test_urls_with_a_password_or_another_scheme_are_refused(url: str, message: str) -> None:
    with pytest.raises(PgConfigError, match=message) as info:
        check_url(url)
    assert "secret" not in str(info.value)
    with pytest.raises(ConfigError, match=message) as cinfo:
        parse_config({**_BASE, "storage": {"url": url}}, base=Path())
    assert "secret" not in str(cinfo.value)


def test_storage_config_per_store_override(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = parse_config(
        {
            **_BASE,
            "storage": {
                "url": "postgresql://gw@db/credit",
                "password_file": "pw",
                "stores": {"replay": "sqlite", "audit": "postgresql://gw@auditdb/log"},
            },
        },
        base=tmp_path,
    ).storage
    assert cfg.url_for("ledger") == "postgresql://gw@db/credit"
    assert cfg.url_for("replay") is None
    assert cfg.url_for("audit") == "postgresql://gw@auditdb/log"
    target = cfg.target_for("ledger")
    assert target is not None and target.kwargs()["password"] == "s3cret"
    with pytest.raises(ConfigError, match="storage.stores.cache: unknown store"):
        parse_config({**_BASE, "storage": {"stores": {"cache": "sqlite"}}}, base=tmp_path)
    assert parse_config(_BASE, base=tmp_path).storage.url_for("ledger") is None


def test_password_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CG_TEST_PW", raising=False)
    target = PgTarget(url="postgresql://gw@db/credit", password_env="CG_TEST_PW")
    with pytest.raises(PgConfigError, match="CG_TEST_PW is not set"):
        target.kwargs()
    monkeypatch.setenv("CG_TEST_PW", "pw")
    assert target.kwargs()["password"] == "pw"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("credit-gateway")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )


def test_db_migrate_and_status_through_the_console_script(
    pg_empty_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[gateway]\ninsecure_dev_plaintext = true\n"
        '[departments.tax]\naddress = "127.0.0.1:1"\n'
        f'[storage]\nurl = "{pg_empty_url}"\n'
    )
    status = _cli("db", "status", "--config", str(config))
    assert status.returncode == 1, status.stderr
    assert "0001_storage_meta PENDING" in status.stdout
    done = _cli("db", "migrate", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "applied 0001_storage_meta" in done.stdout and "schema current" in done.stdout
    assert "?host=" not in done.stdout  # the socket folder is not printed
    status = _cli("db", "status", "--config", str(config))
    assert status.returncode == 0 and "PENDING" not in status.stdout
    with connect(PgTarget(url=pg_empty_url)) as conn:
        require_current(conn)


def test_db_without_postgres_configured_says_so(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\ninsecure_dev_plaintext = true\n[departments.tax]\naddress = "h:1"\n'
    )
    out = _cli("db", "migrate", "--config", str(config))
    assert out.returncode == 2 and "no PostgreSQL store configured" in out.stderr


def test_db_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\ninsecure_dev_plaintext = true\n[departments.tax]\naddress = "h:1"\n'
        f'[storage]\nurl = "postgresql://gw@/credit?host={tmp_path}"\nconnect_timeout_s = 2\n'
    )
    out = _cli("db", "migrate", "--config", str(config))
    assert out.returncode == 2
    assert "cannot connect" in out.stderr and "Traceback" not in out.stderr
