"""One process among many for a background job on PostgreSQL: :class:`SessionLock`, a
session advisory lock on a connection of its own, kept between tries.

    lock = SessionLock(target, (0x6367_6F62, 1), idle_timeout_s=15, fail=my_error)
    if lock.try_acquire():        # every round: True while this process holds it
        ...do the job...
    with lock.holding() as conn:  # or: run on the holding session itself
        ...
    lock.close()                  # unlocks, then closes: another takes over at its next try

Its users: the audit log's integrator (:data:`gateway.stores.postgres.audit.LEADER_LOCK`),
the subject index's follower (:data:`gateway.stores.postgres.subject_index.FOLLOWER_LOCK`)
and the objection desk's poller (:data:`gateway.stores.postgres.objections.POLLER_LOCK`).

**Why a session lock on a connection of its own.** ``pg_try_advisory_lock`` is held by the
server session that took it until that session unlocks it or ends; a pooled connection goes
back to the pool still holding it (and another thread's transaction would run on the
holder's session). So the lock's session is never pooled: it ends with the process (at once
for a killed one: the kernel closes the socket). For a vanished host or a hung process the
session has TCP keepalives both ways (libpq's: idle 5 s, 3 probes 2 s apart; the server's,
set on the session, the same) and ``idle_session_timeout`` (``idle_timeout_s``), so the
server ends it and frees the lock within about ``idle_timeout_s`` seconds. A user must speak
on it more often than that (the integrator every 50 ms, the follower every second, the poller
and every contender at each round: each try is a statement); a session the server ended is
found dead at the next try and replaced, once per call.

**Why kept between tries.** A process that does not hold the lock asks again every round on
the same session rather than on a new connection each time: a connection costs the server a
process and an authentication, and a host holding one idle session is what the holder does
anyway.

A lock is exclusive across sessions, so two :class:`SessionLock` objects in one process
contend exactly as two processes do (the tests rely on it). Errors: whatever ``fail``
builds from what failed and the SQLSTATE (or the driver's error class), never the server's
text (it can name hosts and addresses).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from gateway.stores.postgres.url import PgConfigError, PgTarget

__all__ = ["KEEPALIVE", "LockNotHeld", "SessionLock", "error_code"]

#: libpq's keepalives of a lock's session: idle 5 s, then 3 probes 2 s apart, so a vanished
#: server is noticed within about 11 s (the server's own are set to the same on the session).
KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
             "keepalives_count": 3}  # fmt: skip


class LockNotHeld(Exception):
    """:meth:`SessionLock.holding` was entered while the lock is not held (as far as this
    object knows)."""


def error_code(err: BaseException) -> str:
    """What may be said of ``err``: its SQLSTATE, else the class name of the error (never
    its text)."""
    return getattr(err, "sqlstate", None) or type(err).__name__


class SessionLock:
    """The session advisory lock ``key`` (``pg_try_advisory_lock(classid, objid)``) in the
    database ``target`` names, tried and held on one dedicated session (see the module
    docstring). ``idle_timeout_s``: the session's ``idle_session_timeout`` (whole seconds).
    ``fail(what, code)`` builds the exception raised when the database cannot be reached or
    answers with an error (``what``: "cannot connect" or "election failed"; ``code``: see
    :func:`error_code`). Thread-safe: one call at a time."""

    def __init__(
        self,
        target: PgTarget,
        key: tuple[int, int],
        *,
        idle_timeout_s: int,
        fail: Callable[[str, str], Exception],
    ) -> None:
        self.target = target
        self.key = key
        self._idle_timeout_s = int(idle_timeout_s)
        self._fail = fail
        self._lock = threading.Lock()
        self._session: psycopg.Connection[Any] | None = None
        self._holds = False

    # --- the lock ----------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """True while this object holds the lock: a holder checks its session is alive, any
        other tries the lock on its kept session. A session found dead (idle timeout, server
        restart) is replaced by a new one, once per call, and the lock tried on it. Raises
        what ``fail`` builds when the database cannot be reached or refuses."""
        with self._lock:
            conn = self._session
            if conn is not None and not conn.closed:
                try:
                    return self._elect(conn)
                except psycopg.Error:
                    self._drop()  # ended under us: one new session below
            conn = self._connect()
            try:
                held = self._elect(conn)
            except psycopg.Error as err:
                self._session = None
                self._holds = False
                with suppress(psycopg.Error):
                    conn.close()
                raise self._fail("election failed", error_code(err)) from None
            self._session = conn
            return held

    def _elect(self, conn: psycopg.Connection[Any]) -> bool:
        """On the session ``conn``: the holder checks it is alive, any other tries the lock
        (a session lock is never taken twice by this object, so never held twice over).
        Raises psycopg.Error."""
        if self._holds:
            conn.execute("SELECT 1")
            return True
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key).fetchone()
        self._holds = row is not None and bool(row[0])
        return self._holds

    @property
    def held(self) -> bool:
        """Whether this object holds the lock, as far as it knows (no round trip: a session
        ended by the server is found out at the next :meth:`try_acquire` or
        :meth:`holding`)."""
        return self._holds and self._session is not None and not self._session.closed

    @contextmanager
    def holding(self) -> Iterator[psycopg.Connection[Any]]:
        """Run on the holding session (autocommit), under this object's thread lock: the
        integrator writes the tree in a transaction on it, re-checking the lock there.
        Raises LockNotHeld when the lock is not held. A connection failure inside
        (psycopg.OperationalError, InterfaceError) drops the session, and the lock with it,
        before it propagates; other errors propagate and the lock stays held."""
        with self._lock:
            conn = self._session
            if not self._holds or conn is None or conn.closed:
                raise LockNotHeld("the lock is not held")
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._drop()
                raise

    def release(self) -> None:
        """Give the lock up, keeping the session for the next try (idempotent). The lock is
        free when this returns, so another process takes over at its very next try; a
        session that cannot unlock is closed, which frees it as well."""
        with self._lock:
            if not self._holds:
                return
            conn = self._session
            self._holds = False
            if conn is None or conn.closed:
                self._drop()
                return
            try:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", self.key)
            except psycopg.Error:
                self._drop()

    def close(self) -> None:
        """Unlock (when held) and close the session (idempotent). Unlocked before closing:
        the lock is free when this returns, not when the server's backend gets round to
        exiting."""
        with self._lock:
            if self._holds and self._session is not None and not self._session.closed:
                with suppress(psycopg.Error):
                    self._session.execute("SELECT pg_advisory_unlock(%s, %s)", self.key)
            self._drop()

    # --- the session -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """A new session: never a pooled connection, keepalives both ways, an idle timeout.
        Raises what ``fail`` builds."""
        try:
            conn = psycopg.connect(
                self.target.url, autocommit=True, **self.target.kwargs(), **KEEPALIVE
            )
        except (psycopg.Error, PgConfigError) as err:
            raise self._fail("cannot connect", error_code(err)) from None
        try:
            # The server notices a vanished client too (these apply to TCP connections
            # only), and ends a hung process's session.
            conn.execute("SET tcp_keepalives_idle = 5")
            conn.execute("SET tcp_keepalives_interval = 2")
            conn.execute("SET tcp_keepalives_count = 3")
            conn.execute(f"SET idle_session_timeout = '{self._idle_timeout_s}s'")
        except psycopg.Error as err:
            with suppress(psycopg.Error):
                conn.close()
            raise self._fail("election failed", error_code(err)) from None
        return conn

    def _drop(self) -> None:
        if self._session is not None:
            with suppress(psycopg.Error):  # a broken one: nothing more to do
                self._session.close()
            self._session = None
        self._holds = False
