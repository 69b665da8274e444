"""A generic SQL store driven by a mapping file.

A department plugs an existing SQLite database into the gateway by writing a
TOML mapping, not Python. Per dataset the mapping gives the SQL that selects a
subject's rows (a SELECT with a named ``:subject_id`` parameter), which column
holds the record id, the event end date (negative datasets) and the disputed
flag, and which column feeds which catalog field with which type::

    department = "market"

    [datasets.administrative_penalties]
    subject_types = ["enterprise"]
    sql = "SELECT * FROM penalty WHERE uscc = :subject_id"
    record_id = "id"
    event_end_date = "performed_on"     # negative datasets only
    disputed = "under_objection"        # optional
    [datasets.administrative_penalties.fields]
    decision_number = { column = "decision_no", type = "text" }
    fine_fen = "money_fen"              # short form: the column has the field's name

At start-up the mapping is checked against itself and against the database
(every column it names must be selected by its SQL), and any disagreement
raises :class:`~gateway.errors.ConfigError` naming the key. Per request, the
SQL is built from the mapping only, never from the caller: the mapping's query
becomes a sub-query from which only the wanted columns are selected.

The database is opened read-only (``mode=ro`` URI and ``PRAGMA query_only``):
an adapter answers questions, it never changes the department's records.

**Objections** (Decree 631 Art. 25) and credit-repair applications the gateway routes are
kept in one table of the department's own database, named by the mapping::

    [objections]
    table = "gateway_objections"        # created if absent

That table, and only it, is written, through a second connection that runs only the fixed
statements of :class:`ObjectionTable`. The department answers with its own tools or with
``credit-adapter objection answer`` (it sets ``outcome``, ``answered_on`` and ``note``);
the gateway polls the answer. A correction itself is made in the department's records, as
always, by the department.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.catalog import Catalog
from gateway.domain.files import load_toml
from gateway.errors import ConfigError, NotFoundError
from protos.credit.v1 import common_pb2

from .sdk import (
    OUTCOMES,
    FieldTypeValue,
    LookupResult,
    ObjectionAnswer,
    ReceivedObjection,
    Store,
    StoredRecord,
    SubjectType,
)

__all__ = [
    "FIELD_TYPES",
    "DatasetMapping",
    "FieldMapping",
    "ObjectionTable",
    "SqlMapping",
    "SqlStore",
    "catalog_disagreements",
    "load_mapping",
    "parse_mapping",
]

#: Type names as written in mapping files and the catalog.
FIELD_TYPES: Final[Mapping[str, FieldTypeValue]] = {
    "text": common_pb2.FIELD_TYPE_TEXT,
    "integer": common_pb2.FIELD_TYPE_INTEGER,
    "boolean": common_pb2.FIELD_TYPE_BOOLEAN,
    "date": common_pb2.FIELD_TYPE_DATE,
    "money_fen": common_pb2.FIELD_TYPE_MONEY_FEN,
}
_TYPE_NAMES: Final = {v: k for k, v in FIELD_TYPES.items()}
_SUBJECT_TYPES: Final = ("enterprise", "person")
# Column names are spliced into SQL (quoted): keep them plain identifiers so
# that quoting can never be the weak point.
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SUBJECT_PARAM: Final = re.compile(r":subject_id\b")
_DATASET_KEYS: Final = frozenset(
    {"title", "subject_types", "sql", "record_id", "event_end_date", "disputed", "fields"}
)


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One catalog field and the column that feeds it."""

    name: str
    column: str
    type: FieldTypeValue

    @property
    def type_name(self) -> str:
        """The type as written in the mapping (``money_fen``...)."""
        return _TYPE_NAMES[self.type]


@dataclass(frozen=True, slots=True)
class DatasetMapping:
    """How one dataset is read from the database."""

    name: str
    title: str
    subject_types: frozenset[str]
    sql: str
    record_id: str
    event_end_date: str | None
    disputed: str | None
    fields: Mapping[str, FieldMapping]

    def columns(self) -> dict[str, str]:
        """Every column the mapping names, keyed by the mapping key that names it."""
        key = f"datasets.{self.name}"
        named = {f"{key}.record_id": self.record_id}
        if self.event_end_date is not None:
            named[f"{key}.event_end_date"] = self.event_end_date
        if self.disputed is not None:
            named[f"{key}.disputed"] = self.disputed
        for f in self.fields.values():
            named[f"{key}.fields.{f.name}.column"] = f.column
        return named


