"""LISTEN/NOTIFY propagation with its freshness bound, against a real PostgreSQL cluster
of this module's own (the tests stop and restart it): a change is heard at once, a
change made while the listener reconnects is not lost, and a listener whose database
is gone fails closed within its bound and recovers by itself."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from gateway.controls.store import ControlsStoreError
from gateway.policyadmin.errors import PolicyStoreError
from gateway.stores.postgres.connect import connect, open_pool
from gateway.stores.postgres.controls import PgControlsStore
from gateway.stores.postgres.notify import LiveListener, LiveStateStaleError
from gateway.stores.postgres.policy_versions import PgVersionStore
from gateway.stores.postgres.url import PgTarget
from tests.pg import PgCluster, fresh_database, start_cluster

STALE_S = 2.0
POLL_S = 0.25


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = start_cluster()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def url(cluster: PgCluster) -> Iterator[str]:
    with fresh_database(cluster) as u:
        yield u


def _pg_ctl(cluster: PgCluster, *args: str) -> None:
    subprocess.run(
        [*cluster.run_as, str(cluster.bindir / "pg_ctl"), "-D", str(cluster.root / "data"), *args],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip


def _server_down(cluster: PgCluster) -> None:
    _pg_ctl(cluster, "-m", "fast", "stop")  # immediate could lose unflushed commits


def _server_up(cluster: PgCluster) -> None:
    opts = f"-c listen_addresses='' -c unix_socket_directories={cluster.root} -c fsync=off"
    _pg_ctl(cluster, "-l", str(cluster.root / "log"), "-o", opts, "-w", "-t", "60", "start")


def _wait(predicate: object, timeout_s: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout_s``."""
    began = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - began < timeout_s, "not within the time allowed"
        time.sleep(0.01)
    return time.monotonic() - began


def _followed(url: str) -> tuple[LiveListener, PgControlsStore]:
    target = PgTarget(url)
    store = PgControlsStore(open_pool(target, max_size=2, timeout_s=1.0))
    listener = LiveListener(target, stale_after_s=STALE_S, poll_interval_s=POLL_S)
    listener.subscribe("controls", store.refresh)
    store.follow(listener)
    listener.start()
    assert listener.wait_fresh(10)
    return listener, store


def test_a_change_elsewhere_is_heard_at_once(url: str) -> None:
    listener, store = _followed(url)
    other = PgControlsStore(open_pool(PgTarget(url), max_size=1))
    try:
        # Longer polls than the test waits: only the notification can deliver it this fast.
        other.suspend_agency("bank", officer="officer_a", reason="key leaked")
        took = _wait(lambda: store.snapshot().agency_suspended("bank"), 5)
        assert took < POLL_S * 2, took
    finally:
        listener.close()
        other.close()
        store.close()


def test_a_change_made_while_reconnecting_is_not_lost(url: str) -> None:
    listener, store = _followed(url)
    other = PgControlsStore(open_pool(PgTarget(url), max_size=1))
    try:
        pid = listener.backend_pid
        assert pid is not None
        with connect(PgTarget(url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Committed while the listener has no connection: no notification reaches it.
        other.revoke_consent("c-lost", by="officer_a", via="officer")
        _wait(lambda: "c-lost" in store.snapshot().revoked_consents, 10)
        _wait(lambda: listener.connects >= 2, 10)
        assert listener.backend_pid not in (None, pid)
    finally:
        listener.close()
        other.close()
        store.close()


def test_a_lost_database_fails_closed_within_the_bound_and_recovers(
    cluster: PgCluster, url: str
) -> None:
    listener, store = _followed(url)
    try:
        assert listener.fresh()
        store.snapshot()
        _server_down(cluster)
        down_at = time.monotonic()
        _wait(lambda: not listener.fresh(), STALE_S + 2)
        # Stale no later than the bound (plus the last poll's age), and not much sooner.
        assert time.monotonic() - down_at <= STALE_S + POLL_S + 0.5
        with pytest.raises(LiveStateStaleError) as refused:
            store.snapshot()
        assert refused.value.reason == "LIVE_STATE_STALE"
        # The log's message says for how long and the bound; the caller's names no server.
        assert "bound 2 s" in refused.value.message and "/" not in refused.value.message
        assert "retry on another process" in refused.value.public_message
        # Every store call fails promptly (the pool's acquisition timeout) with the store's
        # own error, naming neither the socket folder nor the server's text.
        versions = PgVersionStore(open_pool(PgTarget(url), min_size=0, max_size=1, timeout_s=1.0))
        with pytest.raises(ControlsStoreError) as write:
            store.revoke_consent("c", by="o", via="officer")
        with pytest.raises(PolicyStoreError) as read:
            versions.active()
        for err in (write.value, read.value):
            assert str(cluster.root) not in err.message and "/" not in err.message
        versions.close()
        _server_up(cluster)
        _wait(listener.fresh, 30)  # reconnects by itself
        writer = PgControlsStore(open_pool(PgTarget(url), max_size=1))
        writer.suspend_agency("bank", officer="o", reason="r")
        _wait(lambda: store.snapshot().agency_suspended("bank"), 5)
        writer.close()
    finally:
        listener.close()
        store.close()


def test_the_bound_must_exceed_the_poll() -> None:
    with pytest.raises(ValueError):
        LiveListener(PgTarget("postgresql://x@/y"), stale_after_s=1.0, poll_interval_s=1.0)
