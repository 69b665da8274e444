"""The live controls store's contract, on SQLite and on PostgreSQL alike: a change by one
process is in the next snapshot of another, four-eyes reinstatements, first revocations
kept, consent states, and use counts exact under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.controls.store import ConsentState, ControlsSnapshot, ControlsStore
from gateway.errors import ConflictError, NotFoundError, PermissionDeniedError
from tests.contract.live_backends import BACKENDS, Backend, backend_fixture
from tests.helpers import Clock


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_fixture(request, tmp_path)


def test_a_change_by_one_process_is_in_the_next_snapshot_of_another(backend: Backend) -> None:
    a, b = backend.controls(), backend.controls()
    assert not b.snapshot().agency_suspended("bank")
    a.suspend_agency("bank", officer="officer_a", reason="key leaked")
    a.revoke_consent("c-1", by="officer_a", via="officer")
    assert a.revoke_certificates("serial", ["1f", "20"], by="officer_a") == 2
    assert a.revoke_certificates("serial", ["1f"], by="officer_a") == 0
    a.revoke_certificates("thumbprint", ["T" * 43], by="officer_a")
    snap = b.snapshot()
    assert snap.agency_suspended("bank") and "c-1" in snap.revoked_consents
    assert snap.certificate_revoked("1f", "x") and snap.certificate_revoked("2", "T" * 43)
    assert not snap.certificate_revoked("2", "x")
    assert b.snapshot() is snap  # unchanged version: the same object, no reload
    assert [(r.kind, r.value) for r in b.certificate_revocations()] == [
        ("serial", "1f"),
        ("serial", "20"),
        ("thumbprint", "T" * 43),
    ]
    with pytest.raises(ValueError):
        a.revoke_certificates("fingerprint", ["x"], by="o")


def test_listeners_hear_what_changed(backend: Backend) -> None:
    a, b = backend.controls(), backend.controls()
    heard: list[tuple[ControlsSnapshot, ControlsSnapshot]] = []
    b.snapshot()
    b.add_listener(lambda old, new: heard.append((old, new)))
    a.revoke_consent("c-2", by="o", via="officer")
    b.snapshot()
    assert len(heard) == 1
    assert heard[0][1].revoked_consents - heard[0][0].revoked_consents == {"c-2"}


def test_a_reinstatement_needs_a_second_officer(backend: Backend) -> None:
    s = backend.controls()
    with pytest.raises(NotFoundError):
        s.request_reinstatement("bank", officer="officer_a", reason="r")
    s.suspend_agency("bank", officer="officer_a", reason="urgent")
    s.request_reinstatement("bank", officer="officer_a", reason="new key")
    with pytest.raises(ConflictError) as twice:
        s.request_reinstatement("bank", officer="officer_b", reason="me too")
    assert twice.value.reason == "REINSTATEMENT_PENDING"
    pending = backend.controls().pending_reinstatement("bank")
    assert pending is not None and pending[0] == "officer_a"
    with pytest.raises(PermissionDeniedError) as exc:
        s.approve_reinstatement("bank", officer="officer_a")
    assert exc.value.reason == "FOUR_EYES"
    assert s.snapshot().agency_suspended("bank")
    assert s.approve_reinstatement("bank", officer="officer_b") == "officer_a"
    assert not s.snapshot().agency_suspended("bank")
    assert s.pending_reinstatement("bank") is None
    with pytest.raises(NotFoundError):
        s.approve_reinstatement("bank", officer="officer_b")


def test_a_new_suspension_drops_a_pending_reinstatement(backend: Backend) -> None:
    s = backend.controls()
    s.suspend_agency("bank", officer="officer_a", reason="one")
    s.request_reinstatement("bank", officer="officer_a", reason="r")
    _, newly = s.suspend_agency("bank", officer="officer_b", reason="again, worse")
    assert not newly and s.pending_reinstatement("bank") is None


def test_a_revocation_keeps_its_first_time_and_author(backend: Backend) -> None:
    clock = Clock(1000.0)
    s = backend.controls(clock=clock)
    at, newly = s.revoke_consent("c", by="subject-kiosk", via="subject")
    clock.now = 2000.0
    again, newly2 = s.revoke_consent("c", by="officer_a", via="officer")
    assert (at, newly, again, newly2) == (1000.0, True, 1000.0, False)
    status = backend.controls().consent_status("c")
    assert (status.state, status.revoked_by, status.revoked_via, status.revoked_at) == (
        ConsentState.REVOKED,
        "subject-kiosk",
        "subject",
        1000.0,
    )


def test_consent_states(backend: Backend) -> None:
    clock = Clock(1000.0)
    s = backend.controls(clock=clock, seed_revoked_consents=["seeded"])
    assert s.consent_status("never").state is ConsentState.UNSEEN
    assert s.consent_status("seeded").revoked_via == "seed"
    assert s.use_consent("c", max_uses=None, expires_at=1500) == 1
    assert s.consent_status("c").state is ConsentState.LIVE
    clock.now = 1500.0
    assert s.consent_status("c").state is ConsentState.EXPIRED
    assert s.use_consent("once", max_uses=1, expires_at=9999) == 1
    assert s.use_consent("once", max_uses=1, expires_at=9999) is None
    spent = s.consent_status("once")
    assert (spent.state, spent.uses, spent.max_uses, spent.expires_at) == (
        ConsentState.SPENT,
        1,
        1,
        9999,
    )


def test_seeding_twice_changes_nothing(backend: Backend) -> None:
    backend.controls(seed_revoked_consents=["a", "b"])
    s = backend.controls(seed_revoked_consents=["a", "b"])
    assert s.snapshot().revoked_consents == {"a", "b"}


def test_uses_are_exact_under_concurrency(backend: Backend) -> None:
    stores = [backend.controls() for _ in range(4)]
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


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.one_of(st.none(), st.integers(1, 6)),
    attempts=st.integers(0, 9),
    cid=st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=40),
)
def test_use_counts_follow_the_limit_for_any_consent_id(
    backend: Backend, limit: int | None, attempts: int, cid: str
) -> None:
    s = backend.controls()
    before = s.consent_status(cid).uses
    counts = [s.use_consent(cid, max_uses=limit, expires_at=0) for _ in range(attempts)]
    # The limit of the first use holds (hypothesis may reuse an id across examples).
    status = s.consent_status(cid)
    bound = status.max_uses
    expected = [
        n if bound is None or n <= bound else None for n in range(before + 1, before + 1 + attempts)
    ]
    assert counts == expected
    assert status.uses == (before + attempts if bound is None else min(bound, before + attempts))
