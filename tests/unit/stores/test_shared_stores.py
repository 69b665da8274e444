"""A serving process refuses a PostgreSQL database it cannot use, before it serves: a
schema behind this build's (it never migrates by itself) or a server it cannot reach."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import parse_config
from gateway.stores.postgres.live import open_shared_stores
from gateway.stores.postgres.notify import LiveStateStaleError


def _config(url: str, tmp_path: Path, **storage: Any) -> Any:
    doc = {
        "gateway": {"insecure_dev_plaintext": True},
        "departments": {"tax": {"address": "127.0.0.1:50061"}},
        "policy": {},
        "storage": {"url": url, "connect_timeout_s": 1, **storage},
    }
    return parse_config(doc, base=tmp_path)


def test_a_schema_behind_this_build_is_refused_with_what_to_run(
    pg_empty_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        open_shared_stores(_config(pg_empty_url, tmp_path))
    assert err.value.key == "storage"
    assert "credit-gateway db migrate" in err.value.message


def test_a_migrated_database_opens_both_live_stores_with_one_listener(
    pg_url: str, tmp_path: Path
) -> None:
    shared = open_shared_stores(_config(pg_url, tmp_path))
    try:
        assert shared.policy is not None and shared.controls is not None
        versions = shared.open_versions()
        controls = shared.open_controls(["seeded"])
        assert len(shared.listeners) == 1  # one database, one listening connection
        with pytest.raises(LiveStateStaleError):  # not listening yet: fails closed
            controls.snapshot()

        async def listen() -> None:
            await shared.start_listening(asyncio.get_running_loop(), None)

        asyncio.run(listen())
        assert versions.active() is None and "seeded" in controls.snapshot().revoked_consents
    finally:
        shared.close()


def test_each_database_schema_is_checked_once_at_start_up(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Policy versions, controls and objections on one database: its schema is checked
    once (open_shared_stores), not once more for each store's pool. The real check runs;
    the test only counts its calls."""
    from gateway.stores.postgres import connect, migrate

    checks: list[str] = []

    def counted(conn: Any) -> None:
        checks.append(conn.info.dbname)
        migrate.require_current(conn)

    monkeypatch.setattr(connect, "require_current", counted)
    config = _config(pg_url, tmp_path)
    shared = open_shared_stores(config)
    try:
        assert None not in (shared.policy, shared.controls, shared.objections)
        shared.open_versions()
        shared.open_controls([])
        shared.open_objections()
        assert len(checks) == 1
    finally:
        shared.close()


def test_an_unreachable_server_is_refused_naming_no_folder(tmp_path: Path) -> None:
    url = f"postgresql://gateway@/credit?host={tmp_path / 'nowhere'}"
    with pytest.raises(ConfigError) as err:
        open_shared_stores(_config(url, tmp_path))
    # One opener, one key, the stores named (issue: two openers once said it two ways).
    assert err.value.key == "storage"
    assert err.value.problem == (
        "policy, controls, objections: the database cannot be reached (OperationalError)"
    )
    assert str(tmp_path) not in err.value.message


def test_sqlite_stays_where_the_storage_says(tmp_path: Path) -> None:
    shared = open_shared_stores(
        _config(
            "postgresql://gateway@db.example/credit",
            tmp_path,
            stores={"policy": "sqlite", "controls": "sqlite", "objections": "sqlite"},
        )
    )
    assert shared.policy is None and shared.controls is None and shared.listeners == ()
    assert shared.objections is None
