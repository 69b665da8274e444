"""The live controls in one SQLite file: :class:`SQLiteControlsStore`, the embedded backend
of :class:`~gateway.controls.store.ControlsStore`, shared by the gateway processes of one
host.

    store = SQLiteControlsStore("controls.sqlite", seed_revoked_consents=["c-1"])
    store.suspend_agency("bank_x", officer="officer_a", reason="key leaked")

Every write that changes a set bumps ``state.version`` in its own ``BEGIN IMMEDIATE``
transaction; :meth:`SQLiteControlsStore.snapshot` reads that one integer on a dedicated
read connection and reloads the sets only when it moved. Use counts are counted with
``UPDATE ... WHERE uses < max_uses`` in one transaction, exact across processes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gateway.controls.store import (
    CertificateRevocation,
    ConsentStatus,
    ControlsSnapshot,
    ControlsStore,
    ControlsStoreError,
    consent_status_of,
)
from gateway.errors import ConflictError, NotFoundError, PermissionDeniedError
from gateway.stores.sqlite import SQLiteSetupError, ensure_format, open_durable

__all__ = ["SQLiteControlsStore"]

log = logging.getLogger(__name__)

_FORMAT = "controls-1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO state (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS consent_revocations (
    cid TEXT PRIMARY KEY,
    revoked_at REAL NOT NULL,
    revoked_by TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suspensions (
    agency TEXT PRIMARY KEY,
    suspended_at REAL NOT NULL,
    suspended_by TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reinstatements (
    agency TEXT PRIMARY KEY REFERENCES suspensions (agency) ON DELETE CASCADE,
    requested_at REAL NOT NULL,
    requested_by TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificate_revocations (
    kind TEXT NOT NULL CHECK (kind IN ('serial', 'thumbprint')),
    value TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    revoked_by TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS consent_uses (
    cid TEXT PRIMARY KEY,
    uses INTEGER NOT NULL CHECK (uses >= 0),
    max_uses INTEGER CHECK (max_uses IS NULL OR max_uses > 0),
    expires_at INTEGER,
    first_used REAL NOT NULL,
    last_used REAL NOT NULL,
    CHECK (max_uses IS NULL OR uses <= max_uses)
);
"""


@dataclass(slots=True)
class _Conn:
    conn: sqlite3.Connection
    lock: threading.Lock = field(default_factory=threading.Lock)


