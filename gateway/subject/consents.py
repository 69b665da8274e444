"""The consent archive (Decree 631 Art. 18): every consent a query used, in signed form.

A query record names its consent by id; this archive keeps the consent itself (the compact
JWS the agency presented, signature and all), so that years later an auditor can show the
authorisation behind any query and anyone can re-verify it with the issuer's published key.

    archive = ConsentArchive.open(Path("consents.sqlite"), pseudonym_key)
    await archive.keep(cid, jws, agency_id="bank", subject_key=pseudonym, expires_at=exp)
    archive.get(cid).compact_jws                                    # the signed consent

**Retention.** A consent is kept ``retention_days`` (default :data:`DEFAULT_RETENTION_DAYS`,
five years) after it expires, then purged (:meth:`ConsentArchive.purge`, run at start and
daily by the gateway): five years matches the Art. 16 horizon after which the negative
records such a query could disclose are no longer shared, and the query records that name the
consent stay in the log. Operators with a longer statutory duty set ``consent_retention_days``.

**Protection.** A consent holds personal data (the subject's identifier, in its payload).
So each JWS is encrypted at rest with AES-256-GCM under a key derived (HKDF-SHA256, RFC 5869)
from the gateway's pseudonym key, the consent id as associated data (a row cannot be moved to
another id); the file is created owner-only (0600). Rows are found by consent id and carry
the subject only as its keyed pseudonym. Reading one back is an auditor's RPC
(``LegalBasisAdmin.GetArchivedConsent``), itself put on the audit record.

Writes are durable before the query goes on (WAL, ``synchronous=FULL``; on PostgreSQL the
commit with ``synchronous_commit`` on): a query whose consent cannot be archived is refused
before any department is asked.

**Storage.** The rows live behind the small :class:`ConsentRows` seam: one SQLite file
(:meth:`ConsentArchive.open`), or the table every host shares on PostgreSQL
(:mod:`gateway.stores.postgres.consents`, built with :meth:`ConsentArchive.over`), so a
consent archived by one host is read back on any other. Encryption, retention and the memo
are the same on both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import ConfigError
from gateway.stores.sqlite import SQLiteSetupError, open_durable
from gateway.subject.errors import SubjectStoreError

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "ArchivedConsent",
    "ConsentArchive",
    "ConsentRow",
    "ConsentRows",
    "consent_row",
]

#: Days a consent is kept after it expires: five years.
DEFAULT_RETENTION_DAYS = 1826
_INFO = b"credit-gateway consent archive v1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    consent_id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    archived_at INTEGER NOT NULL,
    retain_until INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS consents_by_retention ON consents (retain_until);
"""
#: Consent ids known archived in this process: a repeat use costs no write.
_MEMO = 65_536
#: What the key check value is an HMAC of (see :meth:`ConsentRows.check_key`).
_KEY_CHECK = b"credit-gateway consent archive key check v1"

#: One stored row: agency, subject pseudonym, expires_at, archived_at, retain_until (Unix
#: seconds), the AES-GCM nonce and the sealed JWS.
ConsentRow = tuple[str, str, int, int, int, bytes, bytes]


def consent_row(stored: Sequence[Any]) -> ConsentRow:
    """A :data:`ConsentRow` from the stored columns (agency, subject, expires_at,
    archived_at, retain_until, nonce, sealed) as either backend returns them."""
    agency, subject, expires_at, archived_at, retain_until, nonce, sealed = stored
    return (
        str(agency),
        str(subject),
        int(expires_at),
        int(archived_at),
        int(retain_until),
        bytes(nonce),
        bytes(sealed),
    )