@dataclass(frozen=True, slots=True)
class SqlMapping:
    """A parsed mapping file: one department's datasets."""

    department: str
    datasets: Mapping[str, DatasetMapping]
    #: The table of the department's database that holds objections received; None:
    #: this department takes no objections through the adapter.
    objections_table: str | None = None

    def schema(self) -> dict[str, dict[str, FieldTypeValue]]:
        """dataset -> field -> type, as :meth:`adapters.sdk.Store.schema` wants it."""
        return {
            ds.name: {f.name: f.type for f in ds.fields.values()} for ds in self.datasets.values()
        }


def load_mapping(path: Path | str) -> SqlMapping:
    """Read and check a mapping file. Raises :class:`ConfigError`."""
    path = Path(path)
    return parse_mapping(load_toml(path, "mapping"))


def parse_mapping(doc: Mapping[str, Any]) -> SqlMapping:
    """Build a :class:`SqlMapping` from parsed TOML, checking it agrees with itself."""
    unknown = sorted(set(doc) - {"department", "datasets", "description", "objections"})
    if unknown:
        raise ConfigError(unknown[0], "unknown key")
    department = doc.get("department")
    if not isinstance(department, str) or not _IDENTIFIER.match(department):
        raise ConfigError("department", "must be the department's catalog id, e.g. 'market'")
    raw_datasets = doc.get("datasets")
    if not isinstance(raw_datasets, Mapping) or not raw_datasets:
        raise ConfigError("datasets", "missing, empty or not a table")
    datasets = {
        name: _parse_dataset(name, raw, f"datasets.{name}") for name, raw in raw_datasets.items()
    }
    table = None
    raw_objections = doc.get("objections")
    if raw_objections is not None:
        if not isinstance(raw_objections, Mapping):
            raise ConfigError("objections", "must be a table with a key 'table'")
        extra = sorted(set(raw_objections) - {"table"})
        if extra:
            raise ConfigError(f"objections.{extra[0]}", "unknown key")
        table = _column(raw_objections.get("table"), "objections.table", required=True)
        if table is not None and any(
            table.lower() in ds.sql.lower().replace('"', " ").split() for ds in datasets.values()
        ):
            raise ConfigError("objections.table", "must not be a table a dataset reads")
    return SqlMapping(department=department, datasets=datasets, objections_table=table)


def _parse_dataset(name: str, raw: object, key: str) -> DatasetMapping:
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table")
    unknown = sorted(set(raw) - _DATASET_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", "unknown key")
    subject_types = raw.get("subject_types")
    if (
        not isinstance(subject_types, list)
        or not subject_types
        or any(s not in _SUBJECT_TYPES for s in subject_types)
    ):
        raise ConfigError(
            f"{key}.subject_types", "must be a non-empty list of 'enterprise' and/or 'person'"
        )
    sql = raw.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise ConfigError(f"{key}.sql", "missing or empty")
    # It becomes a sub-query: a trailing semicolon would end the statement early.
    sql = sql.strip().rstrip(";").strip()
    if sql.split(None, 1)[0].upper() not in ("SELECT", "WITH"):
        raise ConfigError(f"{key}.sql", "must be a SELECT")
    if not _SUBJECT_PARAM.search(sql):
        raise ConfigError(f"{key}.sql", "must select by the named parameter :subject_id")
    record_id = _column(raw.get("record_id"), f"{key}.record_id", required=True)
    assert record_id is not None
    event_end_date = _column(raw.get("event_end_date"), f"{key}.event_end_date", required=False)
    disputed = _column(raw.get("disputed"), f"{key}.disputed", required=False)
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, Mapping) or not raw_fields:
        raise ConfigError(f"{key}.fields", "missing, empty or not a table")
    fields: dict[str, FieldMapping] = {}
    for fname, fraw in raw_fields.items():
        fkey = f"{key}.fields.{fname}"
        if isinstance(fraw, str):  # short form: field = "type", column named alike
            fraw = {"type": fraw}
        if not isinstance(fraw, Mapping):
            raise ConfigError(fkey, "must be a type name or a table { column, type }")
        extra = sorted(set(fraw) - {"column", "type"})
        if extra:
            raise ConfigError(f"{fkey}.{extra[0]}", "unknown key")
        type_name = fraw.get("type")
        if type_name not in FIELD_TYPES:
            raise ConfigError(
                f"{fkey}.type", f"unknown type {type_name!r}; one of {', '.join(FIELD_TYPES)}"
            )
        column = _column(fraw.get("column", fname), f"{fkey}.column", required=True)
        assert column is not None
        fields[fname] = FieldMapping(name=fname, column=column, type=FIELD_TYPES[str(type_name)])
    title = raw.get("title", name)
    return DatasetMapping(
        name=name,
        title=str(title),
        subject_types=frozenset(subject_types),
        sql=sql,
        record_id=record_id,
        event_end_date=event_end_date,
        disputed=disputed,
        fields=fields,
    )