class SQLiteControlsStore(ControlsStore):
    """The store in one SQLite file, shared by the processes of one host.

    ``snapshot()`` reads one integer per call and reloads the sets when it changed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        seed_revoked_consents: Iterable[str] = (),
    ) -> None:
        """Open (or create) the store at ``path``; ``seed_revoked_consents`` (the bootstrap
        file ``policies/consent_revocations.toml``) are added as revoked by ``"seed"`` if not
        already there.

        Raises:
            ControlsStoreError: the file cannot be opened, made durable, or is of another format.
        """
        super().__init__()
        self._clock = clock
        try:
            self._w = _Conn(open_durable(path, schema=_SCHEMA))
            fmt = ensure_format(self._w.conn, _FORMAT)
            if fmt != _FORMAT:
                self._w.conn.close()
                raise ControlsStoreError(f"the controls store is of format {fmt}, not {_FORMAT}")
            self._r = _Conn(open_durable(path, schema=""))
        except (sqlite3.Error, SQLiteSetupError) as exc:
            raise ControlsStoreError(f"cannot open the controls store: {exc}") from None
        self._snap = ControlsSnapshot(version=-1)
        seeds = sorted(set(seed_revoked_consents))
        if seeds:
            self._seed(seeds)
        self.snapshot()

    # --- reading -------------------------------------------------------------------------

    def snapshot(self) -> ControlsSnapshot:
        """The sets as of now: one integer read, and a reload when another writer (or this
        one) changed them since the last call.

        Raises:
            ControlsStoreError: the file cannot be read.
        """
        with self._r.lock:
            try:
                row = self._r.conn.execute("SELECT version FROM state WHERE id = 1").fetchone()
                if row[0] == self._snap.version:
                    return self._snap
                old, new = self._snap, self._load()
            except sqlite3.Error as exc:
                raise ControlsStoreError(f"cannot read the controls store: {exc}") from None
            self._snap = new
        if old.version >= 0:
            self._publish(old, new)
        return new

    def _load(self) -> ControlsSnapshot:
        c = self._r.conn
        c.execute("BEGIN")
        try:
            version = c.execute("SELECT version FROM state WHERE id = 1").fetchone()[0]
            cids = frozenset(r[0] for r in c.execute("SELECT cid FROM consent_revocations"))
            agencies = frozenset(r[0] for r in c.execute("SELECT agency FROM suspensions"))
            certs = c.execute("SELECT kind, value FROM certificate_revocations").fetchall()
        finally:
            c.execute("COMMIT")
        return ControlsSnapshot(
            version=int(version),
            revoked_consents=cids,
            suspended_agencies=agencies,
            revoked_serials=frozenset(v for k, v in certs if k == "serial"),
            revoked_thumbprints=frozenset(v for k, v in certs if k == "thumbprint"),
        )

    def consent_status(self, cid: str, *, now: float | None = None) -> ConsentStatus:
        """What is known of consent ``cid``: revoked (since when, by whom), spent, expired
        (its expiry is learnt at its first use), live, or unseen. Raises ControlsStoreError."""
        now = self._clock() if now is None else now
        with self._r.lock:
            try:
                rev = self._r.conn.execute(
                    "SELECT revoked_at, revoked_by, via FROM consent_revocations WHERE cid = ?",
                    (cid,),
                ).fetchone()
                use = self._r.conn.execute(
                    "SELECT uses, max_uses, expires_at, last_used FROM consent_uses WHERE cid = ?",
                    (cid,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise ControlsStoreError(f"cannot read the controls store: {exc}") from None
        return consent_status_of(cid, now, rev, use)

    def pending_reinstatement(self, agency: str) -> tuple[str, float] | None:
        """``(requested_by, requested_at)`` of the reinstatement waiting for approval, if any.
        Raises ControlsStoreError."""
        with self._r.lock:
            try:
                row = self._r.conn.execute(
                    "SELECT requested_by, requested_at FROM reinstatements WHERE agency = ?",
                    (agency,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise ControlsStoreError(f"cannot read the controls store: {exc}") from None
        return None if row is None else (str(row[0]), float(row[1]))

    # --- writing ---------------------------------------------------------------------------

    @contextmanager
    def _write(self, *, bump: bool = True) -> Iterator[sqlite3.Connection]:
        with self._w.lock:
            c = self._w.conn
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise ControlsStoreError(f"cannot write the controls store: {exc}") from None
            try:
                yield c
                if bump:
                    c.execute("UPDATE state SET version = version + 1 WHERE id = 1")
                c.execute("COMMIT")
            except sqlite3.Error as exc:
                c.execute("ROLLBACK")
                raise ControlsStoreError(f"cannot write the controls store: {exc}") from None
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def _seed(self, cids: list[str]) -> None:
        now = self._clock()
        with self._write() as c:
            c.executemany(
                "INSERT OR IGNORE INTO consent_revocations VALUES (?, ?, 'seed', 'seed')",
                [(cid, now) for cid in cids],
            )

    def revoke_consent(self, cid: str, *, by: str, via: str) -> tuple[float, bool]:
        """Revoke consent ``cid`` (``via``: ``"officer"`` or ``"subject"``). Returns
        ``(revoked_at, newly)``: a consent revoked before keeps its first time and author.
        Raises ControlsStoreError."""
        now = self._clock()
        with self._write() as c:
            done = c.execute(
                "INSERT OR IGNORE INTO consent_revocations VALUES (?, ?, ?, ?)", (cid, now, by, via)
            ).rowcount
            at = c.execute(
                "SELECT revoked_at FROM consent_revocations WHERE cid = ?", (cid,)
            ).fetchone()[0]
        return float(at), bool(done)

    def suspend_agency(self, agency: str, *, officer: str, reason: str) -> tuple[float, bool]:
        """Suspend ``agency`` now (one officer suffices). A pending reinstatement is dropped.
        Returns ``(suspended_at, newly)``. Raises ControlsStoreError."""
        now = self._clock()
        with self._write() as c:
            done = c.execute(
                "INSERT OR IGNORE INTO suspensions VALUES (?, ?, ?, ?)",
                (agency, now, officer, reason),
            ).rowcount
            c.execute("DELETE FROM reinstatements WHERE agency = ?", (agency,))
            at = c.execute(
                "SELECT suspended_at FROM suspensions WHERE agency = ?", (agency,)
            ).fetchone()[0]
        return float(at), bool(done)

    def request_reinstatement(self, agency: str, *, officer: str, reason: str) -> float:
        """Ask for ``agency``'s reinstatement; a second officer must approve it. Returns the
        time asked.

        Raises:
            NotFoundError: the agency is not suspended.
            ConflictError: a reinstatement is already waiting (reason REINSTATEMENT_PENDING).
            ControlsStoreError: the store fails.
        """
        now = self._clock()
        with self._write(bump=False) as c:
            if (
                c.execute("SELECT 1 FROM suspensions WHERE agency = ?", (agency,)).fetchone()
                is None
            ):
                raise NotFoundError("the agency is not suspended")
            pending = c.execute(
                "SELECT 1 FROM reinstatements WHERE agency = ?", (agency,)
            ).fetchone()
            if pending is not None:
                raise ConflictError(
                    "a reinstatement of this agency already waits for approval",
                    reason="REINSTATEMENT_PENDING",
                )
            c.execute(
                "INSERT INTO reinstatements VALUES (?, ?, ?, ?)", (agency, now, officer, reason)
            )
        return now

    def approve_reinstatement(self, agency: str, *, officer: str) -> str:
        """Approve the waiting reinstatement of ``agency``: it is no longer suspended.
        Returns the officer who asked for it.

        Raises:
            NotFoundError: nothing waits for approval for this agency.
            PermissionDeniedError: ``officer`` asked for it (reason FOUR_EYES).
            ControlsStoreError: the store fails.
        """
        with self._write() as c:
            row = c.execute(
                "SELECT requested_by FROM reinstatements WHERE agency = ?", (agency,)
            ).fetchone()
            if row is None:
                raise NotFoundError("no reinstatement of this agency waits for approval")
            if row[0] == officer:
                raise PermissionDeniedError(
                    "a reinstatement needs a second officer: the one who asked cannot approve it",
                    reason="FOUR_EYES",
                )
            c.execute("DELETE FROM suspensions WHERE agency = ?", (agency,))
        return str(row[0])

    def revoke_certificates(self, kind: str, values: Iterable[str], *, by: str) -> int:
        """Revoke certificates by ``kind`` (``"serial"``: normalized hex, ``"thumbprint"``:
        base64url), e.g. every serial of a CRL. Returns how many were new.
        Raises ControlsStoreError; ValueError for another kind."""
        if kind not in ("serial", "thumbprint"):
            raise ValueError("kind must be serial or thumbprint")
        now = self._clock()
        with self._write() as c:
            return sum(
                c.execute(
                    "INSERT OR IGNORE INTO certificate_revocations VALUES (?, ?, ?, ?)",
                    (kind, v, now, by),
                ).rowcount
                for v in values
            )

    def use_consent(self, cid: str, *, max_uses: int | None, expires_at: int) -> int | None:
        """Count one use of consent ``cid`` and return its use count, or None when it is spent
        (``max_uses`` uses already: not counted). Atomic across threads and processes. The
        limit is the one of the first use (a consent's claims cannot change).
        Raises ControlsStoreError."""
        now = self._clock()
        with self._write(bump=False) as c:
            c.execute(
                "INSERT OR IGNORE INTO consent_uses VALUES (?, 0, ?, ?, ?, ?)",
                (cid, max_uses, expires_at, now, now),
            )
            row = c.execute(
                "UPDATE consent_uses SET uses = uses + 1, last_used = ? "
                "WHERE cid = ? AND (max_uses IS NULL OR uses < max_uses) RETURNING uses",
                (now, cid),
            ).fetchone()
        return None if row is None else int(row[0])

    def certificate_revocations(self) -> list[CertificateRevocation]:
        """Every certificate revocation, oldest first. Raises ControlsStoreError."""
        with self._r.lock:
            try:
                rows = self._r.conn.execute(
                    "SELECT kind, value, revoked_at, revoked_by FROM certificate_revocations "
                    "ORDER BY revoked_at"
                ).fetchall()
            except sqlite3.Error as exc:
                raise ControlsStoreError(f"cannot read the controls store: {exc}") from None
        return [CertificateRevocation(str(k), str(v), float(t), str(b)) for k, v, t, b in rows]

    def close(self) -> None:
        """Close both connections (idempotent)."""
        for conn in (self._w, self._r):
            with conn.lock:
                conn.conn.close()
