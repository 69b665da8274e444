"""One durable SQLite set-up for every store (standard library only).

:func:`open_durable` opens the file a store writes: ``journal_mode=WAL``
(readers never block the writer), ``synchronous=FULL`` (the WAL is fsynced at
every commit, so a write that returned survives power loss, not only a process
crash), a busy timeout (a second process waits for the write lock instead of
failing at once), ``foreign_keys=ON``, and ``isolation_level=None`` (the store
issues ``BEGIN IMMEDIATE``/``COMMIT`` itself, so each of its operations is
exactly one transaction). The store's schema is applied with ``CREATE ... IF
NOT EXISTS`` statements, so older files gain new tables on open.
:func:`ensure_format` stamps and checks the file's format (schema version).
:func:`open_read_only` opens a file that is never written (the auditors' tool).

The functions raise :class:`sqlite3.Error` as SQLite does and
:class:`SQLiteSetupError` when the file opens but cannot be made durable; each
store maps both to its own error type. This module must stay standard library
only: ``credit-audit`` imports it through the audit store.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["SQLiteSetupError", "ensure_format", "open_durable", "open_read_only"]


class SQLiteSetupError(Exception):
    """The file opened but cannot be used durably; the message names why, not the path."""


def open_durable(
    path: str | os.PathLike[str], *, schema: str, busy_timeout_s: float = 5.0
) -> sqlite3.Connection:
    """Open (or create) ``path`` for writing: WAL, ``synchronous=FULL``, busy timeout
    ``busy_timeout_s`` seconds, foreign keys on, autocommit (the caller begins its own
    transactions), then apply ``schema`` (an SQL script of ``IF NOT EXISTS`` statements).

    The connection may be used from any thread; the caller serializes its use.

    Raises:
        SQLiteSetupError: the file cannot be switched to WAL mode (the connection is closed).
        sqlite3.Error: the file cannot be opened, is not a database, or the schema fails.
    """
    conn = sqlite3.connect(
        Path(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
    )
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SQLiteSetupError(f"cannot switch to WAL mode ({mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(schema)
    except BaseException:
        conn.close()
        raise
    return conn


def open_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open an existing ``path`` read-only (SQLite ``mode=ro``): nothing is ever written,
    not even a schema. Raises sqlite3.Error if it cannot be opened."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def ensure_format(conn: sqlite3.Connection, expected: str) -> str:
    """Stamp a new file with format ``expected`` in its ``meta (key, value)`` table and
    return the format the file carries (``expected`` unless it was made by another
    version; the caller refuses a mismatch). Raises sqlite3.Error."""
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?)", (expected,))
    return str(conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0])
