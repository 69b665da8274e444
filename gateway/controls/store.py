"""The live security-controls store, shared by every gateway process.

:class:`ControlsStore` is the interface; :class:`SQLiteControlsStore` keeps it in one SQLite
file (every process on one host), :class:`gateway.stores.postgres.controls.PgControlsStore`
in PostgreSQL (every process on every host; changes propagate by LISTEN/NOTIFY). Both pass
one contract suite (``tests/contract/test_controls_contract.py``).

What it holds (each row with when and by whom):

* ``consent_revocations``: revoked consent ids (``cid``), by an officer (for the issuer) or by
  the subject through its self-service agency;
* ``suspensions`` and ``reinstatements``: suspended agencies, and reinstatements asked for and
  waiting for a *second* officer (four eyes: one officer alone may suspend, it is urgent; the
  one who asked for a reinstatement may not approve it);
* ``certificate_revocations``: client certificates revoked by serial (lower-case hex, no
  leading zeros) or by RFC 8705 thumbprint (base64url SHA-256 of the DER), one at a time or
  from a CRL;
* ``consent_uses``: how often each consent was used by a query, and its limit (``max_uses``).

**Propagation (SQLite).** Every write that changes a set (not a use count) bumps
``state.version`` in its own transaction. :meth:`SQLiteControlsStore.snapshot` reads that
one integer (a primary-key lookup on a dedicated read connection, a few microseconds) and
reloads the sets only when it changed, so a change made by any process is seen by every
other on its next request. Listeners (:meth:`ControlsStore.add_listener`) are told what
changed, so that caches depending on it (verified tokens, verified consents) are dropped at
once.

**Use counts** are counted atomically: ``UPDATE ... SET uses = uses + 1 WHERE uses < max_uses``
in one ``BEGIN IMMEDIATE`` transaction, so concurrent queries in any number of processes never
use a consent more often than its limit.

Errors: :class:`ControlsStoreError` (UNAVAILABLE) when the file cannot be read or written; the
messages never name a path or an identifier.
"""

from __future__ import annotations

import base64
import binascii
import enum
import inspect
import logging
import sqlite3
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from gateway.errors import (
    ConflictError,
    InvalidArgumentError,
    LocalError,
    NotFoundError,
    PermissionDeniedError,
)
from gateway.stores.sqlite import SQLiteSetupError, ensure_format, open_durable

__all__ = [
    "CertificateRevocation",
    "ConsentState",
    "ConsentStatus",
    "ControlsSnapshot",
    "ControlsStore",
    "ControlsStoreError",
    "SQLiteControlsStore",
    "consent_status_of",
    "normalize_serial",
    "normalize_thumbprint",
]

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


