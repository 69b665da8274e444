"""The subject's rights: "who looked at me", access by law, the consent archive.

* :mod:`gateway.subject.index`: subject pseudonym -> answered queries (by audit index),
  derived from the signed audit log and rebuildable from it; the queries per legal basis;
* :mod:`gateway.subject.service`: :class:`SubjectIndexer`, which keeps the index current;
* :mod:`gateway.subject.consents`: :class:`ConsentArchive`, every consent a query used, in
  signed form, encrypted at rest, purged after its retention.

The index and the archive are SQLite files here, or tables every host shares on PostgreSQL
(:mod:`gateway.stores.postgres.subject_index`, :mod:`gateway.stores.postgres.consents`).

The gRPC side is :mod:`gateway.api.subject`; the legal bases themselves are
:mod:`gateway.policy.legal`.
"""

from gateway.subject.consents import DEFAULT_RETENTION_DAYS, ArchivedConsent, ConsentArchive
from gateway.subject.errors import SubjectStoreError
from gateway.subject.index import (
    IndexedQuery,
    QueryIndex,
    SQLiteQueryIndex,
    entry_from_record,
    sync_index,
)
from gateway.subject.service import SubjectIndexer

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "ArchivedConsent",
    "ConsentArchive",
    "IndexedQuery",
    "QueryIndex",
    "SQLiteQueryIndex",
    "SubjectIndexer",
    "SubjectStoreError",
    "entry_from_record",
    "sync_index",
]
