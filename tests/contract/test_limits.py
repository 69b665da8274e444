"""The shared rate-limit budget's contract (:class:`gateway.pipeline.limits.SharedBudget`)
on SQLite and PostgreSQL, and the limiter over it: two processes together admit no more
than one bucket and one daily ceiling allow."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import MappingProxyType
from zoneinfo import ZoneInfo

import grpc
import pytest

from gateway.errors import RateLimitedError
from gateway.pipeline.limits import (
    AgencyLimit,
    Limits,
    RateLimiter,
    RateLimitsUnavailableError,
    SharedBudget,
)

Factory = Callable[[], SharedBudget]
SLOW = 1e-6  # tokens per second: no refill within a test


def limits(rate: float, burst: int, daily: int | None) -> Limits:
    return Limits(
        AgencyLimit(rate, burst, daily), MappingProxyType({}), ZoneInfo("Asia/Shanghai"), "t"
    )


def test_a_new_bucket_starts_full_and_grants_what_it_holds(budget_factory: Factory) -> None:
    budget = budget_factory()

    def take(n: int) -> tuple[int, float]:
        got = budget.lease(
            "bank", "lending", "2026-11-05", rate_per_s=SLOW, burst=5, tokens=n,
            ceiling=0, daily=0,
        )  # fmt: skip
        return got.tokens, got.wait_s

    assert take(3) == (3, 0.0)
    assert take(5)[0] == 2
    tokens, wait = take(1)
    assert tokens == 0 and wait == pytest.approx(1 / SLOW, rel=0.01)


def test_the_bucket_refills_at_its_rate(budget_factory: Factory) -> None:
    budget = budget_factory()
    kw = {"rate_per_s": 1000.0, "burst": 2, "ceiling": 0, "daily": 0}
    assert budget.lease("bank", "p", "2026-11-05", tokens=2, **kw).tokens == 2  # type: ignore[arg-type]
    got = budget.lease("bank", "p", "2026-11-05", tokens=2, **kw)  # type: ignore[arg-type]
    assert got.tokens in (0, 1, 2) and (got.tokens > 0 or 0 < got.wait_s <= 0.001)
    threading.Event().wait(0.01)  # 10 ms at 1000/s: full again, never above burst
    assert budget.lease("bank", "p", "2026-11-05", tokens=5, **kw).tokens == 2  # type: ignore[arg-type]


def test_daily_units_stop_at_the_ceiling_and_come_back(budget_factory: Factory) -> None:
    budget = budget_factory()

    def take(n: int, day: str = "2026-11-05") -> int:
        return budget.lease(
            "bank", "lending", day, rate_per_s=SLOW, burst=1, tokens=0, ceiling=5, daily=n
        ).daily

    assert [take(3), take(3), take(3)] == [3, 2, 0]
    budget.give_back("bank", "lending", "2026-11-05", 2)
    assert take(3) == 2
    assert take(3, "2026-11-06") == 3  # a new day, a new count


def _hammer(limiters: list[RateLimiter], agency: str) -> int:
    admitted = [0, 0]
    start = threading.Barrier(2)

    def run(k: int) -> None:
        start.wait()
        for _ in range(40):
            try:
                limiters[k].admit(agency, "lending")
                admitted[k] += 1
            except RateLimitedError:
                pass

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return sum(admitted)


@pytest.mark.parametrize(
    ("rate", "burst", "ceiling", "expected"), [(SLOW, 12, None, 12), (1e6, 1000, 9, 9)]
)
def test_two_processes_share_one_bucket_and_one_ceiling(
    budget_factory: Factory, rate: float, burst: int, ceiling: int | None, expected: int
) -> None:
    """Two limiters in two "processes" (own budgets on one database), hammering at once:
    together they admit exactly the burst of a bucket that does not refill, and exactly
    the daily ceiling."""
    lim = limits(rate, burst, ceiling)
    limiters = [RateLimiter(lim, budget=budget_factory()) for _ in range(2)]
    assert _hammer(limiters, "bank") == expected


def test_a_refusal_says_when_to_retry(budget_factory: Factory) -> None:
    limiter = RateLimiter(limits(0.5, 1, None), budget=budget_factory())
    limiter.admit("bank", "lending")
    with pytest.raises(RateLimitedError) as info:
        limiter.admit("bank", "lending")
    assert 1.0 < info.value.retry_after_s <= 2.0


def test_close_gives_unspent_daily_units_back(budget_factory: Factory) -> None:
    # A ceiling of 1,000 leases 10 units at a time: one spent, nine given back on close.
    first = RateLimiter(limits(1e6, 1000, 1000), budget=budget_factory(), lease_s=1.0)
    first.admit("bank", "lending")
    budget = budget_factory()
    day = first._day.isoformat() if first._day else ""
    first.close()
    got = budget.lease(
        "bank", "lending", day, rate_per_s=SLOW, burst=1, tokens=0, ceiling=1000, daily=1000
    )
    assert got.daily == 999


def test_a_budget_out_of_reach_refuses_the_query(budget_factory: Factory) -> None:
    """Limits that cannot be checked are not enforced by admitting everything."""
    budget = budget_factory()
    limiter = RateLimiter(limits(1e6, 1000, None), budget=budget)
    budget.close()
    with pytest.raises(RateLimitsUnavailableError) as info:
        limiter.admit("bank", "lending")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