def _column(value: object, key: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(key, "must name a column (letters, digits, underscore)")
    return value


def catalog_disagreements(mapping: SqlMapping, catalog: Catalog) -> list[str]:
    """Every way ``mapping`` differs from the published catalog, as
    ``key: problem`` lines; empty when they agree exactly.

    Exactly: same datasets, same subject types, same fields with the same
    types, and an event end date column for each negative dataset and only
    for those (ageing needs it; elsewhere it would mean nothing).
    """
    problems: list[str] = []
    dept = catalog.departments.get(mapping.department)
    if dept is None:
        return [f"department: {mapping.department!r} is not in catalog {catalog.version}"]
    for name in sorted(set(dept.datasets) - set(mapping.datasets)):
        problems.append(f"datasets.{name}: in the catalog but not mapped")
    for name in sorted(set(mapping.datasets) - set(dept.datasets)):
        problems.append(f"datasets.{name}: mapped but not in the catalog")
    for name, ds in mapping.datasets.items():
        cat = dept.datasets.get(name)
        if cat is None:
            continue
        key = f"datasets.{name}"
        if ds.subject_types != cat.subject_types:
            problems.append(
                f"{key}.subject_types: {sorted(ds.subject_types)} but the catalog says "
                f"{sorted(cat.subject_types)}"
            )
        if cat.negative and ds.event_end_date is None:
            problems.append(f"{key}.event_end_date: a negative dataset needs one (Art. 16)")
        if not cat.negative and ds.event_end_date is not None:
            problems.append(f"{key}.event_end_date: the catalog says this is not negative")
        for fname in sorted(set(cat.fields) - set(ds.fields)):
            problems.append(f"{key}.fields.{fname}: in the catalog but not mapped")
        for fname in sorted(set(ds.fields) - set(cat.fields)):
            problems.append(f"{key}.fields.{fname}: mapped but not in the catalog")
        for fname, f in ds.fields.items():
            cf = cat.fields.get(fname)
            if cf is not None and cf.type != f.type:
                problems.append(
                    f"{key}.fields.{fname}.type: {f.type_name} but the catalog says "
                    f"{_TYPE_NAMES.get(common_pb2.FieldType.ValueType(cf.type), cf.type)}"
                )
    return problems


def _quote(column: str) -> str:
    return f'"{column}"'


_STATES: Final = ", ".join(f"'{o}'" for o in OUTCOMES)


class ObjectionTable:
    """The one table of a department's database the adapter writes: objections received.

    Blocking (SQLite); :class:`SqlStore` calls it from its pool and the ``credit-adapter
    objection`` commands call it directly. Every statement is fixed here; the table name
    comes from the mapping and is a plain identifier. Raises ``sqlite3.Error``.
    """

    def __init__(self, db_path: Path | str, table: str) -> None:
        if not _IDENTIFIER.match(table):
            raise ConfigError("objections.table", "must be a plain identifier")
        self.table = _quote(table)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(Path(db_path), check_same_thread=False, timeout=5.0)
        self._conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.table} (
                objection_id    TEXT PRIMARY KEY,
                kind            TEXT NOT NULL CHECK (kind IN ('objection', 'repair')),
                subject_type    TEXT NOT NULL,
                subject_id      TEXT NOT NULL,
                dataset         TEXT NOT NULL,
                record_id       TEXT NOT NULL,
                grounds         TEXT NOT NULL,
                evidence_sha256 TEXT NOT NULL,
                filed_on        TEXT NOT NULL,
                due_on          TEXT NOT NULL,
                outcome         TEXT NOT NULL DEFAULT 'pending' CHECK (outcome IN ({_STATES})),
                answered_on     TEXT,
                note            TEXT NOT NULL DEFAULT ''
            )"""
        )
        self._conn.commit()

    def receive(self, objection: ReceivedObjection) -> bool:
        """Keep ``objection``; False if its id was kept before (the first one stays)."""
        with self._lock, self._conn:
            cur = self._conn.execute(
                f"INSERT OR IGNORE INTO {self.table} (objection_id, kind, subject_type,"
                " subject_id, dataset, record_id, grounds, evidence_sha256, filed_on, due_on)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    objection.objection_id,
                    objection.kind,
                    objection.subject_type,
                    objection.subject_id,
                    objection.dataset,
                    objection.record_id,
                    objection.grounds,
                    ",".join(objection.evidence_sha256),
                    objection.filed_on,
                    objection.due_on,
                ),
            )
            return cur.rowcount == 1

    def answer_of(self, objection_id: str) -> ObjectionAnswer | None:
        """The answer so far, or None for an id never received."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT outcome, answered_on, note FROM {self.table} WHERE objection_id = ?",
                (objection_id,),
            ).fetchone()
        if row is None:
            return None
        return ObjectionAnswer(outcome=row[0], answered_on=row[1], note=row[2] or "")

    def answer(
        self, objection_id: str, outcome: str, *, note: str = "", on: dt.date | None = None
    ) -> bool:
        """The department answers: set ``outcome`` (a key of :data:`~adapters.sdk.OUTCOMES`
        other than ``pending``), the day and its account. False for an unknown id.
        Raises ValueError for an unknown outcome."""
        if outcome not in OUTCOMES or outcome == "pending":
            raise ValueError(f"outcome must be one of {', '.join(list(OUTCOMES)[1:])}")
        day = (on or dt.date.today()).isoformat()
        with self._lock, self._conn:
            cur = self._conn.execute(
                f"UPDATE {self.table} SET outcome = ?, answered_on = ?, note = ?"
                " WHERE objection_id = ?",
                (outcome, day, note, objection_id),
            )
            return cur.rowcount == 1

    def pending(self) -> list[tuple[str, str, str, str, str]]:
        """Objections not yet answered: (id, kind, dataset, record id, due on), oldest due
        first (the department's work list)."""
        with self._lock:
            return [
                tuple(r)
                for r in self._conn.execute(
                    f"SELECT objection_id, kind, dataset, record_id, due_on FROM {self.table}"
                    " WHERE outcome = 'pending' ORDER BY due_on, objection_id"
                )
            ]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class SqlStore(Store):
    """A read-only :class:`~adapters.sdk.Store` over one SQLite file.

    Construction opens the file and checks the mapping against it (blocking,
    once, at start-up), and creates the mapping's objections table if absent
    (``take_objections=False``: a read-only check that neither creates nor serves it).
    Lookups run on a small thread pool, each thread with
    its own connection, so the event loop never waits for SQLite.
    """

    def __init__(
        self,
        mapping: SqlMapping,
        db_path: Path | str,
        *,
        workers: int = 4,
        take_objections: bool = True,
    ) -> None:
        self.department = mapping.department
        self.mapping = mapping
        path = Path(db_path)
        if not path.is_file():
            raise ConfigError("db", f"no database file at {path}")
        # as_uri() percent-encodes the path; mode=ro refuses writes at the
        # file level, query_only (below) at the statement level.
        self._uri = path.resolve().as_uri() + "?mode=ro"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"sql-{mapping.department}"
        )
        self._schema = mapping.schema()
        self._objections: ObjectionTable | None = None
        try:
            if mapping.objections_table is not None and take_objections:
                self._objections = ObjectionTable(path, mapping.objections_table)
            self._check(self._connection())
        except BaseException:
            self._close_connections()
            self._pool.shutdown(wait=False)
            raise

    def schema(self) -> Mapping[str, Mapping[str, FieldTypeValue]]:
        """From the mapping."""
        return self._schema

    async def lookup(
        self, subject_type: SubjectType, subject_id: str, wanted: Mapping[str, Sequence[str]]
    ) -> LookupResult:
        """Run the wanted datasets' queries in the pool; see :meth:`_lookup`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self._lookup, subject_type, subject_id, dict(wanted)
        )

    async def close(self) -> None:
        """Stop the pool and close every connection."""
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        self._close_connections()

    async def receive_objection(self, objection: ReceivedObjection) -> bool:
        """Keep it in the mapping's objections table (UNIMPLEMENTED without one)."""
        table = self._objections
        if table is None:
            return await super().receive_objection(objection)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, table.receive, objection)

    async def objection_answer(self, objection_id: str) -> ObjectionAnswer:
        """Read from the objections table. Raises NotFoundError for an unknown id."""
        table = self._objections
        if table is None:
            return await super().objection_answer(objection_id)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._pool, table.answer_of, objection_id)
        if answer is None:
            raise NotFoundError("no objection with this id was received")
        return answer

    # --- in a pool thread ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                # check_same_thread=False only so that close() may close it
                # from another thread; each connection is used by one thread.
                conn = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
                conn.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise ConfigError("db", f"cannot open {self._uri} read-only: {exc}") from None
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _check(self, conn: sqlite3.Connection) -> None:
        """Every column the mapping names must be selected by its dataset's SQL."""
        params = {"subject_id": "", "subject_type": ""}
        for ds in self.mapping.datasets.values():
            try:
                cur = conn.execute(f"SELECT * FROM ({ds.sql}) LIMIT 0", params)
            except sqlite3.Error as exc:
                raise ConfigError(f"datasets.{ds.name}.sql", f"does not run: {exc}") from None
            selected = {d[0] for d in cur.description}
            cur.close()
            for key, column in ds.columns().items():
                if column not in selected:
                    raise ConfigError(
                        key,
                        f"column {column!r} is not selected by datasets.{ds.name}.sql "
                        f"(it selects {', '.join(sorted(selected))})",
                    )

    def _lookup(
        self, subject_type: SubjectType, subject_id: str, wanted: dict[str, Sequence[str]]
    ) -> LookupResult:
        conn = self._connection()
        params = {"subject_id": subject_id, "subject_type": subject_type}
        records: dict[str, list[StoredRecord]] = {}
        for name, fields in wanted.items():
            ds = self.mapping.datasets[name]
            if subject_type not in ds.subject_types:
                records[name] = []  # holds no such subjects: nothing to find
                continue
            records[name] = self._select(conn, ds, fields, params)
        known = any(records.values()) or self._known_elsewhere(conn, subject_type, params, wanted)
        return LookupResult(records=records, subject_known=known)

    def _select(
        self,
        conn: sqlite3.Connection,
        ds: DatasetMapping,
        fields: Sequence[str],
        params: Mapping[str, str],
    ) -> list[StoredRecord]:
        # Only the wanted columns leave the sub-query, so SQLite does not read
        # (or decode) the others; the names come from the mapping alone.
        columns = [ds.record_id, ds.event_end_date or ds.record_id, ds.disputed or ds.record_id]
        columns += [ds.fields[f].column for f in fields]
        sql = f"SELECT {', '.join(map(_quote, columns))} FROM ({ds.sql}) AS src"
        out = []
        for row in conn.execute(sql, params):
            out.append(
                StoredRecord(
                    record_id=str(row[0]),
                    event_end_date=row[1] if ds.event_end_date else None,
                    disputed=bool(row[2]) if ds.disputed else False,
                    fields=dict(zip(fields, row[3:], strict=True)),
                )
            )
        return out

    def _known_elsewhere(
        self,
        conn: sqlite3.Connection,
        subject_type: SubjectType,
        params: Mapping[str, str],
        already: Mapping[str, Sequence[str]],
    ) -> bool:
        """Whether any dataset not already queried holds the subject."""
        for ds in self.mapping.datasets.values():
            if ds.name in already or subject_type not in ds.subject_types:
                continue
            if conn.execute(f"SELECT 1 FROM ({ds.sql}) LIMIT 1", params).fetchone():
                return True
        return False

    def _close_connections(self) -> None:
        if self._objections is not None:
            self._objections.close()
            self._objections = None
        with self._lock:
            conns, self._connections = self._connections, []
        for conn in conns:
            conn.close()
