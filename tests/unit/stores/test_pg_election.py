"""SessionLock on a real PostgreSQL (tests/pg.py): one holder among several sessions, tried
on one kept session (counted in ``pg_stat_activity``), handed over when the holder releases
or closes, a dead session replaced once per call, errors built by the caller's callback;
and the audit log's integrator on it: a process that does not integrate asks on one kept
session, not on a new connection every try."""

from __future__ import annotations

import psycopg
import pytest

from gateway.audit.errors import StorageError
from gateway.audit.store import NotLeaderError
from gateway.stores.postgres.audit import LEADER_LOCK, PostgresAuditStore
from gateway.stores.postgres.election import LockNotHeld, SessionLock
from gateway.stores.postgres.url import PgTarget

KEY = (0x6367_7465, 7)  # "cgte": a key no store uses


class Refused(Exception):
    """What the tests' ``fail`` callback builds."""


def _lock(url: str, name: str) -> SessionLock:
    return SessionLock(
        PgTarget(url, application_name=name),
        KEY,
        idle_timeout_s=15,
        fail=lambda what, code: Refused(f"{what}: {code}"),
    )


def _held(lock: SessionLock) -> bool:
    return lock.held  # a call: the type checker does not narrow it between asserts


def _leading(store: PostgresAuditStore) -> bool:
    return store.leading


