"""The per-client rate limit of the public page."""

from __future__ import annotations

import pytest

from gateway.portal.limiter import ClientLimiter, client_key, retry_after_header
from tests.unit.portal.fakes import Clock


def test_a_client_gets_its_burst_then_waits_for_the_rate() -> None:
    clock = Clock()
    limiter = ClientLimiter(rate_per_s=0.5, burst=3, clock=clock)
    assert [limiter.admit("203.0.113.7") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.admit("203.0.113.7") == pytest.approx(2.0)
    clock.now += 1.0
    assert limiter.admit("203.0.113.7") == pytest.approx(1.0)  # nothing taken by a refusal
    clock.now += 1.0
    assert limiter.admit("203.0.113.7") == 0.0


def test_clients_are_limited_separately() -> None:
    limiter = ClientLimiter(rate_per_s=0.1, burst=1, clock=Clock())
    assert limiter.admit("203.0.113.7") == 0.0
    assert limiter.admit("203.0.113.7") > 0
    assert limiter.admit("203.0.113.8") == 0.0


def test_an_ipv6_client_is_one_client_across_its_64() -> None:
    limiter = ClientLimiter(rate_per_s=0.1, burst=1, clock=Clock())
    assert limiter.admit("2001:db8:1:2::1") == 0.0
    assert limiter.admit("2001:db8:1:2:ffff::9") > 0
    assert limiter.admit("2001:db8:1:3::1") == 0.0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("", ""),
        ("testclient", "testclient"),
    ],
)
def test_client_keys(address: str, key: str) -> None:
    assert client_key(address) == key


def test_memory_is_bounded_least_recently_seen_dropped_first() -> None:
    limiter = ClientLimiter(rate_per_s=0.001, burst=1, max_clients=2, clock=Clock())
    limiter.admit("10.0.0.1")
    limiter.admit("10.0.0.2")
    limiter.admit("10.0.0.1")  # seen again: now the most recent
    limiter.admit("10.0.0.3")  # drops 10.0.0.2
    assert len(limiter) == 2
    assert limiter.admit("10.0.0.1") > 0  # kept, still empty
    assert limiter.admit("10.0.0.2") == 0.0  # dropped, starts again


@pytest.mark.parametrize(("wait", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (59.5, "60")])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: str) -> None:
    assert retry_after_header(wait) == header


@pytest.mark.parametrize(
    ("rate", "burst", "clients"), [(0, 1, 1), (1, 0, 1), (1, 1, 0), (float("inf"), 1, 1)]
)
def test_nonsense_limits_are_refused(rate: float, burst: int, clients: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        ClientLimiter(rate_per_s=rate, burst=burst, max_clients=clients)
