"""Replay protection that survives restarts and is shared by every gateway process.

:class:`~gateway.auth.tokens.TokenVerifier` keeps verified tokens in memory, keyed by the
SHA-256 of the token string; that cache serves the normal reuse of one token for many
calls. What the cache alone cannot know is a ``jti`` used before this process started, or
used through another gateway process. A :class:`ReplayStore` (configured as
``[auth] replay_store = "replay.sqlite"``) records each ``(issuer, jti)`` with the hash of
the token string that used it first, until that token expires plus the leeway:

* the same token string again (after a restart, or in another process) is reuse: accepted;
* another token string with that ``(issuer, jti)`` before then is a replay:
  ``TOKEN_REPLAYED``, in every process naming the same file, across restarts.

The store is written only when a token string is verified for the first time in a process
(a cache miss: about once per agency per token lifetime), never on the cached path. Each
such write is an fsynced SQLite transaction (``synchronous=FULL``): a crash must not forget
the last ``jti``s, or their tokens could be replayed after it.

**Bound.** Only tokens a trusted issuer signed reach the store, and a row lives at most
``max_lifetime_s + 2 * leeway_s`` (``exp <= iat + max_lifetime_s``, ``iat <= now + leeway_s``,
row kept to ``exp + leeway_s``): 3,720 s with the defaults. So the rows held are at most
(new tokens per second) x 3,720; the default ``max_entries`` of 1,000,000 (~100 MB) holds a
sustained 268 new tokens per second. Expired rows are purged in batches of
:data:`~gateway.stores.replay.PURGE_BATCH` by each write. When the store is full of
*unexpired* rows a new token is refused (:class:`ReplayStoreUnavailableError`, UNAVAILABLE
with RetryInfo: when the earliest row expires) rather than an unexpired ``jti`` forgotten:
evicting one would let its token be replayed. Tokens already in use keep working.

    store = ReplayStore.open(Path("replay.sqlite"))
    verifier = TokenVerifier(issuers, audience="credit-gateway", replay_store=store)
"""

from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path
from typing import ClassVar

import grpc

from gateway.errors import LocalError
from gateway.stores.replay import Claim, JtiStore, JtiStoreError
from gateway.stores.sqlite import SQLiteSetupError
from gateway.stores.sqlite.replay import SQLiteJtiStore

__all__ = ["DEFAULT_MAX_ENTRIES", "ReplayStore", "ReplayStoreUnavailableError"]

log = logging.getLogger(__name__)

#: Default row limit (see the module docstring for the bound it gives).
DEFAULT_MAX_ENTRIES = 1_000_000


class ReplayStoreUnavailableError(LocalError):
    """The replay store cannot be read or written, or is full of unexpired ``jti``s.

    Fail closed: a token whose ``jti`` cannot be recorded is refused (UNAVAILABLE), since
    accepting it would let a copy through in another process or after a restart.
    """

    code = grpc.StatusCode.UNAVAILABLE
    reason = "REPLAY_STORE_UNAVAILABLE"
    public_message = "the gateway cannot record new tokens now; try again later"


class ReplayStore:
    """``(issuer, jti)`` -> first token string, shared through one SQLite file (or one
    PostgreSQL table, see :meth:`__init__`'s ``store``).

    Thread-safe. :meth:`open` shares one instance (one connection) per file in a process,
    so the gateway's several verifiers do not each hold a connection.
    """

    _open: ClassVar[weakref.WeakValueDictionary[Path, ReplayStore]] = weakref.WeakValueDictionary()
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        store: JtiStore | None = None,
    ) -> None:
        """Open or create the SQLite store at ``path``, or wrap ``store`` (an open
        :class:`~gateway.stores.replay.JtiStore`, such as the PostgreSQL one shared by
        every host; ``max_entries`` is then the store's own).

        Raises:
            ReplayStoreUnavailableError: the file cannot be opened, made durable, or is
                another store's file (the message names the path, for the operator).
        """
        if store is not None:
            self.path: Path | str = path if path is not None else "(PostgreSQL)"
            self._store: JtiStore = store
            return
        if path is None:
            raise ValueError("name a path or pass a store")
        self.path = path
        try:
            self._store = SQLiteJtiStore(path, max_entries=max_entries)
        except (JtiStoreError, SQLiteSetupError) as exc:
            raise ReplayStoreUnavailableError(f"replay store {path}: cannot open ({exc})") from None

    @classmethod
    def open(cls, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> ReplayStore:
        """The process's store for ``path`` (opened once). Raises as the constructor."""
        key = path.resolve()
        with cls._open_lock:
            store = cls._open.get(key)
            if store is None or store._store.max_entries != max_entries:
                store = cls(path, max_entries=max_entries)
                cls._open[key] = store
            return store

    def claim(
        self, issuer: str, jti: str, token_sha256: bytes, *, deadline: float, now: float
    ) -> bool:
        """Record the first use of ``(issuer, jti)`` by the token hashing to ``token_sha256``,
        until ``deadline`` (``exp + leeway``). Returns False for a replay (another token
        string holds the jti and has not expired), True otherwise.

        Raises:
            ReplayStoreUnavailableError: the file cannot be written, or it is full of
                unexpired rows (``retry_after_s``: until the earliest one expires).
        """
        try:
            found = self._store.claim(issuer, jti, token_sha256, expires_at=deadline, now=now)
            if found is Claim.FULL:
                earliest = self._store.next_expiry()
        except JtiStoreError as exc:
            raise ReplayStoreUnavailableError(
                f"replay store {self.path}: cannot record a token ({exc})"
            ) from None
        if found is Claim.FULL:
            log.error(
                "replay store full (%d unexpired jtis): new tokens refused until some expire",
                self._store.max_entries,
            )
            err = ReplayStoreUnavailableError(
                f"replay store {self.path} holds {self._store.max_entries} unexpired jtis"
                " (raise [auth] replay_store_max_entries, or wait for tokens to expire)",
                reason="REPLAY_STORE_FULL",
            )
            err.retry_after_s = max(1.0, (earliest or now) - now)
            raise err
        return found is Claim.ACCEPTED

    def __len__(self) -> int:
        """Rows held, expired but not yet purged included (metrics, tests). Raises
        JtiStoreError."""
        return len(self._store)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._store.close()
