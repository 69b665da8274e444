"""Where ``[storage]`` puts the objection store, the subject index and the consent archive,
and the start-up that opens them there (issue 12's way: ``url`` moves them,
``[storage.stores]`` overrides; the schema comes from ``credit-gateway db migrate``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit.records import generate_pseudonym_key, write_pseudonym_key
from gateway.errors import ConfigError
from gateway.runtime.config import AuditConfig, StorageConfig, parse_config
from gateway.runtime.stores import open_subject_parts
from gateway.stores.postgres.subject_index import PgQueryIndex
from gateway.subject.index import SQLiteQueryIndex

_BASE = {"gateway": {"insecure_dev_plaintext": True}, "departments": {"tax": {"address": "h:1"}}}
PG = "postgresql://gw@db/credit"


def _storage(tmp_path: Path, **storage: object) -> StorageConfig:
    return parse_config({**_BASE, "storage": storage}, base=tmp_path).storage


def test_url_moves_the_three_stores_and_the_index_follows_the_audit_log(tmp_path: Path) -> None:
    everything = _storage(tmp_path, url=PG)
    for store in ("objections", "subject_index", "consent_archive"):
        assert everything.url_for(store) == PG
    # The log stays a file on each host: an index shared by the hosts would mix logs.
    local_log = _storage(tmp_path, url=PG, stores={"audit": "sqlite"})
    assert local_log.url_for("subject_index") is None
    assert local_log.url_for("objections") == PG
    assert local_log.url_for("consent_archive") == PG
    kept = _storage(tmp_path, url=PG, stores={"objections": "sqlite", "consent_archive": "sqlite"})
    assert kept.url_for("objections") is None and kept.url_for("consent_archive") is None


def test_a_shared_index_over_a_log_of_one_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        _storage(tmp_path, url=PG, stores={"audit": "sqlite", "subject_index": PG})
    assert refused.value.key == "storage.stores.subject_index"
    with pytest.raises(ConfigError):
        _storage(tmp_path, stores={"subject_index": PG})  # no url: the log is a file


def test_objections_on_postgres_need_no_file(tmp_path: Path) -> None:
    policy = {"model": "m.conf", "policy": "p.csv"}
    for name in ("m.conf", "p.csv"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    on_pg = parse_config({**_BASE, "policy": policy, "storage": {"url": PG}}, base=tmp_path)
    assert on_pg.objections is not None and on_pg.objections.store is None
    table = {
        **_BASE,
        "policy": policy,
        "objections": {"poll_interval_s": 5},
        "storage": {"url": PG},
    }
    assert parse_config(table, base=tmp_path).objections is not None
    with pytest.raises(ConfigError, match="objections.store"):
        parse_config({**_BASE, "policy": policy, "objections": {}}, base=tmp_path)
    assert parse_config({**_BASE, "policy": policy}, base=tmp_path).objections is None


def _audit(tmp_path: Path) -> AuditConfig:
    key = tmp_path / "pseudonym.key"
    write_pseudonym_key(key, generate_pseudonym_key())
    return AuditConfig(key=tmp_path / "log.key", pseudonym_key=key, path=tmp_path / "audit.sqlite")


def test_the_subject_parts_open_on_postgres_where_storage_says(tmp_path: Path, pg_url: str) -> None:
    audit = _audit(tmp_path)
    storage = StorageConfig(url=pg_url)
    indexer, archive = open_subject_parts(audit, storage)
    try:
        assert isinstance(indexer.index, PgQueryIndex)
        assert indexer.index.follows()  # the first process is elected follower
    finally:
        archive.close()
        indexer.index.close()
    assert not audit.subject_index_path.exists() and not audit.consent_archive_path.exists()
    # Kept embedded where [storage.stores] says so.
    kept = StorageConfig(url=pg_url, stores={"subject_index": "sqlite", "audit": "sqlite"})
    indexer, archive = open_subject_parts(audit, kept)
    try:
        assert isinstance(indexer.index, SQLiteQueryIndex)
    finally:
        archive.close()
        indexer.index.close()


def test_a_schema_behind_is_refused_naming_the_command(tmp_path: Path, pg_empty_url: str) -> None:
    with pytest.raises(ConfigError, match="credit-gateway db migrate"):
        open_subject_parts(_audit(tmp_path), StorageConfig(url=pg_empty_url))
