"""Versioned schema migrations for the PostgreSQL stores.

Migrations are the files ``migrations/NNNN_name.sql`` beside this module, applied in
ascending ``NNNN``, each in its own transaction together with its row in
``schema_migrations`` (version, name, SHA-256 of the file, applied_at UTC). Only
``credit-gateway db migrate`` applies them, under a transaction-level advisory lock so
two operators cannot race; a serving process calls :func:`require_current` and refuses
to start on a database that is behind, ahead, or whose applied files were edited since.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

__all__ = [
    "MIGRATION_LOCK",
    "Migration",
    "SchemaMismatch",
    "applied",
    "available",
    "migrate",
    "require_current",
]

#: pg_advisory_xact_lock key held while migrating ("cgmigr" in ASCII).
MIGRATION_LOCK = 0x6367_6D69_6772
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaMismatch(RuntimeError):
    """The database schema is not the one this build expects; the message says what
    to run (``credit-gateway db migrate``) or why not."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``version`` (int), ``name``, ``sql`` and its ``sha256`` hex."""

    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the file's UTF-8 text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """Every migration this build ships, in version order. Raises :class:`ValueError`
    on a misnamed file or a repeated version (a packaging defect)."""
    found: dict[int, Migration] = {}
    for entry in resources.files(__package__ + ".migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _NAME.match(entry.name)
        if m is None:
            raise ValueError(f"migration file misnamed: {entry.name}")
        version = int(m.group(1))
        if version in found:
            raise ValueError(f"two migrations numbered {version:04d}")
        found[version] = Migration(version, m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_CREATE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def applied(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str]]:
    """version -> (name, sha256) of what the database has applied; empty when none."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = cur.fetchone()
        if row is None or not row[0]:
            return {}
        cur.execute("SELECT version, name, sha256 FROM schema_migrations")
        return {int(v): (str(n), str(h)) for v, n, h in cur.fetchall()}


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply every pending migration; returns those applied now (empty when current).

    ``conn`` must not be in autocommit mode. Raises :class:`SchemaMismatch` when an
    applied migration's file changed or the database knows a version this build does
    not (a newer build migrated it), and psycopg errors as the server reports them (the
    failing migration is rolled back whole)."""
    done: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(_CREATE)
    ours = available()
    have = applied(conn)
    _check_known(ours, have)
    for mig in ours:
        if mig.version in have:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if mig.version in applied(conn):  # another operator applied it meanwhile
                continue
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.sha256),
            )
        done.append(mig)
    return done


def _check_known(ours: list[Migration], have: dict[int, tuple[str, str]]) -> None:
    by_version = {m.version: m for m in ours}
    for version, (name, digest) in sorted(have.items()):
        mig = by_version.get(version)
        if mig is None:
            raise SchemaMismatch(
                f"the database has migration {version:04d}_{name}, which this build does "
                "not know: run a build at least as new as the one that migrated it"
            )
        if mig.sha256 != digest:
            raise SchemaMismatch(
                f"migration {version:04d}_{name} was changed after it was applied "
                "(its SHA-256 differs): restore the released file"
            )


def require_current(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`SchemaMismatch` unless every migration of this build, and no
    other, is applied unchanged. A serving process calls this at start-up and never
    migrates by itself."""
    ours = available()
    have = applied(conn)
    _check_known(ours, have)
    pending = [m for m in ours if m.version not in have]
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise SchemaMismatch(
            f"the database schema is behind ({names} not applied): "
            "run `credit-gateway db migrate --config FILE` first"
        )
