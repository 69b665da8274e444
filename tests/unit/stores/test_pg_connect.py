"""The one pool opener of a serving process (gateway.stores.postgres.connect.open_store_pool):
every failure is ConfigError key ``storage`` naming the store and no folder or server text;
a schema behind is refused naming the command; a good database gives an open pool. The
gateway's start-up (runtime.assembly), the live stores (stores.postgres.live) and
``credit-gateway billing --config`` all open through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.stores.postgres.connect import check_current, open_store_pool
from gateway.stores.postgres.url import PgTarget


def test_an_unreachable_database_names_the_store_and_no_folder(tmp_path: Path) -> None:
    target = PgTarget(f"postgresql://gw@/credit?host={tmp_path / 'nowhere'}", connect_timeout_s=1)
    for call in (
        lambda: open_store_pool(target, "ledger", max_size=1, timeout_s=1),
        lambda: check_current(target, "ledger"),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.key == "storage"
        assert err.value.problem in (
            "ledger: the database cannot be reached (OperationalError)",
            "ledger: the database cannot be reached (PoolTimeout)",
        )
        assert str(tmp_path) not in err.value.problem


def test_an_unusable_password_source_says_which(tmp_path: Path) -> None:
    target = PgTarget("postgresql://gw@db.example/credit", password_env="NO_SUCH_PG_PASSWORD")
    with pytest.raises(ConfigError) as err:
        open_store_pool(target, "replay", max_size=1, timeout_s=1)
    assert (err.value.key, err.value.problem) == (
        "storage",
        "replay: the database cannot be reached "
        "(storage.password_env: NO_SUCH_PG_PASSWORD is not set)",
    )


def test_a_schema_behind_is_refused_naming_the_command(pg_empty_url: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_store_pool(PgTarget(pg_empty_url), "limits", max_size=1)
    assert err.value.key == "storage"
    assert (
        err.value.problem.startswith("limits: ")
        and "credit-gateway db migrate" in err.value.problem
    )


def test_a_current_database_gives_an_open_pool(pg_url: str) -> None:
    pool = open_store_pool(PgTarget(pg_url), "ledger", max_size=2)
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()
    check_current(PgTarget(pg_url), "ledger")
