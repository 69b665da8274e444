"""Opening the stores ``[storage]`` names, for :mod:`gateway.runtime.assembly`: a pool on
PostgreSQL after the schema check (:func:`pg_pool`), and the subject's-rights stores
(:func:`open_subject_parts`: the subject index and the consent archive, SQLite files beside
the audit log or tables every host shares on PostgreSQL).

    pool = pg_pool(config.storage, "ledger", 8)       # None: the store stays on SQLite
    indexer, archive = open_subject_parts(config.audit, config.storage)

A serving process never migrates: a schema behind this build is refused with the command to
run (``credit-gateway db migrate``).
"""

from __future__ import annotations

from typing import Any

from gateway.audit import load_pseudonym_key
from gateway.audit.errors import AuditError
from gateway.audit.store import LogReader
from gateway.errors import ConfigError
from gateway.runtime.config import AuditConfig, StorageConfig
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.sqlite.audit import open_reader
from gateway.subject import (
    ConsentArchive,
    QueryIndex,
    SQLiteQueryIndex,
    SubjectIndexer,
    SubjectStoreError,
)

__all__ = ["open_subject_parts", "pg_pool"]


def pg_pool(storage: StorageConfig, store: str, max_size: int) -> Any:
    """A pool (at most ``max_size`` connections, and never above ``pool_max``) for
    ``store`` after the schema check, or None where ``storage`` keeps it on SQLite.
    Blocking: start-up only. Raises ConfigError (schema behind: names ``credit-gateway db
    migrate``; database unreachable)."""
    target = storage.target_for(store, application_name=f"credit-gateway {store}")
    if target is None:
        return None
    from gateway.stores.postgres.connect import open_store_pool

    return open_store_pool(
        target,
        store,
        max_size=min(max_size, storage.pool_max),
        timeout_s=float(storage.connect_timeout_s),
    )


def open_subject_parts(
    audit: AuditConfig, storage: StorageConfig | None = None
) -> tuple[SubjectIndexer, ConsentArchive]:
    """The subject index (following the audit log: the SQLite file, or the log shared on
    PostgreSQL where ``[storage]`` puts it: a reader kept open, so never one frozen
    snapshot) and the consent archive: beside the log unless the config names them, or
    shared by every host on PostgreSQL where ``[storage]`` puts ``subject_index`` and
    ``consent_archive`` (``credit-gateway db migrate`` must have run). Blocking: start-up
    only. Raises ConfigError."""
    try:
        pkey = load_pseudonym_key(audit.pseudonym_key)
    except (OSError, AuditError) as exc:
        raise ConfigError("audit.pseudonym_key", f"cannot load the key: {exc}") from None
    storage = storage or StorageConfig()
    archive = _open_archive(audit, storage, pkey)
    try:
        index = _open_index(audit, storage)
    except BaseException:
        archive.close()
        raise
    target = storage.target_for("audit", application_name="credit-gateway-index")

    def reader() -> LogReader:
        if target is not None:
            return PostgresAuditStore(target)
        if audit.path is None:  # the parser requires it while the log is on SQLite
            raise ConfigError("audit.path", "missing: the audit log file (created if absent)")
        return open_reader(audit.path)

    return SubjectIndexer(index, reader), archive


def _open_archive(audit: AuditConfig, storage: StorageConfig, pkey: bytes) -> ConsentArchive:
    """The consent archive: the file, or the table every host shares. Raises ConfigError."""
    pool = pg_pool(storage, "consent_archive", 2)
    if pool is None:
        return ConsentArchive.open(
            audit.consent_archive_path, pkey, retention_days=audit.consent_retention_days
        )
    from gateway.stores.postgres.consents import open_consent_archive

    try:
        return open_consent_archive(pool, pkey, retention_days=audit.consent_retention_days)
    except SubjectStoreError as exc:
        raise ConfigError("storage", f"consent_archive: {exc.message}") from None


def _open_index(audit: AuditConfig, storage: StorageConfig) -> QueryIndex:
    """The subject index: the file, or the tables every host shares (this process may be
    elected their follower). Raises ConfigError."""
    pool = pg_pool(storage, "subject_index", 2)
    if pool is None:
        return SQLiteQueryIndex.open(audit.subject_index_path)
    from gateway.stores.postgres.subject_index import PgQueryIndex

    follower = storage.target_for(
        "subject_index", application_name="credit-gateway subject-index follower"
    )
    return PgQueryIndex(pool, target=follower)
