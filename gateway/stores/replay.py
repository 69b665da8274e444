"""The interface of the ``jti`` store behind replay protection (standard library only).

A row ``(issuer, jti, token_sha256, expires_at)`` says: the token whose string hashes to
``token_sha256`` used this ``jti``; until ``expires_at`` (the token's ``exp`` plus the
verifier's leeway, Unix seconds) no *other* token string may use it. Two backends
implement :class:`JtiStore`: :class:`~gateway.stores.sqlite.replay.SQLiteJtiStore` (one
file shared by the processes of one host) and
:class:`~gateway.stores.postgres.replay.PostgresJtiStore` (one table shared by every
process on every host). :class:`gateway.auth.replay.ReplayStore` wraps either and maps
:class:`JtiStoreError` to the gateway's errors.

The interface lives here, beside its backends, rather than in :mod:`gateway.auth`: it is
a storage seam only (the rules of replay protection are in :mod:`gateway.auth.replay`),
and :mod:`gateway.auth.replay` must be able to open either backend without an import
circle.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod

__all__ = ["PURGE_BATCH", "Claim", "JtiStore", "JtiStoreError"]

#: Expired rows deleted per claim, at most: keeps a claim's time bounded, and still
#: outpaces insertion (each claim inserts at most one row).
PURGE_BATCH = 256


class JtiStoreError(Exception):
    """The store cannot be read or written; the message names no token."""


class Claim(enum.Enum):
    """What :meth:`JtiStore.claim` found."""

    #: The jti is now this token string's (first use, the same string again, or an
    #: expired earlier use taken over).
    ACCEPTED = "accepted"
    #: Another token string holds the jti and has not expired.
    REPLAYED = "replayed"
    #: A new row would exceed ``max_entries``; nothing was written but the purge.
    FULL = "full"


class JtiStore(ABC):
    """Seen ``(issuer, jti)`` pairs shared by processes; bounded by :attr:`max_entries`
    (an unexpired row is never evicted to make room: forgetting one is exactly the
    replay the store exists to stop). Thread-safe; every method is one transaction."""

    #: Rows held at most; a new row beyond it is :attr:`Claim.FULL`.
    max_entries: int

    @abstractmethod
    def claim(
        self, issuer: str, jti: str, token_sha256: bytes, *, expires_at: float, now: float
    ) -> Claim:
        """Record that the token hashing to ``token_sha256`` uses ``(issuer, jti)`` until
        ``expires_at`` (Unix seconds); first purge up to :data:`PURGE_BATCH` rows expired
        at ``now``. Two processes claiming one ``jti`` with different tokens at once: one
        is ACCEPTED, the other REPLAYED. Raises the backend's error (the claim is undone)."""

    @abstractmethod
    def purge(self, now: float, *, batch: int = PURGE_BATCH) -> int:
        """Delete up to ``batch`` rows expired at ``now``; returns how many."""

    @abstractmethod
    def __len__(self) -> int:
        """Rows held (expired ones not yet purged included)."""

    @abstractmethod
    def next_expiry(self) -> float | None:
        """When the earliest row expires (Unix seconds), or None if empty."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection(s) (idempotent)."""
