"""The ``jti`` store's contract (:class:`gateway.stores.replay.JtiStore`) on SQLite and
PostgreSQL: reuse versus replay until expiry, bounded purges, the row bound, and two
processes claiming one ``jti`` at once."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import pytest

from gateway.auth.replay import ReplayStore, ReplayStoreUnavailableError
from gateway.stores.replay import PURGE_BATCH, Claim, JtiStore

Factory = Callable[..., JtiStore]


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_same_string_is_reuse_another_is_replay_until_expiry(jti_store_factory: Factory) -> None:
    store = jti_store_factory()
    assert store.claim("i", "j", sha("a"), expires_at=100, now=0) is Claim.ACCEPTED
    assert store.claim("i", "j", sha("a"), expires_at=100, now=50) is Claim.ACCEPTED
    assert store.claim("i", "j", sha("b"), expires_at=120, now=99.9) is Claim.REPLAYED
    assert store.claim("other-issuer", "j", sha("b"), expires_at=120, now=50) is Claim.ACCEPTED
    # At expires_at the row is dead: another string may take the jti (even before a purge).
    assert store.claim("i", "j", sha("b"), expires_at=200, now=100) is Claim.ACCEPTED
    assert store.claim("i", "j", sha("a"), expires_at=100, now=150) is Claim.REPLAYED
    assert store.next_expiry() == 200  # the other issuer's row was purged at 150


def test_expired_rows_are_purged_in_bounded_batches(jti_store_factory: Factory) -> None:
    store = jti_store_factory()
    n = PURGE_BATCH * 2 + 10
    for k in range(n):
        store.claim("i", f"old{k}", sha(str(k)), expires_at=10, now=0)
    store.claim("i", "live", sha("live"), expires_at=1000, now=0)
    assert len(store) == n + 1
    store.claim("i", "new1", sha("n1"), expires_at=1000, now=20)
    assert len(store) == n + 2 - PURGE_BATCH  # one batch per claim, not all at once
    assert store.purge(20, batch=10_000) == n - PURGE_BATCH
    assert len(store) == 2  # the live rows stay
    assert store.next_expiry() == 1000


def test_a_full_store_refuses_new_rows_and_keeps_live_ones(jti_store_factory: Factory) -> None:
    store = jti_store_factory(max_entries=2)
    assert store.claim("i", "a", sha("a"), expires_at=100, now=0) is Claim.ACCEPTED
    assert store.claim("i", "b", sha("b"), expires_at=200, now=0) is Claim.ACCEPTED
    assert store.claim("i", "c", sha("c"), expires_at=300, now=1) is Claim.FULL
    assert len(store) == 2
    # Known rows still answer: reuse accepted, a replay still a replay.
    assert store.claim("i", "a", sha("a"), expires_at=100, now=2) is Claim.ACCEPTED
    assert store.claim("i", "a", sha("x"), expires_at=100, now=2) is Claim.REPLAYED
    # Once "a" has expired, its row is purged and "c" fits.
    assert store.claim("i", "c", sha("c"), expires_at=300, now=100) is Claim.ACCEPTED
    assert len(store) == 2


def test_the_gateway_wrapper_maps_full_to_unavailable(jti_store_factory: Factory) -> None:
    wrapped = ReplayStore(store=jti_store_factory(max_entries=1))
    assert wrapped.claim("i", "a", sha("a"), deadline=100, now=0)
    assert not wrapped.claim("i", "a", sha("b"), deadline=100, now=1)
    with pytest.raises(ReplayStoreUnavailableError) as info:
        wrapped.claim("i", "b", sha("b"), deadline=100, now=40)
    assert info.value.reason == "REPLAY_STORE_FULL"
    assert info.value.retry_after_s == 60  # when the earliest row expires


def test_two_processes_claiming_one_jti_accept_exactly_one(jti_store_factory: Factory) -> None:
    """Two stores on one database (two processes), each claiming the same 40 jtis with
    its own token string at once: every jti is accepted for exactly one of them."""
    stores = [jti_store_factory(), jti_store_factory()]
    won: list[list[bool]] = [[], []]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            start.wait()
            for j in range(40):
                claim = stores[k].claim("iss", f"jti{j}", sha(f"p{k}"), expires_at=1e12, now=0)
                won[k].append(claim is Claim.ACCEPTED)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert [a + b for a, b in zip(won[0], won[1], strict=True)] == [1] * 40
    assert len(stores[0]) == 40
