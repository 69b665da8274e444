"""Where the gateway tracks objections and credit-repair applications: a small interface
(:class:`ObjectionStore`) and its embedded SQLite implementation (:class:`SQLiteObjectionStore`).

The PostgreSQL backend every host shares (:mod:`gateway.stores.postgres.objections`)
implements the same abstract methods and reuses this module's folding of marks
(:func:`full_marks`, :func:`updated_marks`), its marks statements (:data:`ALL_MARKS_SQL`,
:func:`changed_marks_sql`), its listing statement (:func:`find_sql`) and its update
statements (:class:`SQLObjectionStore`), so the two cannot drift apart; the desk
(:class:`gateway.objections.desk.ObjectionDesk`) and the query path use nothing else.

What a row holds: the record (department, dataset, record id), the subject as its keyed
pseudonym (HMAC, as in the audit log) and, **only until the department has received the
objection**, its raw identifier (routing needs it; it is blanked once routed: data
minimisation), the grounds and evidence digests, who filed it and when, its 20-day due date,
the department's answer, and the subject's statement (本人声明). No credit record is ever
stored: the gateway holds the objection, never the data objected to.

**Marks for the query path.** :meth:`ObjectionStore.marks` returns an immutable
:class:`Marks` snapshot. The SQLite store bumps ``state.version`` in every transaction that
changes what a query shows (filing, an answer, a statement) and reloads the snapshot only
when that integer changed (one primary-key read, a few microseconds), so a mark set by any
gateway process sharing the file is shown by every other on its next query. Times are Unix
seconds; dates ``YYYY-MM-DD`` in Beijing time (UTC+8, no daylight saving).

**One poller.** :meth:`ObjectionStore.polls` elects the process that polls departments: on
SQLite the holder of an exclusive ``flock`` on ``<store>.poller.lock`` (the gateway processes
of ``serve --workers N`` share the file; the SQLite audit log's writer lock in
:mod:`gateway.stores.sqlite.audit` is the same kernel lock, but refuses a second writer at
its start, where a poller waits its turn), on PostgreSQL a session advisory lock.

Errors: :class:`ObjectionStoreError` (UNAVAILABLE) when the file cannot be read or written;
messages never name a path or an identifier.

Why one module (some 700 lines): the interface, the row and marks types and the SQL both
backends share (marks and listing statements, the folding of marks, the updates of
:class:`SQLObjectionStore`) change together, and the SQLite store beside them is the
reference the PostgreSQL one follows; split, each change would touch every part.
"""

from __future__ import annotations

import abc
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import grpc

from gateway.errors import LocalError
from gateway.stores.sqlite import SQLiteSetupError, ensure_format, open_durable

__all__ = [
    "ALL_MARKS_SQL",
    "MARK_COLUMNS",
    "OBJECTION_COLUMNS",
    "OPEN_OUTCOMES",
    "Mark",
    "Marks",
    "ObjectionFilter",
    "ObjectionRow",
    "ObjectionStore",
    "ObjectionStoreError",
    "OpenObjectionExists",
    "SQLObjectionStore",
    "SQLiteObjectionStore",
    "changed_marks_sql",
    "find_sql",
    "full_marks",
    "objection_row",
    "updated_marks",
]

#: Outcomes under which the department has not answered yet.
OPEN_OUTCOMES = frozenset({"pending"})
#: Outcomes under which an objection's record stays marked disputed (Art. 25).
_MARKED = frozenset({"pending", "undetermined"})
#: Outcomes that clear what earlier objections showed with the record.
_RESET = frozenset({"corrected", "no_such_record"})


class ObjectionStoreError(LocalError):
    """The objection store cannot be read or written (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "OBJECTIONS_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class ObjectionRow:
    """One objection (``kind`` ``"objection"``) or repair application (``"repair"``).

    ``outcome`` is ``pending``, ``corrected``, ``confirmed``, ``undetermined``,
    ``repair_approved``, ``repair_refused`` or ``no_such_record``. ``subject_id`` is empty
    once the department has received it (``routed_at`` set).
    """

    objection_id: str
    request_key: str
    kind: str
    subject_key: str
    subject_type: str
    subject_id: str = field(repr=False)
    department: str
    dataset: str
    record_id: str = field(repr=False)
    grounds: str = field(repr=False)
    evidence_sha256: tuple[str, ...]
    consent_id: str
    filed_by: str
    filed_at: float
    filed_on: str
    due_on: str
    routed_at: float | None = None
    outcome: str = "pending"
    answered_on: str = ""
    note: str = ""
    statement: str = field(default="", repr=False)
    severity: str = ""
    repair_allowed_from: str = ""

    @property
    def open(self) -> bool:
        """Not answered yet."""
        return self.outcome in OPEN_OUTCOMES

    def overdue(self, today: str) -> bool:
        """Still unanswered after its due day (``today``: ISO date, Beijing time)."""
        return self.open and today > self.due_on


@dataclass(frozen=True, slots=True)
class Mark:
    """What a query shows with one record: the dispute mark (``disputed``) and the
    objection behind it, and the subject's statement."""

    objection_id: str
    filed_on: str
    due_on: str
    outcome: str
    disputed: bool
    note: str = ""
    statement: str = ""


