"""Policy versions in an SQLite file (:class:`~gateway.policyadmin.store.VersionStore`):
storage only (the workflow's rules are the base class's); the file's triggers keep the same
rules against hand-written SQL (append-only history, four eyes, only approved versions
activated), one durable file every gateway process of a host shares. The PostgreSQL backend is
:mod:`gateway.stores.postgres.policy_versions`; both run the same contract tests
(tests/contract/test_policy_versions_contract.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.policyadmin.errors import PolicyStoreError
from gateway.policyadmin.store import (
    Activation,
    Approval,
    CheckResult,
    PolicyVersion,
    StoreRefusal,
    VersionStore,
)
from gateway.stores.sqlite import SQLiteSetupError, open_durable

__all__ = ["SQLiteVersionStore"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    number INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL,
    author TEXT NOT NULL CHECK (author <> ''),
    reason TEXT NOT NULL CHECK (reason <> ''),
    created_at TEXT NOT NULL,
    parent INTEGER REFERENCES versions(number),
    files TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    version INTEGER PRIMARY KEY REFERENCES versions(number),
    officer TEXT NOT NULL CHECK (officer <> ''),
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES versions(number),
    kind TEXT NOT NULL CHECK (kind IN ('validate', 'test')),
    problems TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES versions(number),
    officer TEXT NOT NULL CHECK (officer <> ''),
    reason TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('bootstrap', 'activate', 'rollback')),
    at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
    BEGIN SELECT RAISE(ABORT, 'policy versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
    BEGIN SELECT RAISE(ABORT, 'policy versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS approvals_no_update BEFORE UPDATE ON approvals
    BEGIN SELECT RAISE(ABORT, 'approvals are immutable'); END;
CREATE TRIGGER IF NOT EXISTS approvals_no_delete BEFORE DELETE ON approvals
    BEGIN SELECT RAISE(ABORT, 'approvals are immutable'); END;
CREATE TRIGGER IF NOT EXISTS approvals_four_eyes BEFORE INSERT ON approvals
    WHEN NEW.officer = (SELECT author FROM versions WHERE number = NEW.version)
    BEGIN SELECT RAISE(ABORT, 'four eyes: the author cannot approve their own version'); END;
CREATE TRIGGER IF NOT EXISTS checks_no_update BEFORE UPDATE ON checks
    BEGIN SELECT RAISE(ABORT, 'check results are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checks_no_delete BEFORE DELETE ON checks
    BEGIN SELECT RAISE(ABORT, 'check results are append-only'); END;
CREATE TRIGGER IF NOT EXISTS activations_no_update BEFORE UPDATE ON activations
    BEGIN SELECT RAISE(ABORT, 'the activation history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS activations_no_delete BEFORE DELETE ON activations
    BEGIN SELECT RAISE(ABORT, 'the activation history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS activations_approved BEFORE INSERT ON activations
    WHEN NEW.action <> 'bootstrap'
         AND NOT EXISTS (SELECT 1 FROM approvals WHERE version = NEW.version)
         AND NOT EXISTS (
             SELECT 1 FROM activations WHERE version = NEW.version AND action = 'bootstrap'
         )
    BEGIN SELECT RAISE(ABORT, 'only an approved version can be activated'); END;
CREATE TRIGGER IF NOT EXISTS activations_bootstrap_first BEFORE INSERT ON activations
    WHEN NEW.action = 'bootstrap' AND EXISTS (SELECT 1 FROM activations)
    BEGIN SELECT RAISE(ABORT, 'only the first activation is a bootstrap'); END;
"""


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