class ConsentRows(ABC):
    """Where the archive's rows are stored (SQLite file, PostgreSQL table): no crypto, no
    memo, only rows. Thread-safe; every method raises SubjectStoreError on failure."""

    @abstractmethod
    def insert(self, consent_id: str, row: ConsentRow) -> None:
        """Store ``row`` under ``consent_id`` unless one is there (the first copy is
        kept); durable on return."""

    @abstractmethod
    def select(self, consent_id: str) -> ConsentRow | None:
        """The row of ``consent_id``, or None."""

    @abstractmethod
    def purge(self, cutoff: int) -> list[str]:
        """Delete every row whose ``retain_until`` is before ``cutoff``; their ids."""

    def check_key(self, check_value: bytes) -> bool:
        """Whether ``check_value`` (an HMAC under the archive key) is the one the storage
        was first opened with (recorded then). A file of one host's own: always True."""
        return True

    @abstractmethod
    def close(self) -> None:
        """Release the storage."""


class _SQLiteRows(ConsentRows):
    """The rows in one SQLite file (WAL, ``synchronous=FULL``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def insert(self, consent_id: str, row: ConsentRow) -> None:
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR IGNORE INTO consents (consent_id, agency, subject, expires_at, "
                    "archived_at, retain_until, nonce, sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (consent_id, *row),
                )
        except sqlite3.Error as exc:
            raise SubjectStoreError(f"consent archive write failed: {exc}") from None

    def select(self, consent_id: str) -> ConsentRow | None:
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT agency, subject, expires_at, archived_at, retain_until, nonce, sealed "
                    "FROM consents WHERE consent_id = ?",
                    (consent_id,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise SubjectStoreError(f"consent archive read failed: {exc}") from None
        return None if row is None else consent_row(row)

    def purge(self, cutoff: int) -> list[str]:
        try:
            with self._lock:
                gone = [
                    str(r[0])
                    for r in self._conn.execute(
                        "SELECT consent_id FROM consents WHERE retain_until < ?", (cutoff,)
                    ).fetchall()
                ]
                self._conn.execute("DELETE FROM consents WHERE retain_until < ?", (cutoff,))
        except sqlite3.Error as exc:
            raise SubjectStoreError(f"consent archive purge failed: {exc}") from None
        return gone

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _utc(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ArchivedConsent:
    """A consent as archived; times are Unix seconds (UTC)."""

    consent_id: str
    compact_jws: str
    agency_id: str
    #: The subject's keyed pseudonym (as in the audit log).
    subject_key: str
    expires_at: int
    archived_at: int
    retain_until: int

    @property
    def archived_at_utc(self) -> str:
        """:attr:`archived_at` as RFC 3339."""
        return _utc(self.archived_at)

    @property
    def retain_until_utc(self) -> str:
        """:attr:`retain_until` as RFC 3339."""
        return _utc(self.retain_until)


def _archive_key(pseudonym_key: bytes, retention_days: int) -> bytes:
    """The archive's AES-256 key (HKDF-SHA256 of ``pseudonym_key``, RFC 5869), once the
    settings are checked. Raises ConfigError: the retention is not positive, or the
    pseudonym key is shorter than 32 bytes."""
    if retention_days <= 0:
        raise ConfigError("consent_retention_days", "must be a positive number of days")
    if len(pseudonym_key) < 32:
        raise ConfigError("audit.pseudonym_key", "shorter than 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(pseudonym_key)


class ConsentArchive:
    """The archive over its rows (see the module docstring). Thread-safe."""

    def __init__(
        self,
        rows: ConsentRows,
        key: bytes,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rows = rows
        self._aead = AESGCM(key)
        self.retention_days = retention_days
        self._clock = clock
        self._lock = threading.Lock()
        self._known: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def open(
        cls,
        path: Path,
        pseudonym_key: bytes,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> ConsentArchive:
        """Open (or create, owner-only) the archive at ``path``; its encryption key is
        derived from ``pseudonym_key`` (at least 32 bytes).

        Raises:
            ConfigError: the file cannot be opened, or the retention is not positive.
        """
        key = _archive_key(pseudonym_key, retention_days)  # before a file is made
        try:
            if not path.exists():
                # Owner-only from the first byte: the file holds personal data.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = open_durable(path, schema=_SCHEMA)
        except (OSError, sqlite3.Error, SQLiteSetupError) as exc:
            raise ConfigError(
                "consent_archive", f"cannot open the consent archive: {exc}"
            ) from None
        return cls._checked(_SQLiteRows(conn), key, retention_days, clock)

    @classmethod
    def over(
        cls,
        rows: ConsentRows,
        pseudonym_key: bytes,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> ConsentArchive:
        """The archive over ``rows`` (a backend's storage), its key derived from
        ``pseudonym_key`` (at least 32 bytes) and checked against the one the storage was
        first opened with.

        Raises:
            ConfigError: the retention is not positive, the key is short, or the storage
                was opened with another pseudonym key (shared by hosts: they must share it).
            SubjectStoreError: the storage cannot be read.
        """
        key = _archive_key(pseudonym_key, retention_days)
        return cls._checked(rows, key, retention_days, clock)

    @classmethod
    def _checked(
        cls, rows: ConsentRows, key: bytes, retention_days: int, clock: Callable[[], float]
    ) -> ConsentArchive:
        """The archive over ``rows`` once ``key`` is the one they were first opened with.
        Raises ConfigError (another key), SubjectStoreError."""
        check = hmac.new(key, _KEY_CHECK, hashlib.sha256).digest()
        if not rows.check_key(check):
            raise ConfigError(
                "audit.pseudonym_key",
                "the shared consent archive was opened with another pseudonym key: every "
                "host must use the same one (consents it archived could not be read back)",
            )
        return cls(rows, key, retention_days=retention_days, clock=clock)

    async def keep(
        self,
        consent_id: str,
        compact_jws: str,
        *,
        agency_id: str,
        subject_key: str,
        expires_at: int,
    ) -> None:
        """Archive a consent a query uses (idempotent: the first archived copy is kept).
        Returns once durable; a consent already archived costs no write.

        Raises:
            SubjectStoreError: it cannot be written (the query must then be refused).
        """
        with self._lock:
            if consent_id in self._known:
                self._known.move_to_end(consent_id)
                return
        await asyncio.to_thread(
            self._keep, consent_id, compact_jws, agency_id, subject_key, int(expires_at)
        )
        with self._lock:
            self._known[consent_id] = None
            while len(self._known) > _MEMO:
                self._known.popitem(last=False)

    def _keep(
        self, consent_id: str, jws: str, agency_id: str, subject_key: str, expires_at: int
    ) -> None:
        now = int(self._clock())
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, jws.encode("utf-8"), consent_id.encode("utf-8"))
        retain = max(expires_at, now) + self.retention_days * 86400
        self._rows.insert(
            consent_id, (agency_id, subject_key, expires_at, now, retain, nonce, sealed)
        )

    def get(self, consent_id: str) -> ArchivedConsent | None:
        """The archived consent ``consent_id``, decrypted, or None.

        Raises:
            SubjectStoreError: the archive cannot be read, or a row fails its integrity check.
        """
        row = self._rows.select(consent_id)
        if row is None:
            return None
        agency, subject, expires_at, archived_at, retain_until, nonce, sealed = row
        try:
            jws = self._aead.decrypt(nonce, sealed, consent_id.encode("utf-8"))
        except Exception:  # cryptography's InvalidTag: altered, or another key
            raise SubjectStoreError(
                "an archived consent failed its integrity check (altered, or another key)"
            ) from None
        return ArchivedConsent(
            consent_id=consent_id,
            compact_jws=jws.decode("utf-8"),
            agency_id=str(agency),
            subject_key=str(subject),
            expires_at=int(expires_at),
            archived_at=int(archived_at),
            retain_until=int(retain_until),
        )

    def purge(self, now: float | None = None) -> int:
        """Delete every consent whose retention ended before ``now`` (Unix seconds; default
        the clock); returns how many.

        Raises:
            SubjectStoreError: the archive cannot be written.
        """
        cutoff = int(self._clock() if now is None else now)
        gone = self._rows.purge(cutoff)
        with self._lock:
            for cid in gone:
                self._known.pop(cid, None)
        return len(gone)

    def close(self) -> None:
        """Close the storage."""
        self._rows.close()
