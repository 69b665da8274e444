"""The live controls store: sets, four eyes, exact use counts, propagation between processes."""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.controls import (
    ConsentState,
    ControlsSnapshot,
    ControlsStore,
    ControlsStoreError,
    normalize_serial,
    normalize_thumbprint,
)
from gateway.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from gateway.stores.sqlite.controls import SQLiteControlsStore
from tests.helpers import Clock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "controls.sqlite"


def test_a_change_by_one_store_is_seen_by_another_on_its_next_snapshot(path: Path) -> None:
    a, b = SQLiteControlsStore(path), SQLiteControlsStore(path)
    assert not b.snapshot().agency_suspended("bank")
    a.suspend_agency("bank", officer="officer_a", reason="key leaked")
    a.revoke_consent("c-1", by="officer_a", via="officer")
    a.revoke_certificates("serial", ["1f"], by="officer_a")
    a.revoke_certificates("thumbprint", ["T" * 43], by="officer_a")
    snap = b.snapshot()
    assert snap.agency_suspended("bank") and "c-1" in snap.revoked_consents
    assert snap.certificate_revoked("1f", "x") and snap.certificate_revoked("2", "T" * 43)
    assert not snap.certificate_revoked("2", "x")
    assert b.snapshot() is snap  # unchanged version: the same object, no reload


def test_listeners_hear_what_changed_and_a_dead_method_is_dropped(path: Path) -> None:
    a, b = SQLiteControlsStore(path), SQLiteControlsStore(path)
    heard: list[tuple[ControlsSnapshot, ControlsSnapshot]] = []

    class Owner:
        def hear(self, old: ControlsSnapshot, new: ControlsSnapshot) -> None:
            heard.append((old, new))

    owner = Owner()
    b.add_listener(owner.hear)
    a.revoke_consent("c-2", by="o", via="officer")
    b.snapshot()
    assert len(heard) == 1 and heard[0][1].revoked_consents - heard[0][0].revoked_consents == {
        "c-2"
    }
    del owner
    a.revoke_consent("c-3", by="o", via="officer")
    b.snapshot()
    assert len(heard) == 1 and b._listeners == []


def test_a_reinstatement_needs_a_second_officer(path: Path) -> None:
    s = SQLiteControlsStore(path)
    with pytest.raises(NotFoundError):
        s.request_reinstatement("bank", officer="officer_a", reason="r")
    s.suspend_agency("bank", officer="officer_a", reason="urgent")
    s.request_reinstatement("bank", officer="officer_a", reason="new key")
    assert s.pending_reinstatement("bank") is not None
    with pytest.raises(PermissionDeniedError) as exc:
        s.approve_reinstatement("bank", officer="officer_a")
    assert exc.value.reason == "FOUR_EYES"
    assert s.snapshot().agency_suspended("bank")
    assert s.approve_reinstatement("bank", officer="officer_b") == "officer_a"
    assert not s.snapshot().agency_suspended("bank")
    assert s.pending_reinstatement("bank") is None
    with pytest.raises(NotFoundError):
        s.approve_reinstatement("bank", officer="officer_b")


def test_a_new_suspension_drops_a_pending_reinstatement(path: Path) -> None:
    s = SQLiteControlsStore(path)
    s.suspend_agency("bank", officer="officer_a", reason="one")
    s.request_reinstatement("bank", officer="officer_a", reason="r")
    _, newly = s.suspend_agency("bank", officer="officer_b", reason="again, worse")
    assert not newly and s.pending_reinstatement("bank") is None


def test_a_revocation_keeps_its_first_time_and_author(path: Path) -> None:
    clock = Clock(1000.0)
    s = SQLiteControlsStore(path, clock=clock)
    at, newly = s.revoke_consent("c", by="subject-kiosk", via="subject")
    clock.now = 2000.0
    again, newly2 = s.revoke_consent("c", by="officer_a", via="officer")
    assert (at, newly, again, newly2) == (1000.0, True, 1000.0, False)
    status = s.consent_status("c")
    assert (status.state, status.revoked_by, status.revoked_via) == (
        ConsentState.REVOKED,
        "subject-kiosk",
        "subject",
    )


