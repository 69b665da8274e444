"""Rate limits on PostgreSQL: one token bucket per agency and one daily count per
(agency, purpose, day) for every gateway process on every host.

    budget = PostgresRateBudget(open_pool(config.storage.target_for("limits"), max_size=2))
    limiter = RateLimiter(limits, budget=budget)

Implements :class:`gateway.pipeline.limits.SharedBudget` with one statement per lease,
``SELECT * FROM rate_lease(...)`` (migrations/0004_rate_limits.sql): the function locks
the agency's bucket row and the day's counter row for its own short transaction, refills
the bucket by the **server's** clock (one clock for every host) and grants what is
there. The limiter leases in chunks (see :mod:`gateway.pipeline.limits`), so most queries
cost no statement at all. Failures raise
:class:`~gateway.pipeline.limits.RateLimitsUnavailableError` (the query is refused).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.pipeline.limits import Lease, RateLimitsUnavailableError, SharedBudget

__all__ = ["PostgresRateBudget"]

_LEASE = "SELECT granted, wait_s, granted_daily FROM rate_lease(%s, %s, %s, %s, %s, %s, %s, %s)"
_GIVE_BACK = (
    "UPDATE rate_daily SET used = greatest(used - %s, 0)"
    " WHERE agency = %s AND purpose = %s AND day = %s"
)


class PostgresRateBudget(SharedBudget):
    """The shared budget in PostgreSQL (see the module docstring). Thread-safe;
    ``owns_pool``: :meth:`close` closes the pool too. The pool must be this budget's
    own: its connections are switched to autocommit (each lease is one statement)."""

    def __init__(
        self, pool: ConnectionPool[psycopg.Connection[Any]], *, owns_pool: bool = True
    ) -> None:
        self._pool = pool
        self._owns_pool = owns_pool
        self._closed = False

    def lease(
        self,
        agency: str,
        purpose: str,
        day: str,
        *,
        rate_per_s: float,
        burst: int,
        tokens: int,
        ceiling: int,
        daily: int,
    ) -> Lease:
        """See :meth:`SharedBudget.lease`."""
        args = (agency, purpose, day, rate_per_s, burst, tokens, ceiling, daily)
        try:
            with self._pool.connection() as conn:
                # One statement, atomic by itself: no BEGIN and COMMIT round trips.
                conn.autocommit = True
                row = conn.execute(_LEASE, args).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise _unavailable(exc) from None
        if row is None:  # pragma: no cover - the function always returns one row
            raise RateLimitsUnavailableError("rate_lease returned no row")
        return Lease(tokens=int(row[0]), daily=int(row[2]), wait_s=float(row[1]))

    def give_back(self, agency: str, purpose: str, day: str, daily: int) -> None:
        """See :meth:`SharedBudget.give_back`."""
        try:
            with self._pool.connection() as conn:
                conn.autocommit = True
                conn.execute(_GIVE_BACK, (daily, agency, purpose, day))
        except (psycopg.Error, PoolTimeout) as exc:
            raise _unavailable(exc) from None

    def close(self) -> None:
        """Close the pool if this budget owns it (idempotent)."""
        if not self._closed:
            self._closed = True
            if self._owns_pool:
                self._pool.close()


def _unavailable(exc: BaseException) -> RateLimitsUnavailableError:
    if isinstance(exc, psycopg.Error):
        return RateLimitsUnavailableError(
            f"rate limits database: {exc.sqlstate or type(exc).__name__}"
        )
    return RateLimitsUnavailableError("rate limits database: no connection in time")