class ControlsStoreError(LocalError):
    """The controls store cannot be read or written (UNAVAILABLE): without it the gateway
    cannot know what is revoked, so it refuses rather than guess."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "CONTROLS_UNAVAILABLE"


def normalize_serial(text: str) -> str:
    """A certificate serial as stored: lower-case hex without leading zeros. Accepts hex with
    or without ``0x`` and ``:`` separators (as ``openssl x509 -serial`` prints it).

    Raises:
        InvalidArgumentError: not a hex number of at most 20 bytes (RFC 5280 4.1.2.2).
    """
    s = text.strip().lower().removeprefix("0x").replace(":", "")
    if not s or len(s) > 40 or any(c not in "0123456789abcdef" for c in s):
        raise InvalidArgumentError("serial", "must be a hex certificate serial of at most 20 bytes")
    return format(int(s, 16), "x")


def normalize_thumbprint(text: str) -> str:
    """An RFC 8705 certificate thumbprint as stored: base64url SHA-256 without padding.
    Accepts that form or 64 hex digits (``openssl x509 -fingerprint -sha256``, colons allowed).

    Raises:
        InvalidArgumentError: neither form of a SHA-256.
    """
    s = text.strip()
    hexed = s.replace(":", "").lower()
    if len(hexed) == 64 and all(c in "0123456789abcdef" for c in hexed):
        raw = bytes.fromhex(hexed)
    else:
        try:
            raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if len(s) != 43 or len(raw) != 32:
            raise InvalidArgumentError(
                "thumbprint", "must be a SHA-256 thumbprint (base64url, 43 chars, or 64 hex)"
            )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class ControlsSnapshot:
    """The sets as of one ``version`` of the store (immutable: share it freely)."""

    version: int
    revoked_consents: frozenset[str] = frozenset()
    suspended_agencies: frozenset[str] = frozenset()
    revoked_serials: frozenset[str] = frozenset()
    revoked_thumbprints: frozenset[str] = frozenset()

    def agency_suspended(self, agency: str) -> bool:
        """Whether ``agency`` is suspended now."""
        return agency in self.suspended_agencies

    def certificate_revoked(self, serial: str, thumbprint: str) -> bool:
        """Whether a certificate with ``serial`` (normalized hex) or ``thumbprint``
        (base64url) is revoked."""
        return serial in self.revoked_serials or thumbprint in self.revoked_thumbprints


@dataclass(frozen=True, slots=True)
class CertificateRevocation:
    """One certificate revoked: by ``kind`` ``"serial"`` or ``"thumbprint"``."""

    kind: str
    value: str
    revoked_at: float
    revoked_by: str


class ConsentState(enum.StrEnum):
    """What :meth:`ControlsStore.consent_status` says of a consent id."""

    LIVE = "live"  # used at least once, not revoked, spent or expired
    UNSEEN = "unseen"  # never used through this store and not revoked: nothing more is known
    EXPIRED = "expired"
    REVOKED = "revoked"
    SPENT = "spent"


@dataclass(frozen=True, slots=True)
class ConsentStatus:
    """The state of one consent id. Times are Unix seconds (0: unknown)."""

    cid: str
    state: ConsentState
    uses: int = 0
    max_uses: int | None = None
    expires_at: int = 0
    revoked_at: float = 0.0
    revoked_by: str = ""
    revoked_via: str = ""
    last_used: float = 0.0


@dataclass(slots=True)
class _Conn:
    conn: sqlite3.Connection
    lock: threading.Lock = field(default_factory=threading.Lock)


Listener = Callable[[ControlsSnapshot, ControlsSnapshot], None]


def consent_status_of(
    cid: str,
    now: float,
    rev: tuple[float, str, str] | None,
    use: tuple[int, int | None, int | None, float | None] | None,
) -> ConsentStatus:
    """The state of consent ``cid`` from its revocation row ``(revoked_at, revoked_by, via)``
    and use row ``(uses, max_uses, expires_at, last_used)``, either absent: revoked wins,
    then spent, then expired (``now`` >= ``expires_at``, Unix seconds), then live; neither
    row: unseen. One rule for every backend."""
    uses, max_uses, expires_at, last_used = use if use is not None else (0, None, 0, 0.0)
    expires_at = expires_at or 0
    if rev is not None:
        state = ConsentState.REVOKED
    elif max_uses is not None and uses >= max_uses:
        state = ConsentState.SPENT
    elif expires_at and now >= expires_at:
        state = ConsentState.EXPIRED
    elif use is not None:
        state = ConsentState.LIVE
    else:
        state = ConsentState.UNSEEN
    return ConsentStatus(
        cid=cid,
        state=state,
        uses=int(uses),
        max_uses=None if max_uses is None else int(max_uses),
        expires_at=int(expires_at),
        revoked_at=float(rev[0]) if rev else 0.0,
        revoked_by=str(rev[1]) if rev else "",
        revoked_via=str(rev[2]) if rev else "",
        last_used=float(last_used or 0.0),
    )


class ControlsStore(ABC):
    """The live controls (see the module docstring). Implementations are thread-safe.

    ``snapshot()`` is called on every request (cheap); every other method is a short
    transaction, to be run off the event loop where it writes (``asyncio.to_thread``), except
    :meth:`use_consent`, which the decider calls in line (one small write). Every method
    raises :class:`ControlsStoreError` when the store cannot be read or written.
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[], Listener | None]] = []

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` (on the thread that noticed) whenever the sets change,
        including changes made by other processes. A listener must not raise or block.
        A bound method is held weakly: a decider replaced by a policy activation is not kept
        alive by its listener."""
        self._listeners.append(
            weakref.WeakMethod(listener) if inspect.ismethod(listener) else lambda: listener
        )

    def _publish(self, old: ControlsSnapshot, new: ControlsSnapshot) -> None:
        """Tell the listeners that the sets went from ``old`` to ``new``."""
        for ref in list(self._listeners):
            listener = ref()
            if listener is None:
                self._listeners.remove(ref)
                continue
            try:
                listener(old, new)
            except Exception:  # a cache that cannot be dropped must not stop the check
                log.exception("a controls listener failed")

    @abstractmethod
    def snapshot(self) -> ControlsSnapshot:
        """The sets as of now (a change by any process is seen within the backend's
        bound). Raises ControlsStoreError."""

    @abstractmethod
    def consent_status(self, cid: str, *, now: float | None = None) -> ConsentStatus:
        """What is known of consent ``cid`` (see :func:`consent_status_of`).
        Raises ControlsStoreError."""

    @abstractmethod
    def pending_reinstatement(self, agency: str) -> tuple[str, float] | None:
        """``(requested_by, requested_at)`` of the reinstatement waiting for approval, if
        any. Raises ControlsStoreError."""

    @abstractmethod
    def revoke_consent(self, cid: str, *, by: str, via: str) -> tuple[float, bool]:
        """Revoke consent ``cid`` (``via``: ``"officer"`` or ``"subject"``). Returns
        ``(revoked_at, newly)``: a consent revoked before keeps its first time and author.
        Raises ControlsStoreError."""

    @abstractmethod
    def suspend_agency(self, agency: str, *, officer: str, reason: str) -> tuple[float, bool]:
        """Suspend ``agency`` now (one officer suffices). A pending reinstatement is dropped.
        Returns ``(suspended_at, newly)``. Raises ControlsStoreError."""

    @abstractmethod
    def request_reinstatement(self, agency: str, *, officer: str, reason: str) -> float:
        """Ask for ``agency``'s reinstatement; a second officer must approve it. Returns the
        time asked (Unix seconds).

        Raises:
            NotFoundError: the agency is not suspended.
            ConflictError: a reinstatement is already waiting (reason REINSTATEMENT_PENDING).
            ControlsStoreError: the store fails.
        """

    @abstractmethod
    def approve_reinstatement(self, agency: str, *, officer: str) -> str:
        """Approve the waiting reinstatement of ``agency``: it is no longer suspended.
        Returns the officer who asked for it.

        Raises:
            NotFoundError: nothing waits for approval for this agency.
            PermissionDeniedError: ``officer`` asked for it (reason FOUR_EYES).
            ControlsStoreError: the store fails.
        """

    @abstractmethod
    def revoke_certificates(self, kind: str, values: Iterable[str], *, by: str) -> int:
        """Revoke certificates by ``kind`` (``"serial"``: normalized hex, ``"thumbprint"``:
        base64url), e.g. every serial of a CRL. Returns how many were new.
        Raises ControlsStoreError; ValueError for another kind."""

    @abstractmethod
    def use_consent(self, cid: str, *, max_uses: int | None, expires_at: int) -> int | None:
        """Count one use of consent ``cid`` and return its use count, or None when it is
        spent (``max_uses`` uses already: not counted). Atomic across threads, processes
        and hosts. The limit is the one of the first use. Raises ControlsStoreError."""

    @abstractmethod
    def certificate_revocations(self) -> list[CertificateRevocation]:
        """Every certificate revocation, oldest first. Raises ControlsStoreError."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources (idempotent)."""


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
