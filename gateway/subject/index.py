"""The subject index: subject pseudonym -> the answered queries about it, by audit index.

"Who looked at me" (Decree 631 Art. 22, FCRA 15 U.S.C. 1681g(a)(3)) and "the queries under
each legal basis" are read from here, never by scanning the audit log. The index is derived
data: every row comes from a query record of the signed log, and the whole index can be
rebuilt from the log (:meth:`QueryIndex.reset`, then :func:`sync_index`).

    index = SQLiteQueryIndex.open(Path("subjects.sqlite"))
    sync_index(index, open_reader(Path("audit.sqlite")))      # catch up with the log
    page = index.for_subject(pseudonym, today="2026-11-30", before=None, limit=50)

**How it is kept current.** :func:`sync_index` reads the log's entries past
:attr:`QueryIndex.scanned_to` (the log's indices are dense and its entries durable and
append-only, so the watermark never skips one) and adds the rows of answered query records
and the new watermark in one transaction. :class:`gateway.subject.service.SubjectIndexer`
runs it in the background (about once a second) and before every listing, so a caller sees
its own latest query. A crash loses nothing: the next sync starts at the stored watermark.
A log with another origin, or shorter than the watermark (a replaced file), empties the index
and starts again from index 0.

**What a row holds.** The subject pseudonym (HMAC-SHA256, as in the log; stored as its 32
bytes), the time, agency, purpose, mode, charge (fen), the datasets that answered, the legal
basis, the case reference as recorded (already under the free-text rule), and the day the
query stops being confidential. Nothing that is not already in the log.

The index sits in its own file (SQLite, WAL, ``synchronous=NORMAL``: a lost tail is read
again from the log) behind the small :class:`QueryIndex` interface; with the audit log on
PostgreSQL, tables every host shares replace it (:mod:`gateway.stores.postgres.subject_index`,
one elected follower). Both backends store a row as this module shapes it
(:func:`index_row`, :func:`indexed_query`, :func:`subject_key`). Every write names the
watermark it started from and lands only if it is still the stored one, so several writers
sharing an index are safe on both backends.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.errors import RecordError
from gateway.audit.records import decode_record
from gateway.audit.store import LogReader
from gateway.errors import ConfigError
from gateway.stores.sqlite import SQLiteSetupError, open_durable
from gateway.subject.errors import SubjectStoreError

__all__ = [
    "INDEX_COLUMNS",
    "IndexedQuery",
    "QueryIndex",
    "SQLiteQueryIndex",
    "before_bound",
    "entry_from_record",
    "index_row",
    "indexed_query",
    "listing_sql",
    "subject_key",
    "sync_index",
]

#: Outcomes of a query that disclosed something (a refusal disclosed nothing).
_ANSWERED = frozenset({"ok", "partial"})


@dataclass(frozen=True, slots=True)
class IndexedQuery:
    """One answered query about a subject, as its audit record holds it."""

    log_index: int
    #: The subject's keyed pseudonym (hex), as in the audit record.
    subject: str
    #: RFC 3339, UTC, as recorded.
    time: str
    agency_id: str
    purpose: str
    #: ``free`` or ``paid``.
    mode: str
    charge_fen: int
    #: ``(department, dataset)`` pairs that answered, sorted.
    datasets: tuple[tuple[str, str], ...]
    legal_basis: str = ""
    case_reference: str = ""
    #: YYYY-MM-DD from which the subject may see it; "" when never hidden.
    confidential_until: str = ""


def entry_from_record(log_index: int, record: Mapping[str, Any]) -> IndexedQuery | None:
    """The row of an audit record, or None if it is not an answered query about a subject
    (another kind, a refusal, a query whose identifier did not validate)."""
    if record.get("kind") != "query" or record.get("outcome") not in _ANSWERED:
        return None
    subject = record.get("subject_pseudonym")
    if not isinstance(subject, str) or not subject:
        return None
    pairs: set[tuple[str, str]] = set()
    departments = record.get("departments")
    if isinstance(departments, Mapping):
        for dept, section in departments.items():
            names = section.get("datasets") if isinstance(section, Mapping) else None
            if isinstance(names, list):
                pairs.update((str(dept), str(n)) for n in names if isinstance(n, str))

    def text(key: str) -> str:
        value = record.get(key)
        return value if isinstance(value, str) else ""

    charge = record.get("charge_fen")
    return IndexedQuery(
        log_index=log_index,
        subject=subject,
        time=text("time"),
        agency_id=text("agency_id"),
        purpose=text("purpose"),
        mode=text("mode"),
        charge_fen=charge if isinstance(charge, int) and not isinstance(charge, bool) else 0,
        datasets=tuple(sorted(pairs)),
        legal_basis=text("legal_basis"),
        case_reference=text("case_reference"),
        confidential_until=text("confidential_until"),
    )


class QueryIndex(ABC):
    """Storage of the subject index. Implementations are thread-safe.

    **Several writers.** Where the index is shared (PostgreSQL: every host's gateway over
    one log), every write names the watermark it started from (``since``) and lands only if
    the stored watermark is still that one, in the transaction that adds the rows: two
    writers can never add one range twice or move the watermark back, whatever they do.
    :meth:`follows` says whether this process should follow the log in the background (on
    PostgreSQL one elected process does; the others only catch up before a listing).
    """

    @property
    @abstractmethod
    def scanned_to(self) -> int:
        """One more than the highest log index read so far (0: nothing read)."""

    @property
    @abstractmethod
    def origin(self) -> str:
        """The origin of the log the index was built from ("" before the first sync)."""

    def watermark(self) -> tuple[int, str]:
        """(:attr:`scanned_to`, :attr:`origin`) as stored now, read together. Raises
        SubjectStoreError."""
        return self.scanned_to, self.origin

    @abstractmethod
    def add(
        self,
        rows: Iterable[IndexedQuery],
        *,
        scanned_to: int,
        origin: str,
        since: int | None = None,
    ) -> bool:
        """Store ``rows`` (idempotent by log index) and the new watermark, in one
        transaction; with ``since``, only if the stored watermark is still ``since``
        (else nothing is written and False is returned: another writer moved it). Raises
        SubjectStoreError."""

    @abstractmethod
    def for_subject(
        self, subject: str, *, today: str, before: int | None, limit: int
    ) -> list[IndexedQuery]:
        """Newest first, log index below ``before``: the queries about ``subject`` not
        confidential on ``today`` (YYYY-MM-DD). Raises SubjectStoreError."""

    @abstractmethod
    def for_basis(self, basis: str, *, before: int | None, limit: int) -> list[IndexedQuery]:
        """Newest first: every query made under ``basis``, confidential or not. Raises
        SubjectStoreError."""

    @abstractmethod
    def reset(self, *, expect: tuple[int, str] | None = None) -> bool:
        """Forget everything (a rebuild follows); with ``expect``, only if the stored
        watermark is still that (scanned_to, origin) (else False, nothing done). Raises
        SubjectStoreError."""

    def follows(self) -> bool:
        """Whether this process should follow the log in the background (the embedded
        index: always; a shared one: while this process is its elected follower). Raises
        SubjectStoreError."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the storage."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    subject BLOB NOT NULL,
    log_index INTEGER NOT NULL,
    time TEXT NOT NULL,
    agency TEXT NOT NULL,
    purpose TEXT NOT NULL,
    mode TEXT NOT NULL,
    charge_fen INTEGER NOT NULL,
    datasets TEXT NOT NULL,
    legal_basis TEXT NOT NULL,
    case_reference TEXT NOT NULL,
    confidential_until TEXT NOT NULL,
    PRIMARY KEY (subject, log_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queries_by_basis ON queries (legal_basis, log_index)
    WHERE legal_basis != '';
"""
#: The row's columns, in the order of :func:`index_row` and :func:`indexed_query` (the
#: same on both backends).
INDEX_COLUMNS = (
    "log_index, subject, time, agency, purpose, mode, charge_fen, datasets, legal_basis, "
    "case_reference, confidential_until"
)


def subject_key(subject: str) -> bytes:
    """How a row stores ``subject`` (both backends): a pseudonym (64 hex digits) as its 32
    bytes (half the index); anything else (a log written under another rule) as its UTF-8
    text, which can never collide with 32 bytes."""
    if len(subject) == 64:
        try:
            return bytes.fromhex(subject)
        except ValueError:
            pass
    return subject.encode("utf-8")


def _subject_text(key: bytes) -> str:
    return key.hex() if len(key) == 32 else key.decode("utf-8", "replace")


def index_row(q: IndexedQuery) -> tuple[object, ...]:
    """The stored row of ``q`` (:data:`INDEX_COLUMNS`; datasets as compact JSON pairs)."""
    return (
        q.log_index,
        subject_key(q.subject),
        q.time,
        q.agency_id,
        q.purpose,
        q.mode,
        q.charge_fen,
        json.dumps([list(p) for p in q.datasets], separators=(",", ":")),
        q.legal_basis,
        q.case_reference,
        q.confidential_until,
    )


def indexed_query(row: Sequence[Any]) -> IndexedQuery:
    """The :class:`IndexedQuery` of a stored row (:data:`INDEX_COLUMNS`), either backend's."""
    pairs = json.loads(row[7])
    return IndexedQuery(
        log_index=int(row[0]),
        subject=_subject_text(bytes(row[1])),
        time=str(row[2]),
        agency_id=str(row[3]),
        purpose=str(row[4]),
        mode=str(row[5]),
        charge_fen=int(row[6]),
        datasets=tuple((str(d), str(s)) for d, s in pairs),
        legal_basis=str(row[8]),
        case_reference=str(row[9]),
        confidential_until=str(row[10]),
    )


def before_bound(before: int | None) -> int:
    """The exclusive upper log index of a listing page (``before``; None: from the newest)."""
    return (1 << 62) if before is None else before


def listing_sql(table: str, mark: str) -> tuple[str, str]:
    """The two listings over ``table`` (``mark``: the backend's placeholder), newest
    first: a subject's queries, not confidential on ``today`` (args: subject key,
    :func:`before_bound`, today, limit), and a legal basis's (args: basis,
    :func:`before_bound`, limit). Written once for both backends."""
    for_subject = (
        f"SELECT {INDEX_COLUMNS} FROM {table} "
        f"WHERE subject = {mark} AND log_index < {mark} "
        f"AND (confidential_until = '' OR confidential_until <= {mark}) "
        f"ORDER BY log_index DESC LIMIT {mark}"
    )
    for_basis = (
        f"SELECT {INDEX_COLUMNS} FROM {table} "
        f"WHERE legal_basis = {mark} AND legal_basis <> '' AND log_index < {mark} "
        f"ORDER BY log_index DESC LIMIT {mark}"
    )
    return for_subject, for_basis


_FOR_SUBJECT, _FOR_BASIS = listing_sql("queries", "?")


class SQLiteQueryIndex(QueryIndex):
    """The index in one SQLite file (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn = conn
        self._path = path
        self._lock = threading.Lock()
        self._scanned, self._origin = self._meta()

    @classmethod
    def open(cls, path: Path) -> SQLiteQueryIndex:
        """Open (or create) the index file.

        Raises:
            ConfigError: the file cannot be opened or is not an index.
        """
        try:
            conn = open_durable(path, schema=_SCHEMA)
            # Derived data: a commit lost in a power cut is read again from the log.
            conn.execute("PRAGMA synchronous=NORMAL")
            # Listings read a subject's few pages: keep the hot ones in memory (32 MiB, the
            # bound on what the index adds to the process). The file is not memory-mapped:
            # a map grows the process's resident memory with the index, query after query
            # (the soak saw 139 MiB at a million), for a read call saved per page.
            conn.execute("PRAGMA cache_size=-32768")
        except (sqlite3.Error, SQLiteSetupError) as exc:
            raise ConfigError("subject_index", f"cannot open the subject index: {exc}") from None
        return cls(conn, path)

    def _meta(self) -> tuple[int, str]:
        rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        return int(rows.get("scanned_to", "0")), str(rows.get("origin", ""))

    @property
    def scanned_to(self) -> int:
        """See :attr:`QueryIndex.scanned_to`."""
        return self._scanned

    @property
    def origin(self) -> str:
        """See :attr:`QueryIndex.origin`."""
        return self._origin

    def watermark(self) -> tuple[int, str]:
        """See :meth:`QueryIndex.watermark` (another process may share the file)."""
        try:
            with self._lock:
                self._scanned, self._origin = self._meta()
                return self._scanned, self._origin
        except sqlite3.Error as exc:
            raise SubjectStoreError(f"subject index read failed: {exc}") from None

    def add(
        self,
        rows: Iterable[IndexedQuery],
        *,
        scanned_to: int,
        origin: str,
        since: int | None = None,
    ) -> bool:
        """See :meth:`QueryIndex.add`."""
        # In key order: the table is clustered by subject, and sorted inserts touch each
        # page once per batch.
        data = sorted((index_row(q) for q in rows), key=lambda r: (r[1], r[0]))
        try:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    if since is not None and self._meta()[0] != since:
                        self._conn.execute("ROLLBACK")
                        self._scanned, self._origin = self._meta()
                        return False
                    self._conn.executemany(
                        f"INSERT OR REPLACE INTO queries ({INDEX_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        data,
                    )
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [("scanned_to", str(scanned_to)), ("origin", origin)],
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._scanned, self._origin = scanned_to, origin
        except sqlite3.Error as exc:
            raise SubjectStoreError(f"subject index write failed: {exc}") from None
        return True

    def _select(self, sql: str, args: Sequence[object]) -> list[IndexedQuery]:
        try:
            with self._lock:
                rows = self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise SubjectStoreError(f"subject index read failed: {exc}") from None
        return [indexed_query(r) for r in rows]

    def for_subject(
        self, subject: str, *, today: str, before: int | None, limit: int
    ) -> list[IndexedQuery]:
        """See :meth:`QueryIndex.for_subject`. One range read: the table is clustered by
        (subject, log index), so a subject's rows lie together on disk."""
        return self._select(
            _FOR_SUBJECT, (subject_key(subject), before_bound(before), today, limit)
        )

    def for_basis(self, basis: str, *, before: int | None, limit: int) -> list[IndexedQuery]:
        """See :meth:`QueryIndex.for_basis`."""
        return self._select(_FOR_BASIS, (basis, before_bound(before), limit))

    def reset(self, *, expect: tuple[int, str] | None = None) -> bool:
        """See :meth:`QueryIndex.reset`."""
        try:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                if expect is not None and self._meta() != expect:
                    self._conn.execute("ROLLBACK")
                    return False
                self._conn.execute("DELETE FROM queries")
                self._conn.execute("DELETE FROM meta")
                self._conn.execute("COMMIT")
                self._scanned, self._origin = 0, ""
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise SubjectStoreError(f"subject index reset failed: {exc}") from None
        return True

    def count(self) -> int:
        """How many queries are indexed (tests, the benchmark)."""
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM queries").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()


#: Times :func:`sync_index` starts again after another writer moved the watermark.
_SYNC_ATTEMPTS = 5


def sync_index(index: QueryIndex, reader: LogReader, *, batch: int = 10_000) -> int:
    """Add the log's entries past the index's watermark; returns how many entries were read.
    Blocking (run it in a thread). A log with another origin than the index's, or shorter
    than its watermark, empties the index first (it is rebuilt from index 0). Where another
    writer shares the index and moves the watermark meanwhile, the sync starts again from
    where that one got to (a few times at most; the other writer is making the progress).

    Raises:
        SubjectStoreError: the index cannot be written.
        StorageError: the log cannot be read.
    """
    origin = reader.origin() or ""
    read = 0
    for _ in range(_SYNC_ATTEMPTS):
        start, known = index.watermark()
        if (known and known != origin) or reader.size() < start:
            if not index.reset(expect=(start, known)):
                continue
            start, known = 0, ""
        n, done = _sync_from(index, reader, origin, start, known, batch)
        read += n
        if done:
            break
    return read


def _sync_from(
    index: QueryIndex, reader: LogReader, origin: str, start: int, known: str, batch: int
) -> tuple[int, bool]:
    """:func:`sync_index` from watermark ``start``: (entries read, whether every write
    landed)."""
    read = 0
    rows: list[IndexedQuery] = []
    mark = start
    last = start - 1
    for entry in reader.iter_entries(start):
        read += 1
        last = entry.index
        try:
            record = decode_record(entry.leaf, canonical=False)
        except RecordError:
            record = {}
        row = entry_from_record(entry.index, record)
        if row is not None:
            rows.append(row)
        if read % batch == 0:
            if not index.add(rows, scanned_to=last + 1, origin=origin, since=mark):
                return read, False
            mark, rows = last + 1, []
    if last + 1 > mark or rows:
        return read, index.add(rows, scanned_to=last + 1, origin=origin, since=mark)
    if not known and origin:
        return read, index.add((), scanned_to=mark, origin=origin, since=mark)
    return read, True