@dataclass(frozen=True, slots=True)
class Marks:
    """What queries show, as of one ``version`` of the store (immutable: share it freely).

    ``by_record`` maps (department, dataset, record id, subject pseudonym) to its
    :class:`Mark`; ``repaired`` holds (department, dataset, record id) of approved repairs.
    """

    version: int
    by_record: Mapping[tuple[str, str, str, str], Mark] = field(default_factory=dict)
    repaired: frozenset[tuple[str, str, str]] = frozenset()

    def is_repaired(self, department: str, dataset: str, record_id: str) -> bool:
        """Whether credit repair of this record was approved (it is no longer shared or
        screened)."""
        return (department, dataset, record_id) in self.repaired


@dataclass(frozen=True, slots=True)
class ObjectionFilter:
    """Which objections :meth:`ObjectionStore.find` returns: all conditions that are set.
    ``before``: a page token (``"<filed_at>:<id>"`` of the last row of the previous page)."""

    filed_by: str | None = None
    subject_key: str | None = None
    open_only: bool = False
    overdue_on: str | None = None
    limit: int = 100
    before: tuple[float, str] | None = None


class ObjectionStore(abc.ABC):
    """The interface every backend implements (SQLite here; PostgreSQL in
    :mod:`gateway.stores.postgres.objections`).

    Blocking methods, each one transaction: call them off the event loop
    (``asyncio.to_thread``), except :meth:`marks`, which the query path calls in line.
    All raise :class:`ObjectionStoreError` when the backend fails.
    """

    @abc.abstractmethod
    def create(self, row: ObjectionRow) -> tuple[ObjectionRow, bool]:
        """Insert ``row``; or return the row already filed under its ``request_key``
        (False). Raises :class:`OpenObjectionExists` when another objection of the same kind
        against the record and subject is still open."""

    @abc.abstractmethod
    def get(self, objection_id: str) -> ObjectionRow | None:
        """One row, or None."""

    @abc.abstractmethod
    def find(self, where: ObjectionFilter) -> list[ObjectionRow]:
        """Rows matching ``where``, newest filed first, at most ``where.limit``."""

    @abc.abstractmethod
    def unfinished(self) -> list[ObjectionRow]:
        """Every row not yet routed or not yet answered (the poller's work list)."""

    @abc.abstractmethod
    def routed(self, objection_id: str, at: float) -> bool:
        """The department received it: set ``routed_at`` and blank the raw identifier; True
        only for the first caller (several gateway processes may route the same one)."""

    @abc.abstractmethod
    def answered(self, objection_id: str, outcome: str, answered_on: str, note: str) -> bool:
        """Record the department's answer if the row is still open; True if it was."""

    @abc.abstractmethod
    def note_overdue(self, objection_id: str) -> bool:
        """Flag an open objection as noticed overdue; True only for the first caller (so
        that one process, once, records it)."""

    @abc.abstractmethod
    def set_statement(self, objection_id: str, statement: str) -> ObjectionRow:
        """Attach (or with ``""`` remove) the subject's statement; the updated row.
        Raises KeyError for an unknown id."""

    @abc.abstractmethod
    def polls(self) -> bool:
        """Whether this process is, now, the one that polls departments (routes what is
        unrouted, asks for answers, notes what is overdue): True for one process among those
        sharing the store, elected by a lock the process holds while it lives, so another
        takes over at its next call once the holder is gone. Called by the poller every
        round (it keeps a session alive where the lock needs one). The poller's work is
        idempotent, so the election saves duplicate calls to departments; it is not what
        keeps the records right."""

    @abc.abstractmethod
    def marks(self) -> Marks:
        """The marks as of now (cheap; see :class:`Marks`)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend."""