class SQLiteVersionStore(VersionStore):
    """Versions in one SQLite file (WAL; fsync at every commit; triggers keep history
    immutable). Created if absent.

    Raises:
        PolicyStoreError: the file cannot be opened or is not a policy version store.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so that two gateway
            # processes drafting at once get consecutive numbers, not a conflict at COMMIT.
            self._conn = open_durable(
                self.path, schema=_SCHEMA, busy_timeout_s=busy_timeout_ms / 1000
            )
        except SQLiteSetupError as err:
            raise PolicyStoreError(f"{self.path}: {err}") from None
        except sqlite3.Error as err:
            raise PolicyStoreError(
                f"{self.path}: not a usable policy version store ({err})"
            ) from None

    # --- plumbing -------------------------------------------------------------------------

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise PolicyStoreError(f"{self.path}: {err}") from None

    def _write(self, sql: str, args: Sequence[object]) -> int:
        """One statement in its own ``BEGIN IMMEDIATE`` transaction; returns lastrowid.
        A trigger's or constraint's refusal is StoreRefusal (the driver's text names our
        schema: not for callers); any other failure PolicyStoreError."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise PolicyStoreError(f"{self.path}: {err}") from None
            try:
                cur = self._conn.execute(sql, args)
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._conn.execute("ROLLBACK")
                raise StoreRefusal from None
            except sqlite3.Error as err:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise PolicyStoreError(f"{self.path}: {err}") from None
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            return int(cur.lastrowid or 0)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # --- storage hooks (the rules are VersionStore's) ---------------------------------------

    def _insert_version(
        self,
        digest: str,
        author: str,
        reason: str,
        at: datetime,
        parent: int | None,
        files_json: str,
    ) -> int:
        # BEGIN IMMEDIATE serialises drafters: INTEGER PRIMARY KEY takes max + 1.
        return self._write(
            "INSERT INTO versions (content_hash, author, reason, created_at, parent, files)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (digest, author, reason, _ts(at), parent, files_json),
        )

    @staticmethod
    def _version(row: tuple[Any, ...]) -> PolicyVersion:
        number, digest, author, reason, created, parent, files = row
        return PolicyVersion(
            int(number),
            str(digest),
            str(author),
            str(reason),
            _dt(created),
            None if parent is None else int(parent),
            MappingProxyType(json.loads(files)),
        )

    _COLUMNS = "number, content_hash, author, reason, created_at, parent, files"

    def _read_version(self, number: int) -> PolicyVersion | None:
        rows = self._read(f"SELECT {self._COLUMNS} FROM versions WHERE number = ?", (number,))
        return self._version(rows[0]) if rows else None

    def versions(self) -> list[PolicyVersion]:
        """See :meth:`VersionStore.versions`."""
        rows = self._read(f"SELECT {self._COLUMNS} FROM versions ORDER BY number")
        return [self._version(r) for r in rows]

    def _insert_approval(self, number: int, officer: str, reason: str, at: datetime) -> None:
        self._write(
            "INSERT INTO approvals (version, officer, reason, at) VALUES (?, ?, ?, ?)",
            (number, officer, reason, _ts(at)),
        )

    def approval(self, number: int) -> Approval | None:
        """See :meth:`VersionStore.approval`."""
        rows = self._read(
            "SELECT version, officer, reason, at FROM approvals WHERE version = ?", (number,)
        )
        if not rows:
            return None
        v, officer, reason, at = rows[0]
        return Approval(int(v), str(officer), str(reason), _dt(at))

    def _insert_check(self, number: int, kind: str, problems_json: str, at: datetime) -> None:
        self._write(
            "INSERT INTO checks (version, kind, problems, at) VALUES (?, ?, ?, ?)",
            (number, kind, problems_json, _ts(at)),
        )

    def last_check(self, number: int, kind: str) -> CheckResult | None:
        """See :meth:`VersionStore.last_check`."""
        rows = self._read(
            "SELECT problems, at FROM checks WHERE version = ? AND kind = ?"
            " ORDER BY seq DESC LIMIT 1",
            (number, kind),
        )
        if not rows:
            return None
        return CheckResult(number, kind, tuple(json.loads(rows[0][0])), _dt(rows[0][1]))

    def _insert_activation(
        self, number: int, officer: str, reason: str, action: str, at: datetime
    ) -> int:
        return self._write(
            "INSERT INTO activations (version, officer, reason, action, at) VALUES (?, ?, ?, ?, ?)",
            (number, officer, reason, action, _ts(at)),
        )

    _ACT = "seq, version, officer, reason, action, at"

    @staticmethod
    def _activation(row: tuple[Any, ...]) -> Activation:
        seq, v, officer, reason, action, at = row
        return Activation(int(seq), int(v), str(officer), str(reason), str(action), _dt(at))

    def active(self) -> Activation | None:
        """See :meth:`VersionStore.active`."""
        rows = self._read(f"SELECT {self._ACT} FROM activations ORDER BY seq DESC LIMIT 1")
        return self._activation(rows[0]) if rows else None

    def activations(self) -> list[Activation]:
        """See :meth:`VersionStore.activations`."""
        rows = self._read(f"SELECT {self._ACT} FROM activations ORDER BY seq")
        return [self._activation(r) for r in rows]
