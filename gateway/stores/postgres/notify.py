"""Live propagation over PostgreSQL LISTEN/NOTIFY, with a version poll as the backstop
and a freshness bound past which the process fails closed.

    listener = LiveListener(target, stale_after_s=5.0, poll_interval_s=1.0)
    listener.subscribe("controls", controls_store.refresh)   # called with the new version
    listener.start()
    listener.check()        # raises LiveStateStaleError past the bound

A writer calls ``live_bump(store)`` (migration ``0020_live_versions``) inside the
transaction that changes the store: the version in ``live_versions`` moves and a
notification ``store:version`` on channel :data:`CHANNEL` is queued; PostgreSQL delivers
both only if that transaction commits (ARCHITECTURE.md, "Live propagation").

Each process keeps **one dedicated connection** for this, never a pooled one (a pooled
connection's LISTEN is lost when it is handed back or replaced). On every (re)connect
the listener first LISTENs, then re-reads ``live_versions``, then applies each store
whose version differs from the one it applied last (so a notification sent while it was
away is not lost: the re-read sees its version). Between notifications it re-reads the
table every ``poll_interval_s`` seconds: the backstop for a notification lost anyway,
and the proof that the connection still works.

**Freshness.** The listener is *fresh* while its last complete re-read (every store
applied) started at most ``stale_after_s`` seconds ago (monotonic clock). A process whose
connection is gone, whose server hangs, or whose store refresh keeps failing becomes
stale within that bound: :meth:`LiveListener.check` then raises
:class:`LiveStateStaleError` (UNAVAILABLE) and the gateway reports NOT_SERVING, rather
than serve a policy or revocations older than the bound. It reconnects by itself (0.2 s
doubling to 2 s between attempts) and is fresh again after its first complete re-read.

Callbacks run on the listener's own thread, one at a time, with the store's new
version; one that raises is logged and retried at the next poll (the listener stays
stale meanwhile if it keeps failing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import psycopg

from gateway.errors import LocalError
from gateway.stores.postgres.connect import connect
from gateway.stores.postgres.url import PgConfigError, PgTarget

__all__ = ["CHANNEL", "LIVE_STORES", "LiveListener", "LiveStateStaleError"]

log = logging.getLogger(__name__)

#: The NOTIFY channel of every live store; the payload is ``"<store>:<version>"``.
CHANNEL = "credit_gateway_live"
#: The stores ``live_versions`` knows.
LIVE_STORES = ("policy", "controls", "objections")
_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 2.0


class LiveStateStaleError(LocalError):
    """This process may not know the latest policy or controls (its listening connection
    to the shared store is lost or its refresh fails past the stated bound): UNAVAILABLE,
    retry on another process. The message says for how long, never the server."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "LIVE_STATE_STALE"
    public_message = (
        "this gateway process cannot confirm the current policy and live controls "
        "(its shared store is unreachable), so it answers nothing; retry on another process"
    )


class LiveListener:
    """One process's dedicated listening connection to one database (see the module
    docstring). Thread-safe; :meth:`start` once, :meth:`close` once."""

    def __init__(
        self,
        target: PgTarget,
        *,
        stale_after_s: float = 5.0,
        poll_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll_interval_s <= 0 or stale_after_s <= poll_interval_s:
            raise ValueError("need 0 < poll_interval_s < stale_after_s")
        self._target = target
        self.stale_after_s = stale_after_s
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._callbacks: dict[str, list[Callable[[int], object]]] = {}
        self._applied: dict[str, int] = {}
        self._synced_at: float | None = None
        self._stop = threading.Event()
        self._synced = threading.Condition()
        self._thread: threading.Thread | None = None
        #: The server process id of the listening connection (None while disconnected).
        self.backend_pid: int | None = None
        #: How many times a connection was (re)established.
        self.connects = 0

    def subscribe(self, store: str, callback: Callable[[int], object]) -> None:
        """Call ``callback(version)`` whenever ``store`` (one of :data:`LIVE_STORES`) changes,
        and once on the first re-read. Subscribe before :meth:`start`."""
        if store not in LIVE_STORES:
            raise ValueError(f"unknown live store {store!r}")
        self._callbacks.setdefault(store, []).append(callback)

    # --- freshness ---------------------------------------------------------------------------

    def stale_for(self) -> float | None:
        """Seconds since the last complete re-read began (None: never synced)."""
        synced = self._synced_at
        return None if synced is None else self._clock() - synced

    def fresh(self) -> bool:
        """Whether everything applied is at most :attr:`stale_after_s` seconds old."""
        age = self.stale_for()
        return age is not None and age <= self.stale_after_s

    def check(self) -> None:
        """Raise :class:`LiveStateStaleError` unless :meth:`fresh`: called on the query
        path (one clock read)."""
        if self.fresh():
            return
        age = self.stale_for()
        since = "since start-up" if age is None else f"for {age:.1f} s"
        raise LiveStateStaleError(
            f"this gateway process has not confirmed the current policy and live controls "
            f"{since} (bound {self.stale_after_s:g} s): its database connection is lost; "
            "it refuses queries until it reconnects"
        )

    def wait_fresh(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` seconds for the first complete re-read; returns
        whether the listener is fresh."""
        deadline = time.monotonic() + timeout_s
        with self._synced:
            while not self.fresh():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._synced.wait(left)
        return True

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the listening thread (a daemon: it never keeps the process alive)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="pg-live-listener", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop listening and close the connection (waits up to ``timeout_s`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        delay = _RETRY_FIRST_S
        outage = False
        while not self._stop.is_set():
            try:
                with connect(self._target, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")  # first LISTEN, then re-read
                    self.backend_pid = conn.info.backend_pid
                    self.connects += 1
                    if outage:
                        log.warning("live listener reconnected; re-reading every store")
                    self._sync(conn)
                    delay, outage = _RETRY_FIRST_S, False
                    self._listen(conn)
            except (psycopg.Error, OSError, PgConfigError) as exc:
                log.debug("live listener: %r", exc)
                if not outage:
                    # The class names the failure; server text may name hosts.
                    log.warning(
                        "live listener lost its connection (%s); reconnecting",
                        type(exc).__name__,
                    )
                outage = True
            finally:
                self.backend_pid = None
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, _RETRY_MAX_S)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            for note in conn.notifies(timeout=self.poll_interval_s):
                if note.channel != CHANNEL:
                    continue
                store, _, version = note.payload.partition(":")
                if store in self._callbacks and version.isdigit():
                    self._apply(store, int(version))
            self._sync(conn)  # the backstop, and the proof that the connection works

    def _sync(self, conn: psycopg.Connection[Any]) -> None:
        began = self._clock()
        rows = conn.execute("SELECT name, version FROM live_versions").fetchall()
        versions = {str(name): int(version) for name, version in rows}
        complete = True
        for store in self._callbacks:
            if store not in versions:
                complete = False
                log.error("live_versions has no row for %s: is the schema migrated?", store)
            elif not self._apply(store, versions[store]):
                complete = False
        if complete:
            with self._synced:
                self._synced_at = began
                self._synced.notify_all()

    def _apply(self, store: str, version: int) -> bool:
        """Run ``store``'s callbacks unless ``version`` is the one applied last (versions
        only grow; a different one, even smaller after a restore, is applied)."""
        if self._applied.get(store) == version:
            return True
        try:
            for callback in self._callbacks[store]:
                callback(version)
        except Exception:
            log.exception("applying %s version %d failed; retried at the next poll", store, version)
            return False
        self._applied[store] = version
        return True
