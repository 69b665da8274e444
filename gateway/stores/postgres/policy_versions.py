"""Policy versions on PostgreSQL: :class:`PgVersionStore`, the shared backend of
:class:`~gateway.policyadmin.store.VersionStore`.

    pool = open_pool(config.storage.target_for("policy"))
    store = PgVersionStore(pool)
    v = store.add_version(files, author="officer_a", reason="grant bank tax arrears", parent=1)

Storage only: the workflow's rules are :class:`~gateway.policyadmin.store.VersionStore`'s.
Tables ``policy_versions``, ``policy_approvals``, ``policy_checks`` and
``policy_activations`` (migration ``0021_policy_versions``) keep the same rules against
hand-written SQL as the SQLite store's triggers (append-only history, four eyes, only an
approved version is activated, only the first activation is a bootstrap). Version numbers
and activation sequence numbers are ``max + 1`` under a table lock, so they have no gaps
(a sequence would leave one per rolled-back draft) and activations are totally ordered.

An activation calls ``live_bump('policy')`` in its own transaction: every gateway process
listening (:mod:`gateway.stores.postgres.notify`) hears of it once it commits.

Every call takes a pooled connection (waiting at most the pool's timeout) and maps driver
errors to :class:`~gateway.policyadmin.errors.PolicyStoreError`, whose message names
neither the server nor a path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.policyadmin.errors import PolicyStoreError
from gateway.policyadmin.store import (
    Activation,
    Approval,
    CheckResult,
    PolicyVersion,
    StoreRefusal,
    VersionStore,
)
from gateway.stores.postgres.connect import pooled_transaction

__all__ = ["PgVersionStore"]

_COLUMNS = "number, content_hash, author, reason, created_at, parent, files"
_ACT = "seq, version, officer, reason, action, at"


class PgVersionStore(VersionStore):
    """Versions in PostgreSQL, shared by every gateway process and host.

    ``pool``: connections to a database migrated to this build
    (``credit-gateway db migrate``); the store closes it on :meth:`close` when
    ``owns_pool``.
    """

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], *, owns_pool: bool = True):
        self._pool = pool
        self._owns_pool = owns_pool

    def _tx(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """One pooled connection in one transaction; integrity refusals propagate for the
        caller to map, other driver errors become PolicyStoreError."""
        return pooled_transaction(
            self._pool,
            PolicyStoreError,
            "the policy store",
            passes=(psycopg.errors.IntegrityError,),
        )

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._tx() as conn:
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        """Close the pool (when this store owns it)."""
        if self._owns_pool:
            self._pool.close()

    # --- storage hooks (the rules are VersionStore's) ---------------------------------------

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """:meth:`_tx` for an insert: an integrity refusal (a trigger, a constraint, a
        lost race) is StoreRefusal."""
        try:
            with self._tx() as conn:
                yield conn
        except psycopg.errors.IntegrityError:
            raise StoreRefusal from None

    def _insert_version(
        self,
        digest: str,
        author: str,
        reason: str,
        at: datetime,
        parent: int | None,
        files_json: str,
    ) -> int:
        with self._write() as conn:
            conn.execute("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute(
                "INSERT INTO policy_versions (number, content_hash, author, reason,"
                " created_at, parent, files)"
                " SELECT COALESCE(MAX(number), 0) + 1, %s, %s, %s, %s, %s, %s"
                " FROM policy_versions RETURNING number",
                (digest, author, reason, at, parent, files_json),
            ).fetchone()
        assert row is not None
        return int(row[0])

    @staticmethod
    def _version(row: tuple[Any, ...]) -> PolicyVersion:
        number, digest, author, reason, created, parent, files = row
        return PolicyVersion(
            int(number),
            str(digest),
            str(author),
            str(reason),
            created,
            None if parent is None else int(parent),
            MappingProxyType(json.loads(files)),
        )

    def _read_version(self, number: int) -> PolicyVersion | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM policy_versions WHERE number = %s", (number,))
        return self._version(rows[0]) if rows else None

    def versions(self) -> list[PolicyVersion]:
        """See :meth:`VersionStore.versions`."""
        rows = self._read(f"SELECT {_COLUMNS} FROM policy_versions ORDER BY number")
        return [self._version(r) for r in rows]

    def _insert_approval(self, number: int, officer: str, reason: str, at: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO policy_approvals (version, officer, reason, at)"
                " VALUES (%s, %s, %s, %s)",
                (number, officer, reason, at),
            )

    def approval(self, number: int) -> Approval | None:
        """See :meth:`VersionStore.approval`."""
        rows = self._read(
            "SELECT version, officer, reason, at FROM policy_approvals WHERE version = %s",
            (number,),
        )
        if not rows:
            return None
        v, officer, reason, at = rows[0]
        return Approval(int(v), str(officer), str(reason), at)

    def _insert_check(self, number: int, kind: str, problems_json: str, at: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO policy_checks (version, kind, problems, at) VALUES (%s, %s, %s, %s)",
                (number, kind, problems_json, at),
            )

    def last_check(self, number: int, kind: str) -> CheckResult | None:
        """See :meth:`VersionStore.last_check`."""
        rows = self._read(
            "SELECT problems, at FROM policy_checks WHERE version = %s AND kind = %s"
            " ORDER BY seq DESC LIMIT 1",
            (number, kind),
        )
        if not rows:
            return None
        return CheckResult(number, kind, tuple(json.loads(rows[0][0])), rows[0][1])

    def _insert_activation(
        self, number: int, officer: str, reason: str, action: str, at: datetime
    ) -> int:
        # The activation and live_bump('policy') commit together: listeners hear of it
        # exactly when it is visible.
        with self._write() as conn:
            # One activation at a time across every process: seq is max + 1 and the
            # bootstrap trigger sees every committed row.
            conn.execute("LOCK TABLE policy_activations IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute(
                "INSERT INTO policy_activations (seq, version, officer, reason, action, at)"
                " SELECT COALESCE(MAX(seq), 0) + 1, %s, %s, %s, %s, %s"
                " FROM policy_activations RETURNING seq",
                (number, officer, reason, action, at),
            ).fetchone()
            conn.execute("SELECT live_bump('policy')")
        assert row is not None
        return int(row[0])

    @staticmethod
    def _activation(row: tuple[Any, ...]) -> Activation:
        seq, v, officer, reason, action, at = row
        return Activation(int(seq), int(v), str(officer), str(reason), str(action), at)

    def active(self) -> Activation | None:
        """See :meth:`VersionStore.active`."""
        rows = self._read(f"SELECT {_ACT} FROM policy_activations ORDER BY seq DESC LIMIT 1")
        return self._activation(rows[0]) if rows else None

    def activations(self) -> list[Activation]:
        """See :meth:`VersionStore.activations`."""
        rows = self._read(f"SELECT {_ACT} FROM policy_activations ORDER BY seq")
        return [self._activation(r) for r in rows]
