"""The subject index on PostgreSQL: :class:`PgQueryIndex`, the shared backend of
:class:`~gateway.subject.index.QueryIndex` ("who looked at me", Decree 631 Art. 22).

    index = PgQueryIndex(open_pool(target), target=target, identity="host:pid")
    sync_index(index, PostgresAuditStore(audit_target))   # catch up with the shared log
    index.for_subject(pseudonym, today="2026-11-30", before=None, limit=50)

Tables ``subject_queries`` and ``subject_index_state`` (migration ``0031_subject_index``).
With the audit log on PostgreSQL every host answers queries into one log; the index over
it is one too, so a subject listing on any host lists the queries every host answered.

**One follower, any reader.** One process follows the log in the background: the holder
of a session advisory lock (:data:`FOLLOWER_LOCK`) on a connection of its own, never a
pooled one, with TCP keepalives and ``idle_session_timeout``, so the lock is freed when its
process dies (at once for a killed one; within about 15 s for a vanished host) and another
process takes over at its next round (:meth:`PgQueryIndex.follows`). The others only read,
and catch up the tail before a listing (so a caller sees its own latest query without
waiting for the follower). Correctness does not rest on the election: every write
compares and moves the one watermark row in the transaction that adds the rows
(:meth:`PgQueryIndex.add`), so two writers never add a range twice nor move the watermark
back, and a rebuild (:meth:`PgQueryIndex.reset`) happens only against the watermark that
called for it.

The index is derived data: ``synchronous_commit`` is the server's, and a commit lost in a
crash is read again from the log. Errors are
:class:`~gateway.subject.errors.SubjectStoreError` naming the SQLSTATE only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.stores.postgres.url import PgConfigError, PgTarget
from gateway.subject.errors import SubjectStoreError
from gateway.subject.index import IndexedQuery, QueryIndex

__all__ = ["FOLLOWER_LOCK", "FOLLOWER_SESSION_TIMEOUT_S", "PgQueryIndex"]

#: pg_try_advisory_lock(classid, objid) of the index's follower ("cgsi", 1).
FOLLOWER_LOCK = (0x6367_7369, 1)
#: The server ends a follower's session idle this long (seconds; the follower speaks
#: about once a second), freeing the lock if its process hangs.
FOLLOWER_SESSION_TIMEOUT_S = 15
_KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
              "keepalives_count": 3}  # fmt: skip
_COLUMNS = (
    "log_index, subject, time, agency, purpose, mode, charge_fen, datasets, legal_basis, "
    "case_reference, confidential_until"
)
_TYPES = [
    "bigint",
    "bytea",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "text",
    "text",
    "text",
]
#: Batches larger than this many rows go by COPY (a rebuild), smaller ones by one statement.
_COPY_ABOVE = 500
_INSERT = (
    f"INSERT INTO subject_queries ({_COLUMNS}) SELECT * FROM unnest("
    "%s::bigint[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
    " ON CONFLICT (subject, log_index) DO NOTHING"
)


def _subject_key(subject: str) -> bytes:
    # As the SQLite index: a pseudonym (64 hex digits) as its 32 bytes, anything else as
    # its text (which can never collide with 32 bytes).
    if len(subject) == 64:
        try:
            return bytes.fromhex(subject)
        except ValueError:
            pass
    return subject.encode("utf-8")


def _subject_text(key: bytes) -> str:
    return key.hex() if len(key) == 32 else key.decode("utf-8", "replace")


def _query(row: Sequence[Any]) -> IndexedQuery:
    return IndexedQuery(
        log_index=int(row[0]),
        subject=_subject_text(bytes(row[1])),
        time=str(row[2]),
        agency_id=str(row[3]),
        purpose=str(row[4]),
        mode=str(row[5]),
        charge_fen=int(row[6]),
        datasets=tuple((str(d), str(s)) for d, s in json.loads(row[7])),
        legal_basis=str(row[8]),
        case_reference=str(row[9]),
        confidential_until=str(row[10]),
    )


def _before(before: int | None) -> int:
    return (1 << 62) if before is None else before


class PgQueryIndex(QueryIndex):
    """See the module docstring. ``pool``: connections to a migrated database (closed by
    :meth:`close` when ``owns_pool``); ``target``: where the follower's own connection goes
    (None: this process never follows in the background, it only catches up on demand).
    Thread-safe."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        *,
        target: PgTarget | None = None,
        owns_pool: bool = True,
    ) -> None:
        self._pool = pool
        self._target = target
        self._owns_pool = owns_pool
        self._flock = threading.Lock()
        self._follower: psycopg.Connection[Any] | None = None

    @contextmanager
    def _tx(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except PoolTimeout:
            raise SubjectStoreError(f"subject index {what} failed: database unreachable") from None
        except psycopg.Error as err:
            raise SubjectStoreError(
                f"subject index {what} failed (SQLSTATE {err.sqlstate or 'none'})"
            ) from None

    # --- the watermark ---------------------------------------------------------------------

    def watermark(self) -> tuple[int, str]:
        """See :meth:`QueryIndex.watermark`: the one state row, as committed now."""
        with self._tx("read") as conn:
            row = conn.execute(
                "SELECT scanned_to, origin FROM subject_index_state WHERE one = 1"
            ).fetchone()
        if row is None:
            raise SubjectStoreError("the subject index's schema is not migrated")
        return int(row[0]), str(row[1])

    @property
    def scanned_to(self) -> int:
        """See :attr:`QueryIndex.scanned_to` (read from the database)."""
        return self.watermark()[0]

    @property
    def origin(self) -> str:
        """See :attr:`QueryIndex.origin` (read from the database)."""
        return self.watermark()[1]

    @staticmethod
    def _locked_state(conn: psycopg.Connection[Any]) -> tuple[int, str]:
        row = conn.execute(
            "SELECT scanned_to, origin FROM subject_index_state WHERE one = 1 FOR UPDATE"
        ).fetchone()
        if row is None:
            raise SubjectStoreError("the subject index's schema is not migrated")
        return int(row[0]), str(row[1])

    # --- writing ---------------------------------------------------------------------------

    def add(
        self,
        rows: Iterable[IndexedQuery],
        *,
        scanned_to: int,
        origin: str,
        since: int | None = None,
    ) -> bool:
        """See :meth:`QueryIndex.add`: one statement for the whole batch; the state row is
        locked first, so concurrent writers take turns and the loser finds it moved."""
        data = [
            (
                q.log_index,
                _subject_key(q.subject),
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
            for q in rows
        ]
        with self._tx("write") as conn:
            stored, _ = self._locked_state(conn)
            if since is not None and stored != since:
                return False
            if len(data) > _COPY_ABOVE:
                # A rebuild's batches: COPY (binary) into a scratch table, then one insert
                # that skips what is there; about three times the unnest statement's rate.
                conn.execute(
                    "CREATE TEMP TABLE subject_batch (LIKE subject_queries) ON COMMIT DROP"
                )
                with conn.cursor().copy(
                    f"COPY subject_batch ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(_TYPES)
                    for values in data:
                        copy.write_row(values)
                conn.execute(
                    f"INSERT INTO subject_queries ({_COLUMNS}) SELECT {_COLUMNS}"
                    " FROM subject_batch ON CONFLICT (subject, log_index) DO NOTHING"
                )
            elif data:
                conn.execute(_INSERT, [list(column) for column in zip(*data, strict=True)])
            conn.execute(
                "UPDATE subject_index_state SET scanned_to = %s, origin = %s, updated_at = now()"
                " WHERE one = 1",
                (scanned_to, origin),
            )
        return True

    def reset(self, *, expect: tuple[int, str] | None = None) -> bool:
        """See :meth:`QueryIndex.reset`."""
        with self._tx("reset") as conn:
            if expect is not None and self._locked_state(conn) != expect:
                return False
            conn.execute("TRUNCATE subject_queries")
            conn.execute(
                "UPDATE subject_index_state SET scanned_to = 0, origin = '', updated_at = now()"
                " WHERE one = 1"
            )
        return True

    # --- reading ---------------------------------------------------------------------------

    def _select(self, sql: str, args: Sequence[object]) -> list[IndexedQuery]:
        with self._tx("read") as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_query(r) for r in rows]

    def for_subject(
        self, subject: str, *, today: str, before: int | None, limit: int
    ) -> list[IndexedQuery]:
        """See :meth:`QueryIndex.for_subject`: one range read of the primary key."""
        return self._select(
            f"SELECT {_COLUMNS} FROM subject_queries "
            "WHERE subject = %s AND log_index < %s "
            "AND (confidential_until = '' OR confidential_until <= %s) "
            "ORDER BY log_index DESC LIMIT %s",
            (_subject_key(subject), _before(before), today, limit),
        )

    def for_basis(self, basis: str, *, before: int | None, limit: int) -> list[IndexedQuery]:
        """See :meth:`QueryIndex.for_basis`."""
        return self._select(
            f"SELECT {_COLUMNS} FROM subject_queries "
            "WHERE legal_basis = %s AND legal_basis <> '' AND log_index < %s "
            "ORDER BY log_index DESC LIMIT %s",
            (basis, _before(before), limit),
        )

    def count(self) -> int:
        """How many queries are indexed (tests, the benchmark)."""
        with self._tx("read") as conn:
            row = conn.execute("SELECT count(*) FROM subject_queries").fetchone()
        return 0 if row is None else int(row[0])

    # --- the follower ----------------------------------------------------------------------

    def follows(self) -> bool:
        """See :meth:`QueryIndex.follows`: True while this process holds the follower's
        lock on its own connection (taken here when free; checked alive on every call).
        Raises SubjectStoreError when the database cannot be reached."""
        if self._target is None:
            return False
        with self._flock:
            conn = self._follower
            if conn is not None and not conn.closed:
                try:
                    conn.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    self._drop()
            try:
                target = self._target
                conn = psycopg.connect(target.url, autocommit=True, **target.kwargs(), **_KEEPALIVE)
            except (psycopg.Error, PgConfigError) as err:
                code = getattr(err, "sqlstate", None) or type(err).__name__
                raise SubjectStoreError(f"subject index follower cannot connect ({code})") from None
            try:
                # The server notices a vanished client too, and ends a hung one's session.
                conn.execute("SET tcp_keepalives_idle = 5")
                conn.execute("SET tcp_keepalives_interval = 2")
                conn.execute("SET tcp_keepalives_count = 3")
                conn.execute(f"SET idle_session_timeout = '{FOLLOWER_SESSION_TIMEOUT_S}s'")
                row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", FOLLOWER_LOCK).fetchone()
            except psycopg.Error as err:
                conn.close()
                raise SubjectStoreError(
                    f"subject index follower election failed (SQLSTATE {err.sqlstate or 'none'})"
                ) from None
            if row is None or not row[0]:
                conn.close()
                return False
            self._follower = conn
            return True

    def _drop(self) -> None:
        if self._follower is not None:
            with suppress(psycopg.Error):
                self._follower.close()
            self._follower = None

    def close(self) -> None:
        """Give up the follower's lock and close the pool when this index owns it."""
        with self._flock:
            self._drop()
        if self._owns_pool:
            self._pool.close()