def test_consent_states(path: Path) -> None:
    clock = Clock(1000.0)
    s = SQLiteControlsStore(path, clock=clock, seed_revoked_consents=["seeded"])
    assert s.consent_status("never").state is ConsentState.UNSEEN
    assert s.consent_status("seeded").revoked_via == "seed"
    assert s.use_consent("c", max_uses=None, expires_at=1500) == 1
    assert s.consent_status("c").state is ConsentState.LIVE
    clock.now = 1500.0
    assert s.consent_status("c").state is ConsentState.EXPIRED
    assert s.use_consent("once", max_uses=1, expires_at=9999) == 1
    assert s.use_consent("once", max_uses=1, expires_at=9999) is None
    st_ = s.consent_status("once")
    assert (st_.state, st_.uses, st_.max_uses) == (ConsentState.SPENT, 1, 1)


def test_seeding_twice_changes_nothing(path: Path) -> None:
    SQLiteControlsStore(path, seed_revoked_consents=["a", "b"])
    s = SQLiteControlsStore(path, seed_revoked_consents=["a", "b"])
    assert s.snapshot().revoked_consents == {"a", "b"}


def test_uses_are_exact_under_threads(path: Path) -> None:
    stores = [SQLiteControlsStore(path) for _ in range(4)]
    got: list[int | None] = []
    lock = threading.Lock()

    def use(store: ControlsStore) -> None:
        for _ in range(10):
            n = store.use_consent("limited", max_uses=7, expires_at=0)
            with lock:
                got.append(n)

    threads = [threading.Thread(target=use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(n for n in got if n is not None) == list(range(1, 8))
    assert got.count(None) == 40 - 7


def _use_many(path: str, n: int, out: multiprocessing.Queue[list[int | None]]) -> None:
    store = SQLiteControlsStore(path)
    out.put([store.use_consent("shared", max_uses=25, expires_at=0) for _ in range(n)])


def test_uses_are_exact_across_processes(path: Path) -> None:
    SQLiteControlsStore(path)  # created before the children race
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[int | None]] = ctx.Queue()
    procs = [ctx.Process(target=_use_many, args=(str(path), 20, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [n for _ in procs for n in out.get(timeout=60)]
    for p in procs:
        p.join(30)
    assert sorted(n for n in results if n is not None) == list(range(1, 26))
    assert results.count(None) == 60 - 25


def _suspend_later(path: str, ready: Any, done: Any) -> None:
    store = SQLiteControlsStore(path)
    ready.wait(30)
    store.suspend_agency("bank", officer="o", reason="r")
    done.put(time.time())  # just after the commit


def test_the_next_snapshot_after_another_process_commits_sees_the_change(path: Path) -> None:
    # The promise is "the next request after the commit": no cache between a commit in
    # one process and a snapshot in another. Said without a clock (how fast is for
    # bench.controls_bench): once the child has committed, one snapshot must show it.
    reader = SQLiteControlsStore(path)
    assert not reader.snapshot().agency_suspended("bank")
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_suspend_later, args=(str(path), ready, done))
    proc.start()
    ready.set()
    done.get(timeout=60)  # the child's commit has returned
    proc.join(30)
    assert reader.snapshot().agency_suspended("bank")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "controls.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(ControlsStoreError) as exc:
        SQLiteControlsStore(bad)
    assert str(bad) not in str(exc.value) and exc.value.reason == "CONTROLS_UNAVAILABLE"


def test_another_format_is_refused(path: Path) -> None:
    SQLiteControlsStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = 'controls-0' WHERE key = 'format'")
    conn.commit()
    conn.close()
    with pytest.raises(ControlsStoreError, match="format"):
        SQLiteControlsStore(path)


@given(st.integers(min_value=0, max_value=2**159 - 1))
def test_a_serial_reads_in_every_spelling(serial: int) -> None:
    hexed = format(serial, "x")
    padded = hexed.rjust(len(hexed) + len(hexed) % 2, "0")
    colons = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2)).upper()
    for spelling in (hexed, "0x" + hexed, colons, hexed.upper()):
        assert normalize_serial(spelling) == hexed


@pytest.mark.parametrize("bad", ["", "0x", "xyz", "1" * 41, "-1"])
def test_a_malformed_serial_is_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        normalize_serial(bad)


@given(st.binary(min_size=0, max_size=64))
def test_a_thumbprint_reads_as_base64url_or_hex(der: bytes) -> None:
    digest = hashlib.sha256(der).digest()
    b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert normalize_thumbprint(b64) == b64
    assert normalize_thumbprint(digest.hex()) == b64
    assert normalize_thumbprint(digest.hex(":").upper()) == b64


@pytest.mark.parametrize("bad", ["", "abc", "A" * 42, "A" * 44, "g" * 64, "ab" * 31])
def test_a_malformed_thumbprint_is_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        normalize_thumbprint(bad)
