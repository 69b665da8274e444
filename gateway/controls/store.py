"""The live security-controls store, shared by every gateway process.

:class:`ControlsStore` is the interface. :class:`gateway.stores.sqlite.controls.SQLiteControlsStore`
keeps it in one SQLite file (every process on one host);
:class:`gateway.stores.postgres.controls.PgControlsStore` in PostgreSQL (every process on
every host; changes propagate by LISTEN/NOTIFY). Both pass one contract suite
(``tests/contract/test_controls_contract.py``).

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

**Propagation.** A change made by any process is in every other's snapshot within the
backend's bound (SQLite: the next request; PostgreSQL: a NOTIFY, or the stated
``stale_after_s`` past which snapshots fail closed). Listeners
(:meth:`ControlsStore.add_listener`) are told what changed, so that caches depending on it
(verified tokens, verified consents) are dropped at once.

**Use counts** are counted atomically (``UPDATE ... SET uses = uses + 1 WHERE uses <
max_uses`` in one transaction), so concurrent queries in any number of processes never use
a consent more often than its limit.

Errors: :class:`ControlsStoreError` (UNAVAILABLE) when the file cannot be read or written; the
messages never name a path or an identifier.
"""

from __future__ import annotations

import base64
import binascii
import enum
import inspect
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc

from gateway.errors import (
    InvalidArgumentError,
    LocalError,
)

__all__ = [
    "CertificateRevocation",
    "ConsentState",
    "ConsentStatus",
    "ControlsSnapshot",
    "ControlsStore",
    "ControlsStoreError",
    "consent_status_of",
    "normalize_serial",
    "normalize_thumbprint",
]

log = logging.getLogger(__name__)


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
