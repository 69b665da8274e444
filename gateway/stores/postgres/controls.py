"""The live security controls on PostgreSQL: :class:`PgControlsStore`, the shared backend
of :class:`~gateway.controls.store.ControlsStore` (every gateway process on every host).

    store = PgControlsStore(open_pool(config.storage.target_for("controls")))
    listener.subscribe("controls", store.refresh)
    store.follow(listener)
    store.snapshot().agency_suspended("bank_x")

Tables ``controls_*`` (migration ``0022_controls``). Every write that changes a set
calls ``live_bump('controls')`` in its own transaction, so each process's listener
(:mod:`gateway.stores.postgres.notify`) reloads the sets once it commits.

**Snapshots.** Followed by a listener, :meth:`PgControlsStore.snapshot` costs nothing on
the query path (the sets are reloaded on the listener's thread when their version
moves) and raises :class:`~gateway.stores.postgres.notify.LiveStateStaleError`
(UNAVAILABLE) once the listener is stale past its bound: a revocation made elsewhere is
never ignored for longer than that. Without a listener (command-line tools, tests) each
call reads the version, one primary-key lookup, and reloads when it moved.

**Use counts** are atomic across hosts: ``INSERT ... ON CONFLICT DO NOTHING`` then
``UPDATE ... SET uses = uses + 1 WHERE uses < max_uses RETURNING uses`` in one
transaction (the row lock serialises concurrent uses of one consent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.controls.store import (
    CertificateRevocation,
    ConsentStatus,
    ControlsSnapshot,
    ControlsStore,
    ControlsStoreError,
    consent_status_of,
)
from gateway.errors import ConflictError, NotFoundError, PermissionDeniedError
from gateway.stores.postgres.connect import pooled_transaction
from gateway.stores.postgres.notify import LiveListener

__all__ = ["PgControlsStore"]


class PgControlsStore(ControlsStore):
    """See the module docstring. ``pool``: connections to a migrated database (closed by
    :meth:`close` when ``owns_pool``); ``seed_revoked_consents`` as for the SQLite store.

    Raises:
        ControlsStoreError: the database cannot be reached or read.
    """

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        *,
        clock: Callable[[], float] = time.time,
        seed_revoked_consents: Iterable[str] = (),
        owns_pool: bool = True,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._owns_pool = owns_pool
        self._clock = clock
        self._live: LiveListener | None = None
        self._reload_lock = threading.Lock()
        self._snap = ControlsSnapshot(version=-1)
        seeds = sorted(set(seed_revoked_consents))
        if seeds:
            now = self._clock()
            with self._tx() as conn:
                cur = conn.cursor()
                cur.executemany(
                    "INSERT INTO controls_consent_revocations VALUES (%s, %s, 'seed', 'seed')"
                    " ON CONFLICT (cid) DO NOTHING",
                    [(cid, now) for cid in seeds],
                )
                conn.execute("SELECT live_bump('controls')")
        self.refresh()

    def _tx(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return pooled_transaction(self._pool, ControlsStoreError, "the controls store")

    def close(self) -> None:
        """Close the pool when this store owns it (idempotent)."""
        if self._owns_pool:
            self._pool.close()

    # --- reading -----------------------------------------------------------------------------

    def follow(self, listener: LiveListener) -> None:
        """From now on :meth:`snapshot` serves the sets the listener keeps current, and
        fails closed when it is stale. Subscribe :meth:`refresh` to the listener too."""
        self._live = listener

    def refresh(self, version: int | None = None) -> ControlsSnapshot:
        """Reload the sets if their version moved (``version``: the one announced, unused
        but for the listener's signature) and tell the listeners. Raises ControlsStoreError."""
        with self._reload_lock:
            old = self._snap
            with self._tx() as conn:
                row = conn.execute(
                    "SELECT version FROM live_versions WHERE name = 'controls'"
                ).fetchone()
                if row is None:
                    raise ControlsStoreError("the controls store's schema is not migrated")
                if int(row[0]) == old.version:
                    return old
                cids = conn.execute("SELECT cid FROM controls_consent_revocations").fetchall()
                agencies = conn.execute("SELECT agency FROM controls_suspensions").fetchall()
                certs = conn.execute(
                    "SELECT kind, value FROM controls_certificate_revocations"
                ).fetchall()
            new = ControlsSnapshot(
                version=int(row[0]),
                revoked_consents=frozenset(str(r[0]) for r in cids),
                suspended_agencies=frozenset(str(r[0]) for r in agencies),
                revoked_serials=frozenset(str(v) for k, v in certs if k == "serial"),
                revoked_thumbprints=frozenset(str(v) for k, v in certs if k == "thumbprint"),
            )
            self._snap = new
        if old.version >= 0:
            self._publish(old, new)
        return new

    def snapshot(self) -> ControlsSnapshot:
        """See :meth:`ControlsStore.snapshot`. Raises ControlsStoreError, or
        LiveStateStaleError when followed by a stale listener."""
        if self._live is not None:
            self._live.check()
            return self._snap
        return self.refresh()

    def consent_status(self, cid: str, *, now: float | None = None) -> ConsentStatus:
        """See :meth:`ControlsStore.consent_status`."""
        now = self._clock() if now is None else now
        with self._tx() as conn:
            rev = conn.execute(
                "SELECT revoked_at, revoked_by, via FROM controls_consent_revocations"
                " WHERE cid = %s",
                (cid,),
            ).fetchone()
            use = conn.execute(
                "SELECT uses, max_uses, expires_at, last_used FROM controls_consent_uses"
                " WHERE cid = %s",
                (cid,),
            ).fetchone()
        return consent_status_of(
            cid,
            now,
            None if rev is None else (float(rev[0]), str(rev[1]), str(rev[2])),
            None if use is None else (int(use[0]), use[1], use[2], use[3]),
        )

    def pending_reinstatement(self, agency: str) -> tuple[str, float] | None:
        """See :meth:`ControlsStore.pending_reinstatement`."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT requested_by, requested_at FROM controls_reinstatements WHERE agency = %s",
                (agency,),
            ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))

    def certificate_revocations(self) -> list[CertificateRevocation]:
        """See :meth:`ControlsStore.certificate_revocations`."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT kind, value, revoked_at, revoked_by FROM controls_certificate_revocations"
                " ORDER BY revoked_at, kind, value"
            ).fetchall()
        return [CertificateRevocation(str(k), str(v), float(t), str(b)) for k, v, t, b in rows]

    # --- writing -----------------------------------------------------------------------------

    def _after_write(self) -> None:
        """This process sees its own change at once, listener or not."""
        self.refresh()

    def revoke_consent(self, cid: str, *, by: str, via: str) -> tuple[float, bool]:
        """See :meth:`ControlsStore.revoke_consent`."""
        now = self._clock()
        with self._tx() as conn:
            done = conn.execute(
                "INSERT INTO controls_consent_revocations VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (cid) DO NOTHING",
                (cid, now, by, via),
            ).rowcount
            row = conn.execute(
                "SELECT revoked_at FROM controls_consent_revocations WHERE cid = %s", (cid,)
            ).fetchone()
            if done:
                conn.execute("SELECT live_bump('controls')")
        self._after_write()
        assert row is not None
        return float(row[0]), bool(done)

    def suspend_agency(self, agency: str, *, officer: str, reason: str) -> tuple[float, bool]:
        """See :meth:`ControlsStore.suspend_agency`."""
        now = self._clock()
        with self._tx() as conn:
            done = conn.execute(
                "INSERT INTO controls_suspensions VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (agency) DO NOTHING",
                (agency, now, officer, reason),
            ).rowcount
            conn.execute("DELETE FROM controls_reinstatements WHERE agency = %s", (agency,))
            row = conn.execute(
                "SELECT suspended_at FROM controls_suspensions WHERE agency = %s", (agency,)
            ).fetchone()
            conn.execute("SELECT live_bump('controls')")
        self._after_write()
        assert row is not None
        return float(row[0]), bool(done)

    def request_reinstatement(self, agency: str, *, officer: str, reason: str) -> float:
        """See :meth:`ControlsStore.request_reinstatement`."""
        now = self._clock()
        with self._tx() as conn:
            suspended = conn.execute(
                "SELECT 1 FROM controls_suspensions WHERE agency = %s FOR UPDATE", (agency,)
            ).fetchone()
            if suspended is None:
                raise NotFoundError("the agency is not suspended")
            done = conn.execute(
                "INSERT INTO controls_reinstatements VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (agency) DO NOTHING",
                (agency, now, officer, reason),
            ).rowcount
            if not done:
                raise ConflictError(
                    "a reinstatement of this agency already waits for approval",
                    reason="REINSTATEMENT_PENDING",
                )
        return now

    def approve_reinstatement(self, agency: str, *, officer: str) -> str:
        """See :meth:`ControlsStore.approve_reinstatement`."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT requested_by FROM controls_reinstatements WHERE agency = %s FOR UPDATE",
                (agency,),
            ).fetchone()
            if row is None:
                raise NotFoundError("no reinstatement of this agency waits for approval")
            if row[0] == officer:
                raise PermissionDeniedError(
                    "a reinstatement needs a second officer: the one who asked cannot approve it",
                    reason="FOUR_EYES",
                )
            conn.execute("DELETE FROM controls_suspensions WHERE agency = %s", (agency,))
            conn.execute("SELECT live_bump('controls')")
        self._after_write()
        return str(row[0])

    def revoke_certificates(self, kind: str, values: Iterable[str], *, by: str) -> int:
        """See :meth:`ControlsStore.revoke_certificates`."""
        if kind not in ("serial", "thumbprint"):
            raise ValueError("kind must be serial or thumbprint")
        now = self._clock()
        new = 0
        with self._tx() as conn:
            for value in values:
                new += conn.execute(
                    "INSERT INTO controls_certificate_revocations VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (kind, value) DO NOTHING",
                    (kind, value, now, by),
                ).rowcount
            if new:
                conn.execute("SELECT live_bump('controls')")
        self._after_write()
        return new

    def use_consent(self, cid: str, *, max_uses: int | None, expires_at: int) -> int | None:
        """See :meth:`ControlsStore.use_consent`."""
        now = self._clock()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO controls_consent_uses VALUES (%s, 0, %s, %s, %s, %s)"
                " ON CONFLICT (cid) DO NOTHING",
                (cid, max_uses, expires_at, now, now),
            )
            row = conn.execute(
                "UPDATE controls_consent_uses SET uses = uses + 1, last_used = %s"
                " WHERE cid = %s AND (max_uses IS NULL OR uses < max_uses) RETURNING uses",
                (now, cid),
            ).fetchone()
        return None if row is None else int(row[0])
