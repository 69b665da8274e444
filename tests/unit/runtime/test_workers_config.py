"""What ``serve --workers N`` and the live propagation settings accept and refuse, before
any process starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import Config, StorageConfig, parse_config
from gateway.runtime.workers import check_workers

PG = "postgresql://gateway@db.example/credit"


def _doc(**storage: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "gateway": {"insecure_dev_plaintext": True, "listen": "127.0.0.1:8443"},
        "departments": {"tax": {"address": "127.0.0.1:50061"}},
    }
    if storage:
        doc["storage"] = storage
    return doc


def test_live_bounds_default_and_are_checked(tmp_path: Path) -> None:
    config = parse_config(_doc(url=PG), base=tmp_path)
    assert (config.storage.stale_after_s, config.storage.poll_interval_s) == (5.0, 1.0)
    config = parse_config(_doc(url=PG, stale_after_s=2, poll_interval_s=0.5), base=tmp_path)
    assert (config.storage.stale_after_s, config.storage.poll_interval_s) == (2, 0.5)
    for bad, key in (
        ({"stale_after_s": 0}, "storage.stale_after_s"),
        ({"stale_after_s": True}, "storage.stale_after_s"),
        ({"stale_after_s": "5"}, "storage.stale_after_s"),
        ({"poll_interval_s": 0}, "storage.poll_interval_s"),
        ({"stale_after_s": 2, "poll_interval_s": 2}, "storage.poll_interval_s"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(_doc(url=PG, **bad), base=tmp_path)
        assert err.value.key == key, bad


def _with(config: Config, **changes: Any) -> Config:
    from dataclasses import replace

    return replace(config, **changes)


def test_workers_need_a_shared_audit_log_and_a_fixed_port(tmp_path: Path) -> None:
    from gateway.runtime.config import AuditConfig

    plain = parse_config(_doc(), base=tmp_path)
    check_workers(plain, 1)
    check_workers(plain, 4)  # no audit log at all (development): nothing to share
    audited = _with(
        plain,
        audit=AuditConfig(path=tmp_path / "a", key=tmp_path / "k", pseudonym_key=tmp_path / "p"),
    )
    check_workers(audited, 1)
    with pytest.raises(ConfigError) as sqlite:
        check_workers(audited, 2)
    assert sqlite.value.key == "audit" and "exactly one writer" in sqlite.value.message
    shared = _with(audited, storage=StorageConfig(url=PG))
    check_workers(shared, 8)
    on_sqlite = _with(audited, storage=StorageConfig(url=PG, stores={"audit": "sqlite"}))
    with pytest.raises(ConfigError):
        check_workers(on_sqlite, 2)
    with pytest.raises(ConfigError) as port:
        check_workers(_with(shared, listen="127.0.0.1:0"), 2)
    assert port.value.key == "gateway.listen"
    with pytest.raises(ConfigError) as none:
        check_workers(shared, 0)
    assert none.value.key == "--workers"
