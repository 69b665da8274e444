from __future__ import annotations

from gateway.federation import BreakerState, CircuitBreaker
from tests.helpers import Clock


def test_opens_after_threshold_and_half_opens_after_reset() -> None:
    clock = Clock(0.0)
    b = CircuitBreaker(failure_threshold=2, reset_after_s=5, clock=clock)
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    assert b.retry_in_s() == 5
    clock.now = 5
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # one trial
    assert not b.allow()  # and only one
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now = 10
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow() and b.allow()


def test_success_resets_the_count() -> None:
    b = CircuitBreaker(failure_threshold=2)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_an_abandoned_trial_frees_the_half_open_slot() -> None:
    """A cancelled trial call must not leave the department cut off for good."""
    clock = Clock(0.0)
    b = CircuitBreaker(failure_threshold=1, reset_after_s=1, clock=clock)
    b.record_failure()
    clock.now = 1
    assert b.allow()  # the trial goes out... and its caller is cancelled
    b.abandon()
    assert b.allow()
