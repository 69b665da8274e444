"""``[audit] path`` is required only while the audit log is a SQLite file: where
``[storage]`` puts the audit store on PostgreSQL the log lives there, and the subject
index and consent archive (local files) default beside the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import Config, load_config

PG = "postgresql://gateway@db.example/credit"


def _load(tmp_path: Path, audit: str, storage: str = "") -> Config:
    for name in ("audit.key", "pseudonym.key"):
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[gateway]\ninsecure_dev_plaintext = true\n[departments.tax]\naddress = "h:1"\n'
        f'[audit]\nkey = "audit.key"\npseudonym_key = "pseudonym.key"\n{audit}' + storage,
        encoding="utf-8",
    )
    return load_config(path)


def test_missing_path_is_refused_on_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, "")
    assert exc.value.key == "audit.path"


def test_missing_path_is_refused_where_only_other_stores_move(tmp_path: Path) -> None:
    storage = f'[storage]\nurl = "{PG}"\n[storage.stores]\naudit = "sqlite"\n'
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, "", storage)
    assert exc.value.key == "audit.path"


def test_path_is_optional_with_the_audit_store_on_postgres(tmp_path: Path) -> None:
    config = _load(tmp_path, "", f'[storage]\nurl = "{PG}"\n')
    audit = config.audit
    assert audit is not None
    assert audit.path is None
    assert audit.subject_index_path == tmp_path / "audit.subjects.sqlite"
    assert audit.consent_archive_path == tmp_path / "audit.consents.sqlite"


def test_per_store_audit_url_also_makes_path_optional(tmp_path: Path) -> None:
    storage = f'[storage]\n[storage.stores]\naudit = "{PG}"\n'
    index = 'subject_index = "idx.sqlite"\n'
    audit = _load(tmp_path, index, storage).audit
    assert audit is not None
    assert audit.path is None and audit.subject_index_path == tmp_path / "idx.sqlite"


def test_a_given_path_is_still_checked_on_postgres(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, 'path = "nowhere/audit.sqlite"\n', f'[storage]\nurl = "{PG}"\n')
    assert exc.value.key == "audit.path"


def test_sqlite_defaults_stay_beside_the_log(tmp_path: Path) -> None:
    audit = _load(tmp_path, 'path = "log.sqlite"\n').audit
    assert audit is not None
    assert audit.path == tmp_path / "log.sqlite"
    assert audit.subject_index_path == tmp_path / "log.subjects.sqlite"