def _backends(url: str, name: str) -> set[int]:
    """The server processes of the sessions named ``name``."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchall()
    return {int(r[0]) for r in rows}


def _terminate(url: str, pids: set[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_one_holder_the_others_ask_on_one_kept_session_and_take_over(pg_url: str) -> None:
    a, b = _lock(pg_url, "election-a"), _lock(pg_url, "election-b")
    try:
        assert a.try_acquire() and _held(a)
        assert a.try_acquire()  # checked alive, still held
        seen = []
        for _ in range(5):
            assert not b.try_acquire() and not _held(b)
            seen.append(_backends(pg_url, "election-b"))
        assert all(s == seen[0] for s in seen) and len(seen[0]) == 1
        assert len(_backends(pg_url, "election-a")) == 1
        a.release()  # free at once; a keeps its session for its next try
        assert not _held(a) and len(_backends(pg_url, "election-a")) == 1
        assert b.try_acquire() and _held(b)
        assert _backends(pg_url, "election-b") == seen[0]  # taken on the kept session
        assert not a.try_acquire()
        b.close()  # unlocked before closing: free when close returns
        assert _backends(pg_url, "election-b") == set()
        assert a.try_acquire()
    finally:
        a.close()
        b.close()


def test_release_and_close_are_idempotent_and_a_closed_lock_can_try_again(pg_url: str) -> None:
    a = _lock(pg_url, "election-a")
    a.release()
    a.close()
    assert a.try_acquire()
    a.release()
    a.release()
    a.close()
    a.close()
    assert _backends(pg_url, "election-a") == set()
    assert a.try_acquire()  # a new session
    a.close()


def test_a_dead_session_is_replaced_once_per_call(pg_url: str) -> None:
    a, b = _lock(pg_url, "election-a"), _lock(pg_url, "election-b")
    try:
        assert a.try_acquire()
        assert not b.try_acquire()
        # The server ends b's session (idle timeout, restart): b asks on a new one.
        old_b = _backends(pg_url, "election-b")
        _terminate(pg_url, old_b)
        assert not b.try_acquire()
        new_b = _backends(pg_url, "election-b")
        assert len(new_b) == 1 and new_b != old_b
        # The holder's session ends: its lock with it; b takes it, and a, asking on a new
        # session of its own, is told no.
        _terminate(pg_url, _backends(pg_url, "election-a"))
        assert b.try_acquire()
        assert not a.try_acquire() and not _held(a)
        assert len(_backends(pg_url, "election-a")) == 1
    finally:
        a.close()
        b.close()


def test_holding_runs_on_the_holding_session_and_a_broken_one_drops_the_lock(
    pg_url: str,
) -> None:
    a, b = _lock(pg_url, "election-a"), _lock(pg_url, "election-b")
    try:
        with pytest.raises(LockNotHeld), a.holding():
            pass  # pragma: no cover - never entered
        assert a.try_acquire()
        with a.holding() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND"
                " pid = pg_backend_pid() AND classid = %s AND objid = %s AND granted",
                KEY,
            ).fetchone()
            assert row is not None and row[0] == 1
        # An SQL error inside: the session and the lock stay.
        with pytest.raises(psycopg.errors.UndefinedTable), a.holding() as conn:
            conn.execute("SELECT * FROM no_such_table")
        assert _held(a)
        # A connection failure inside: the session is dropped, the lock with it.
        _terminate(pg_url, _backends(pg_url, "election-a"))
        with pytest.raises(psycopg.OperationalError), a.holding() as conn:
            conn.execute("SELECT 1")
        assert not _held(a)
        assert b.try_acquire()
    finally:
        a.close()
        b.close()


def test_errors_are_what_the_callback_builds_naming_no_server_text(pg_url: str) -> None:
    gone = SessionLock(
        PgTarget("postgresql://nobody@127.0.0.1:1/nothing", connect_timeout_s=1),
        KEY,
        idle_timeout_s=15,
        fail=lambda what, code: Refused(f"{what}: {code}"),
    )
    with pytest.raises(Refused) as caught:
        gone.try_acquire()
    assert str(caught.value) == "cannot connect: OperationalError"
    assert not _held(gone)
    gone.close()


def test_the_integrator_is_tried_on_one_kept_session_not_a_connection_per_try(
    pg_url: str,
) -> None:
    """While another process integrates, this one asks for the lock every
    ``lead_interval`` on the one session it keeps (the server sees one backend, the same
    one, try after try), and takes the lock on it when the integrator resigns."""
    first = PostgresAuditStore(PgTarget(pg_url, application_name="audit-first"))
    second = PostgresAuditStore(PgTarget(pg_url, application_name="audit-second"))
    try:
        assert first.try_lead() and _leading(first)
        before = _backends(pg_url, "audit-second")  # its reader only
        seen = []
        for _ in range(5):
            assert not second.try_lead() and not _leading(second)
            seen.append(_backends(pg_url, "audit-second") - before)
        assert all(s == seen[0] for s in seen) and len(seen[0]) == 1
        with pytest.raises(NotLeaderError):
            second.integrate(lambda *_: None, 10)
        first.resign()  # the lock is free when this returns
        assert not _leading(first)
        assert second.try_lead() and _leading(second)
        assert _backends(pg_url, "audit-second") - before == seen[0]
        assert not first.try_lead()
        # The integrator's transaction still re-checks the lock on the held session.
        assert second.integrate(lambda *_: None, 10) is None
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s",
                LEADER_LOCK,
            ).fetchone()
        assert row is not None and row[0] == "audit-second"
    finally:
        first.close()
        second.close()
    assert _backends(pg_url, "audit-second") == set()


def test_a_snapshot_store_never_contends(pg_url: str) -> None:
    reader = PostgresAuditStore(PgTarget(pg_url), snapshot=True)
    try:
        assert not reader.try_lead() and not _leading(reader)
    finally:
        reader.close()


def test_the_integrators_unreachable_database_is_a_storage_error(pg_url: str) -> None:
    store = PostgresAuditStore(PgTarget(pg_url))
    try:
        store._leader.target = PgTarget(
            "postgresql://nobody@127.0.0.1:1/nothing", connect_timeout_s=1
        )
        with pytest.raises(StorageError) as caught:
            store.try_lead()
        assert "cannot connect: OperationalError" in str(caught.value)
        assert "127.0.0.1" not in str(caught.value)
    finally:
        store.close()
