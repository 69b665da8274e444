"""A consecutive-failure circuit breaker.

A department that is down would otherwise cost every query its full timeout.
After ``failure_threshold`` consecutive failures the circuit opens: calls fail
at once for ``reset_after_s``. Then one trial call is let through (half open);
its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """Closed (calls go out), open (calls fail at once) or half open (one trial call)."""

    # Integer values double as the Prometheus gauge value.
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """One department's breaker; not thread-safe (one event loop uses it).

    ``failure_threshold`` consecutive failures (at least 1) open it for ``reset_after_s``
    seconds of ``clock`` (monotonic seconds by default). Raises ValueError for a threshold
    below 1.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        reset_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state now: an open circuit reads half open once ``reset_after_s`` have passed."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_after_s
        ):
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one trial at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: forget the failures and close the circuit."""
        self._failures = 0
        self._trial_in_flight = False
        self._state = BreakerState.CLOSED

    def record_failure(self) -> None:
        """A call failed: open the circuit at the threshold, or at once if it was the trial."""
        self._trial_in_flight = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def abandon(self) -> None:
        """A call ended with neither success nor failure (cancelled): free the
        half-open trial slot so that the next call may try again."""
        self._trial_in_flight = False

    def retry_in_s(self) -> float:
        """Seconds until a trial call will be allowed (0 if allowed now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.reset_after_s - (self._clock() - self._opened_at))
