"""The consent archive on PostgreSQL: :class:`PgConsentRows`, the shared storage of
:class:`~gateway.subject.consents.ConsentArchive` (Decree 631 Art. 18), and
:func:`open_consent_archive`.

    archive = open_consent_archive(pool, pseudonym_key, retention_days=1826)
    await archive.keep(cid, jws, agency_id="bank", subject_key=pseudonym, expires_at=exp)
    archive.get(cid)          # on any host: the signed consent, decrypted

Tables ``consent_archive`` and ``consent_archive_key`` (migration
``0032_consent_archive``). With several hosts each archiving into its own file, an auditor
asking one host for the consent behind a query answered by another would find nothing;
here every host archives into, and reads from, one table.

What is stored is what the SQLite file stores: the JWS encrypted (AES-256-GCM, the consent
id as associated data) under a key derived from the pseudonym key, the subject as its keyed
pseudonym. ``INSERT ... ON CONFLICT DO NOTHING`` keeps the first copy whichever host
archives a consent first; the archive answers once the commit returned
(``synchronous_commit`` on), before any department is asked. The first process to open the
archive records a check value of its key (an HMAC under it, which reveals nothing of it):
a host configured with another pseudonym key is refused at start rather than archive what
the others cannot read (and pseudonymise subjects differently from them).

Errors: :class:`~gateway.subject.errors.SubjectStoreError` naming the SQLSTATE only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.stores.postgres.connect import pooled_transaction
from gateway.subject.consents import (
    DEFAULT_RETENTION_DAYS,
    ConsentArchive,
    ConsentRow,
    ConsentRows,
    consent_row,
)
from gateway.subject.errors import SubjectStoreError

__all__ = ["PgConsentRows", "open_consent_archive"]


class PgConsentRows(ConsentRows):
    """The archive's rows in the shared table (see the module docstring). ``pool``:
    connections to a migrated database (closed by :meth:`close` when ``owns_pool``)."""

    def __init__(
        self, pool: ConnectionPool[psycopg.Connection[Any]], *, owns_pool: bool = True
    ) -> None:
        self._pool = pool
        self._owns_pool = owns_pool

    def _tx(self, what: str) -> AbstractContextManager[psycopg.Connection[Any]]:
        return pooled_transaction(self._pool, SubjectStoreError, f"consent archive {what}")

    def insert(self, consent_id: str, row: ConsentRow) -> None:
        """See :meth:`ConsentRows.insert`: durable once the commit returns."""
        with self._tx("write") as conn:
            conn.execute(
                "INSERT INTO consent_archive (consent_id, agency, subject, expires_at,"
                " archived_at, retain_until, nonce, sealed)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (consent_id) DO NOTHING",
                (consent_id, *row),
            )

    def select(self, consent_id: str) -> ConsentRow | None:
        """See :meth:`ConsentRows.select`."""
        with self._tx("read") as conn:
            row = conn.execute(
                "SELECT agency, subject, expires_at, archived_at, retain_until, nonce, sealed"
                " FROM consent_archive WHERE consent_id = %s",
                (consent_id,),
            ).fetchone()
        return None if row is None else consent_row(row)

    def purge(self, cutoff: int) -> list[str]:
        """See :meth:`ConsentRows.purge` (several hosts may purge at once: each row goes
        once)."""
        with self._tx("purge") as conn:
            rows = conn.execute(
                "DELETE FROM consent_archive WHERE retain_until < %s RETURNING consent_id",
                (cutoff,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def check_key(self, check_value: bytes) -> bool:
        """See :meth:`ConsentRows.check_key`: the first opener records its value."""
        with self._tx("key check") as conn:
            conn.execute(
                "INSERT INTO consent_archive_key (one, check_value) VALUES (1, %s)"
                " ON CONFLICT (one) DO NOTHING",
                (check_value,),
            )
            row = conn.execute("SELECT check_value FROM consent_archive_key").fetchone()
        return row is not None and bytes(row[0]) == check_value

    def close(self) -> None:
        """Close the pool when these rows own it (idempotent)."""
        if self._owns_pool:
            self._pool.close()


def open_consent_archive(
    pool: ConnectionPool[psycopg.Connection[Any]],
    pseudonym_key: bytes,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    clock: Callable[[], float] = time.time,
    owns_pool: bool = True,
) -> ConsentArchive:
    """The consent archive every host shares, over ``pool``.

    Raises:
        ConfigError: as :meth:`ConsentArchive.over` (another host's pseudonym key).
        SubjectStoreError: the database cannot be reached.
    """
    rows = PgConsentRows(pool, owns_pool=owns_pool)
    try:
        return ConsentArchive.over(rows, pseudonym_key, retention_days=retention_days, clock=clock)
    except BaseException:
        rows.close()
        raise
