from __future__ import annotations

from gateway.federation import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_half_opens_after_reset() -> None:
    clock = Clock()
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