class OpenObjectionExists(Exception):
    """Another objection of the same kind against the record is still open: ``existing``."""

    def __init__(self, existing: str) -> None:
        super().__init__(existing)
        self.existing = existing


_FORMAT = "objections-1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT OR IGNORE INTO state (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS objections (
    objection_id TEXT PRIMARY KEY,
    request_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('objection', 'repair')),
    subject_key TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    department TEXT NOT NULL,
    dataset TEXT NOT NULL,
    record_id TEXT NOT NULL,
    grounds TEXT NOT NULL,
    evidence_sha256 TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    filed_by TEXT NOT NULL,
    filed_at REAL NOT NULL,
    filed_on TEXT NOT NULL,
    due_on TEXT NOT NULL,
    routed_at REAL,
    outcome TEXT NOT NULL,
    answered_on TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    statement TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL DEFAULT '',
    repair_allowed_from TEXT NOT NULL DEFAULT '',
    overdue_noted INTEGER NOT NULL DEFAULT 0,
    -- The state version of the last change a query shows (incremental reloads of marks).
    changed INTEGER NOT NULL DEFAULT 0
);
-- One open objection (and one open repair) per record and subject.
CREATE UNIQUE INDEX IF NOT EXISTS objections_one_open
    ON objections (kind, department, dataset, record_id, subject_key) WHERE outcome = 'pending';
CREATE INDEX IF NOT EXISTS objections_by_subject ON objections (subject_key, filed_at);
CREATE INDEX IF NOT EXISTS objections_by_filer ON objections (filed_by, filed_at);
CREATE INDEX IF NOT EXISTS objections_by_record ON objections (department, dataset, record_id);
CREATE INDEX IF NOT EXISTS objections_changed ON objections (changed);
CREATE INDEX IF NOT EXISTS objections_unfinished
    ON objections (filed_at) WHERE outcome = 'pending' OR routed_at IS NULL;
