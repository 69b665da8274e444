"""Policy versions in an SQLite file (:class:`~gateway.policyadmin.store.VersionStore`):
append-only history, four eyes and activation rules kept by triggers, one durable file
every gateway process of a host shares. The PostgreSQL backend is
:mod:`gateway.stores.postgres.policy_versions`; both run the same contract tests
(tests/contract/test_policy_versions_contract.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from gateway.policyadmin.errors import PolicyStoreError, PolicyWorkflowError
from gateway.policyadmin.store import (
    ACTIONS,
    CHECK_KINDS,
    Activation,
    Approval,
    CheckResult,
    PolicyVersion,
    VersionStore,
    canonical_files,
    check_files,
    content_hash,
    now_utc,
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
        A trigger's refusal surfaces as sqlite3.IntegrityError for the caller to map."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise PolicyStoreError(f"{self.path}: {err}") from None
            try:
                cur = self._conn.execute(sql, args)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return int(cur.lastrowid or 0)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    # --- versions -------------------------------------------------------------------------

    def add_version(
        self,
        files: Mapping[str, str],
        *,
        author: str,
        reason: str,
        parent: int | None,
        now: datetime | None = None,
    ) -> PolicyVersion:
        """See :meth:`VersionStore.add_version`."""
        check_files(files)
        if not author:
            raise InvalidArgumentError("author", "required")
        if not reason.strip():
            raise InvalidArgumentError("reason", "required: say why the policy changes")
        at = now or now_utc()
        digest = content_hash(files)
        try:
            number = self._write(
                "INSERT INTO versions (content_hash, author, reason, created_at, parent, files)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (digest, author, reason, _ts(at), parent, canonical_files(files)),
            )
        except sqlite3.Error as err:
            raise PolicyStoreError(f"{self.path}: {err}") from None
        return PolicyVersion(
            number, digest, author, reason, at, parent, MappingProxyType(dict(files))
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

    def version(self, number: int) -> PolicyVersion:
        """See :meth:`VersionStore.version`."""
        rows = self._read(f"SELECT {self._COLUMNS} FROM versions WHERE number = ?", (number,))
        if not rows:
            raise NotFoundError(f"no policy version {number}")
        version = self._version(rows[0])
        if content_hash(version.files) != version.content_hash:
            # The triggers stop SQL; this catches a file edited below SQLite.
            raise PolicyStoreError(f"policy version {number}: content does not match its hash")
        return version

    def versions(self) -> list[PolicyVersion]:
        """See :meth:`VersionStore.versions`."""
        rows = self._read(f"SELECT {self._COLUMNS} FROM versions ORDER BY number")
        return [self._version(r) for r in rows]

    # --- approvals --------------------------------------------------------------------------

    def approve(
        self, number: int, officer: str, reason: str, *, now: datetime | None = None
    ) -> Approval:
        """See :meth:`VersionStore.approve`."""
        version = self.version(number)
        if officer == version.author:
            raise PermissionDeniedError(
                f"four eyes: {officer} drafted version {number} and cannot approve it; "
                "another security officer must",
                reason="FOUR_EYES",
            )
        if self.approval(number) is not None:
            raise PolicyWorkflowError(
                f"version {number} is already approved", reason="ALREADY_APPROVED"
            )
        at = now or now_utc()
        try:
            self._write(
                "INSERT INTO approvals (version, officer, reason, at) VALUES (?, ?, ?, ?)",
                (number, officer, reason, _ts(at)),
            )
        except sqlite3.IntegrityError:
            # Lost a race with another approval, or the trigger caught what we did not.
            raise PolicyWorkflowError(  # the driver's text names our schema: not for callers
                f"version {number} cannot be approved: the store refused it",
                reason="APPROVAL_REFUSED",
            ) from None
        except sqlite3.Error as err:
            raise PolicyStoreError(f"{self.path}: {err}") from None
        return Approval(number, officer, reason, at)

    def approval(self, number: int) -> Approval | None:
        """See :meth:`VersionStore.approval`."""
        rows = self._read(
            "SELECT version, officer, reason, at FROM approvals WHERE version = ?", (number,)
        )
        if not rows:
            return None
        v, officer, reason, at = rows[0]
        return Approval(int(v), str(officer), str(reason), _dt(at))

    # --- checks -----------------------------------------------------------------------------

    def record_check(
        self, number: int, kind: str, problems: Sequence[str], *, now: datetime | None = None
    ) -> CheckResult:
        """See :meth:`VersionStore.record_check`."""
        if kind not in CHECK_KINDS:
            raise ValueError(f"unknown check kind {kind!r}")
        self.version(number)
        at = now or now_utc()
        try:
            self._write(
                "INSERT INTO checks (version, kind, problems, at) VALUES (?, ?, ?, ?)",
                (number, kind, json.dumps(list(problems), ensure_ascii=False), _ts(at)),
            )
        except sqlite3.Error as err:
            raise PolicyStoreError(f"{self.path}: {err}") from None
        return CheckResult(number, kind, tuple(problems), at)

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

    # --- activations ------------------------------------------------------------------------

    def activate(
        self,
        number: int,
        officer: str,
        reason: str,
        *,
        action: str = "activate",
        now: datetime | None = None,
    ) -> Activation:
        """See :meth:`VersionStore.activate`."""
        if action not in ACTIONS:
            raise ValueError(f"unknown activation action {action!r}")
        self.version(number)
        # The bootstrap version stands approved by whoever deployed the files it was seeded
        # from: a rollback may return to it.
        if (
            action != "bootstrap"
            and self.approval(number) is None
            and not any(a.version == number and a.action == "bootstrap" for a in self.activations())
        ):
            raise PolicyWorkflowError(
                f"version {number} is not approved: another security officer must approve it first",
                reason="NOT_APPROVED",
            )
        at = now or now_utc()
        try:
            seq = self._write(
                "INSERT INTO activations (version, officer, reason, action, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (number, officer, reason, action, _ts(at)),
            )
        except sqlite3.IntegrityError:
            raise PolicyWorkflowError(  # the driver's text names our schema: not for callers
                f"version {number} cannot be activated: the store refused it",
                reason="ALREADY_BOOTSTRAPPED" if action == "bootstrap" else "NOT_APPROVED",
            ) from None
        except sqlite3.Error as err:
            raise PolicyStoreError(f"{self.path}: {err}") from None
        return Activation(seq, number, officer, reason, action, at)

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
