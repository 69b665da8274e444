"""Start-up with ``[storage]`` on PostgreSQL: the ledger, the replay store and the rate
limits open there, never on a schema that is behind or from a database out of reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.runtime.assembly import _open_shared
from gateway.runtime.config import Config, load_config
from gateway.stores.postgres.ledger import PostgresLedger


def _config(tmp_path: Path, storage: str) -> Config:
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[gateway]\ninsecure_dev_plaintext = true\n[departments.tax]\naddress = "h:1"\n'
        f'[billing]\nledger = "{tmp_path / "ledger.db"}"\n' + storage,
        encoding="utf-8",
    )
    return load_config(path)


def test_stores_open_on_postgres_where_storage_says(tmp_path: Path, pg_url: str) -> None:
    shared = _open_shared(_config(tmp_path, f'[storage]\nurl = "{pg_url}"\n'))
    try:
        assert isinstance(shared.ledger, PostgresLedger)
        assert shared.limits is not None
        assert shared.replay is None  # no [auth]: no tokens to record
    finally:
        assert shared.ledger is not None and shared.limits is not None
        shared.ledger.close()
        shared.limits.close()
    assert not (tmp_path / "ledger.db").exists()  # the SQLite file was never made


def test_per_store_sqlite_keeps_that_store_embedded(tmp_path: Path, pg_url: str) -> None:
    storage = f'[storage]\nurl = "{pg_url}"\n[storage.stores]\nledger = "sqlite"\n'
    shared = _open_shared(_config(tmp_path, storage))
    assert shared.ledger is None and shared.limits is not None
    shared.limits.close()


def test_a_schema_behind_is_refused_naming_the_command(tmp_path: Path, pg_empty_url: str) -> None:
    with pytest.raises(ConfigError, match="credit-gateway db migrate"):
        _open_shared(_config(tmp_path, f'[storage]\nurl = "{pg_empty_url}"\n'))


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    storage = f'[storage]\nurl = "postgresql://gw@/credit?host={tmp_path}"\nconnect_timeout_s = 1\n'
    with pytest.raises(ConfigError, match="cannot be reached"):
        _open_shared(_config(tmp_path, storage))