"""
#: Every column of :class:`ObjectionRow`, in its field order (:func:`objection_row`).
OBJECTION_COLUMNS = (
    "objection_id, request_key, kind, subject_key, subject_type, subject_id, department,"
    " dataset, record_id, grounds, evidence_sha256, consent_id, filed_by, filed_at, filed_on,"
    " due_on, routed_at, outcome, answered_on, note, statement, severity, repair_allowed_from"
)


#: The columns :func:`full_marks` and :func:`updated_marks` read, in this order.
MARK_COLUMNS = (
    "kind, department, dataset, record_id, subject_key, objection_id,"
    " filed_on, due_on, outcome, note, statement"
)
_MARK_ROWS = f"SELECT {MARK_COLUMNS} FROM objections"
#: Filing order: the order :func:`full_marks` and :func:`updated_marks` need.
_MARK_ORDER = " ORDER BY filed_at, objection_id"
#: Every row :func:`full_marks` folds, in filing order (both backends).
ALL_MARKS_SQL = _MARK_ROWS + _MARK_ORDER


def changed_marks_sql(placeholder: str) -> str:
    """The statement of the rows :func:`updated_marks` needs: every row (filing order) of
    each record with a row changed after the version bound to ``placeholder`` (``?`` on
    SQLite, ``%s`` on PostgreSQL), the one parameter."""
    return (
        f"{_MARK_ROWS} WHERE (department, dataset, record_id) IN (SELECT department, dataset,"
        f" record_id FROM objections WHERE changed > {placeholder}){_MARK_ORDER}"
    )


_CHANGED_MARKS = changed_marks_sql("?")


def _fold(
    rows: Sequence[Sequence[Any]],
) -> tuple[dict[tuple[str, str, str, str], Mark], set[tuple[str, str, str]]]:
    """Marks and approved repairs from objection rows in filing order (:data:`MARK_COLUMNS`)."""
    by_record: dict[tuple[str, str, str, str], Mark] = {}
    repaired: set[tuple[str, str, str]] = set()
    for kind, dept, ds, rid, skey, oid, filed_on, due_on, outcome, note, statement in rows:
        if kind == "repair":
            if outcome == "repair_approved":
                repaired.add((dept, ds, rid))
            continue
        key = (dept, ds, rid, skey)
        if outcome in _RESET:
            # The record changed at its source (or never was): earlier marks and
            # statements addressed what it was.
            by_record.pop(key, None)
            continue
        mark = Mark(
            oid, filed_on, due_on, outcome, outcome in _MARKED, note=note, statement=statement
        )
        before = by_record.get(key)
        # The latest objection decides the mark; a statement given earlier stays shown
        # until a later one replaces it.
        if before is not None and not statement and before.statement:
            mark = replace(mark, statement=before.statement)
        by_record[key] = mark
    # Drop marks that show nothing (a confirmed record without a statement).
    return {k: m for k, m in by_record.items() if m.disputed or m.statement}, repaired


def full_marks(version: int, rows: Sequence[Sequence[Any]]) -> Marks:
    """The marks of a whole store as of ``version``: ``rows`` are every objection row
    (:data:`MARK_COLUMNS`) in filing order (:data:`ALL_MARKS_SQL`). Shared by the backends."""
    by_record, repaired = _fold(rows)
    return Marks(version=version, by_record=by_record, repaired=frozenset(repaired))


def updated_marks(old: Marks, version: int, rows: Sequence[Sequence[Any]]) -> Marks:
    """``old`` brought to ``version``: ``rows`` are every row (:data:`MARK_COLUMNS`, in
    filing order) of each record (department, dataset, record id) that has a row changed
    since ``old.version``. Each such record is recomputed whole, every subject ever marked
    on it included; the others are kept as they were. Shared by the backends."""
    marks = dict(old.by_record)
    repaired = set(old.repaired)
    per_record: dict[tuple[str, str, str], list[Sequence[Any]]] = {}
    for row in rows:
        per_record.setdefault((str(row[1]), str(row[2]), str(row[3])), []).append(row)
    for (dept, ds, rid), record_rows in per_record.items():
        for row in record_rows:
            marks.pop((dept, ds, rid, str(row[4])), None)
        repaired.discard((dept, ds, rid))
        fresh, fresh_repaired = _fold(record_rows)
        marks.update(fresh)
        repaired |= fresh_repaired
    return Marks(version=version, by_record=marks, repaired=frozenset(repaired))


def find_sql(where: ObjectionFilter, mark: str) -> tuple[str, list[object]]:
    """The statement and arguments of :meth:`ObjectionStore.find` with ``mark`` as the
    parameter placeholder (``?`` for SQLite, ``%s`` for psycopg). Shared by the backends."""
    sql = [f"SELECT {OBJECTION_COLUMNS} FROM objections WHERE 1 = 1"]
    args: list[object] = []
    if where.filed_by is not None:
        sql.append(f"AND filed_by = {mark}")
        args.append(where.filed_by)
    if where.subject_key is not None:
        sql.append(f"AND subject_key = {mark}")
        args.append(where.subject_key)
    if where.open_only or where.overdue_on is not None:
        sql.append("AND outcome = 'pending'")
    if where.overdue_on is not None:
        sql.append(f"AND due_on < {mark}")
        args.append(where.overdue_on)
    if where.before is not None:
        sql.append(f"AND (filed_at < {mark} OR (filed_at = {mark} AND objection_id < {mark}))")
        args += [where.before[0], where.before[0], where.before[1]]
    sql.append(f"ORDER BY filed_at DESC, objection_id DESC LIMIT {mark}")
    args.append(where.limit)
    return " ".join(sql), args


def objection_row(r: Sequence[object]) -> ObjectionRow:
    """An :class:`ObjectionRow` from a row of :data:`OBJECTION_COLUMNS` (the evidence
    digests stored as a JSON list). Shared by the backends."""
    values = list(r)
    values[10] = tuple(json.loads(str(values[10])))
    return ObjectionRow(*values)  # type: ignore[arg-type]


class SQLObjectionStore(ObjectionStore):
    """What both SQL backends write alike, statement for statement: routing, an answer,
    the overdue note and a statement. A backend names its parameter placeholder
    (:attr:`placeholder`) and runs one statement in its own transaction (:meth:`_write`)."""

    #: How a statement marks a parameter: ``?`` (SQLite) or ``%s`` (PostgreSQL).
    placeholder: ClassVar[str]

    @abc.abstractmethod
    def _write(self, sql: str, args: Sequence[object], *, bump: str | None) -> int:
        """Run ``sql`` with ``args`` in its own transaction; how many rows it changed.
        ``bump``: the objection id whose change a query shows (a new version, the row
        stamped). Raises ObjectionStoreError."""

    def routed(self, objection_id: str, at: float) -> bool:
        """See :meth:`ObjectionStore.routed`."""
        p = self.placeholder
        return (
            self._write(
                f"UPDATE objections SET routed_at = {p}, subject_id = '' WHERE objection_id = {p}"
                " AND routed_at IS NULL",
                (at, objection_id),
                bump=None,
            )
            == 1
        )

    def answered(self, objection_id: str, outcome: str, answered_on: str, note: str) -> bool:
        """See :meth:`ObjectionStore.answered`. No-such-record also blanks the identifier."""
        p = self.placeholder
        return (
            self._write(
                f"UPDATE objections SET outcome = {p}, answered_on = {p}, note = {p},"
                " routed_at = COALESCE(routed_at, filed_at), subject_id = ''"
                f" WHERE objection_id = {p} AND outcome = 'pending'",
                (outcome, answered_on, note, objection_id),
                bump=objection_id,
            )
            == 1
        )

    def note_overdue(self, objection_id: str) -> bool:
        """See :meth:`ObjectionStore.note_overdue`."""
        # TRUE and NOT read the same on SQLite's integer column and PostgreSQL's boolean.
        return (
            self._write(
                "UPDATE objections SET overdue_noted = TRUE"
                f" WHERE objection_id = {self.placeholder}"
                " AND NOT overdue_noted AND outcome = 'pending'",
                (objection_id,),
                bump=None,
            )
            == 1
        )

    def set_statement(self, objection_id: str, statement: str) -> ObjectionRow:
        """See :meth:`ObjectionStore.set_statement`."""
        p = self.placeholder
        n = self._write(
            f"UPDATE objections SET statement = {p} WHERE objection_id = {p}",
            (statement, objection_id),
            bump=objection_id,
        )
        row = self.get(objection_id)
        if n != 1 or row is None:
            raise KeyError(objection_id)
        return row


class SQLiteObjectionStore(SQLObjectionStore):
    """The embedded backend: one SQLite file (WAL, synchronous FULL, see
    :func:`gateway.stores.sqlite.open_durable`), shared by the gateway processes naming it.
    Thread-safe."""

    placeholder = "?"

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the store. Raises ObjectionStoreError."""
        try:
            self._conn = open_durable(path, schema=_SCHEMA)
            fmt = ensure_format(self._conn, _FORMAT)
        except (sqlite3.Error, SQLiteSetupError) as exc:
            raise ObjectionStoreError(f"cannot open the objection store: {exc}") from None
        if fmt != _FORMAT:
            self._conn.close()
            raise ObjectionStoreError(f"the objection store is of format {fmt}, not {_FORMAT}")
        try:
            # The query path reads marks on the event loop: a connection and a lock of its
            # own, never held across a writer's fsync (WAL readers do not wait for writers).
            self._r = open_durable(path, schema="")
        except (sqlite3.Error, SQLiteSetupError) as exc:
            self._conn.close()
            raise ObjectionStoreError(f"cannot open the objection store: {exc}") from None
        self._lock = threading.Lock()
        self._rlock = threading.Lock()
        self._marks = Marks(version=-1)
        path = Path(path)
        self._poll_path = path.with_name(path.name + ".poller.lock")
        self._poll_guard = threading.Lock()
        self._poll_fd: int | None = None
        self._polling = False

    def _fail(self, exc: sqlite3.Error) -> ObjectionStoreError:
        return ObjectionStoreError(f"the objection store failed: {type(exc).__name__}")

    def _bump(self, objection_id: str) -> None:
        """In the writer's transaction: a new version, and the row stamped with it."""
        self._conn.execute("UPDATE state SET version = version + 1 WHERE id = 1")
        self._conn.execute(
            "UPDATE objections SET changed = (SELECT version FROM state WHERE id = 1)"
            " WHERE objection_id = ?",
            (objection_id,),
        )

    def create(self, row: ObjectionRow) -> tuple[ObjectionRow, bool]:
        """See :meth:`ObjectionStore.create`."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    old = c.execute(
                        f"SELECT {OBJECTION_COLUMNS} FROM objections WHERE request_key = ?",
                        (row.request_key,),
                    ).fetchone()
                    if old is not None:
                        c.execute("COMMIT")
                        return objection_row(old), False
                    clash = c.execute(
                        "SELECT objection_id FROM objections WHERE outcome = 'pending' AND"
                        " kind = ? AND department = ? AND dataset = ? AND record_id = ? AND"
                        " subject_key = ?",
                        (row.kind, row.department, row.dataset, row.record_id, row.subject_key),
                    ).fetchone()
                    if clash is not None:
                        c.execute("COMMIT")
                        raise OpenObjectionExists(str(clash[0]))
                    values = [getattr(row, n.strip()) for n in OBJECTION_COLUMNS.split(",")]
                    values[10] = json.dumps(list(row.evidence_sha256))
                    c.execute(
                        f"INSERT INTO objections ({OBJECTION_COLUMNS}) VALUES"
                        f" ({', '.join('?' * len(values))})",
                        values,
                    )
                    self._bump(row.objection_id)
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
        return row, True

    def get(self, objection_id: str) -> ObjectionRow | None:
        """See :meth:`ObjectionStore.get`."""
        with self._lock:
            try:
                r = self._conn.execute(
                    f"SELECT {OBJECTION_COLUMNS} FROM objections WHERE objection_id = ?",
                    (objection_id,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
        return None if r is None else objection_row(r)

    def find(self, where: ObjectionFilter) -> list[ObjectionRow]:
        """See :meth:`ObjectionStore.find`."""
        sql, args = find_sql(where, "?")
        with self._lock:
            try:
                rows = self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
        return [objection_row(r) for r in rows]

    def unfinished(self) -> list[ObjectionRow]:
        """See :meth:`ObjectionStore.unfinished`."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    f"SELECT {OBJECTION_COLUMNS} FROM objections WHERE outcome = 'pending'"
                    " OR routed_at IS NULL ORDER BY filed_at"
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
        return [objection_row(r) for r in rows]

    def _write(self, sql: str, args: Sequence[object], *, bump: str | None) -> int:
        """See :meth:`SQLObjectionStore._write`."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    n = c.execute(sql, args).rowcount
                    if n and bump is not None:
                        self._bump(bump)
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
        return int(n)

    def polls(self) -> bool:
        """See :meth:`ObjectionStore.polls`: one process polls per store file. With
        ``serve --workers N`` several processes share the file; the poller is the one holding
        an exclusive ``flock`` on ``<store>.poller.lock`` beside it (taken without waiting,
        tried again on each call by the others, kept while the store is open: the kernel
        releases it when the process ends, however it ends). The lock file is made on the
        first call, not at opening, so a tool reading the store makes none. Raises
        ObjectionStoreError when the lock file cannot be made (naming no path)."""
        with self._poll_guard:
            if self._poll_fd is None:
                try:
                    self._poll_fd = os.open(
                        self._poll_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                    )
                except OSError as exc:
                    raise ObjectionStoreError(
                        f"cannot make the poller's lock file ({exc.strerror})"
                    ) from None
            if not self._polling:
                try:
                    # Per open file description: a second store in this very process is
                    # refused as another process is.
                    fcntl.flock(self._poll_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                except OSError as exc:
                    raise ObjectionStoreError(
                        f"cannot lock the poller's lock file ({exc.strerror})"
                    ) from None
                self._polling = True
            return True

    def marks(self) -> Marks:
        """See :class:`Marks`: one integer read, a reload when the version moved."""
        with self._rlock:
            try:
                version = int(
                    self._r.execute("SELECT version FROM state WHERE id = 1").fetchone()[0]
                )
                if version == self._marks.version:
                    return self._marks
                self._marks = self._load()
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
            return self._marks

    def _load(self) -> Marks:
        """The first load reads every row; later ones only the records whose rows changed
        since the snapshot's version (a filing, an answer, a statement), so a change costs
        the query path the rows of one record, not the whole store."""
        old = self._marks
        c = self._r
        c.execute("BEGIN")
        try:
            version = int(c.execute("SELECT version FROM state WHERE id = 1").fetchone()[0])
            if old.version < 0:
                return full_marks(version, c.execute(ALL_MARKS_SQL).fetchall())
            rows = c.execute(_CHANGED_MARKS, (old.version,)).fetchall()
        finally:
            c.execute("COMMIT")
        return updated_marks(old, version, rows)

    def close(self) -> None:
        """Close the connections and give up the poller's lock (idempotent): closing the
        descriptor releases the ``flock``, so another process polls at its next round."""
        with self._lock, self._rlock:
            self._conn.close()
            self._r.close()
        with self._poll_guard:
            if self._poll_fd is not None:
                os.close(self._poll_fd)
                self._poll_fd = None
            self._polling = False
