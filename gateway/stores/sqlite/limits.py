"""Rate limits in one SQLite file: shared by the gateway processes of one host.

    budget = SQLiteRateBudget("limits.sqlite")
    limiter = RateLimiter(limits, budget=budget)

Implements :class:`gateway.pipeline.limits.SharedBudget` with the same tables and rules
as PostgreSQL's ``rate_lease`` (gateway/stores/postgres/migrations/0004_rate_limits.sql):
each lease is one ``BEGIN IMMEDIATE`` transaction (processes take turns on the file's
write lock), the bucket is timed by this host's wall clock (``clock``, Unix seconds).
For one host; several hosts need the PostgreSQL budget. Failures raise
:class:`~gateway.pipeline.limits.RateLimitsUnavailableError`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from gateway.pipeline.limits import Lease, RateLimitsUnavailableError, SharedBudget
from gateway.stores.sqlite import SQLiteSetupError, ensure_format, open_durable

__all__ = ["SQLiteRateBudget"]

_FORMAT = "credit-gateway rate-limits 1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rate_buckets (
    agency TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    stamp REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_daily (
    agency TEXT NOT NULL,
    purpose TEXT NOT NULL,
    day TEXT NOT NULL,
    used INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (agency, purpose, day)
);
"""


class SQLiteRateBudget(SharedBudget):
    """The shared budget in an SQLite file (see the module docstring). Thread-safe.
    Raises RateLimitsUnavailableError if the file cannot be opened."""

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._conn = open_durable(path, schema=_SCHEMA)
            found = ensure_format(self._conn, _FORMAT)
        except (sqlite3.Error, SQLiteSetupError) as exc:
            raise RateLimitsUnavailableError(f"rate limits file: cannot open ({exc})") from None
        if found != _FORMAT:
            self._conn.close()
            raise RateLimitsUnavailableError(f"rate limits file: format {found!r}")

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
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                granted, wait = 0, 0.0
                if tokens > 0:
                    now = self._clock()
                    row = conn.execute(
                        "SELECT tokens, stamp FROM rate_buckets WHERE agency = ?", (agency,)
                    ).fetchone()
                    have_now, stamp = (float(burst), now) if row is None else row
                    have = min(float(burst), have_now + max(now - stamp, 0.0) * rate_per_s)
                    # A billionth of a token of slack, as in the PostgreSQL function.
                    granted = max(min(tokens, math.floor(have + 1e-9)), 0)
                    conn.execute(
                        "INSERT INTO rate_buckets (agency, tokens, stamp) VALUES (?, ?, ?)"
                        " ON CONFLICT (agency) DO UPDATE SET tokens = excluded.tokens,"
                        " stamp = max(stamp, excluded.stamp)",
                        (agency, have - granted, now),
                    )
                    if granted == 0:
                        wait = (1 - have) / rate_per_s
                granted_daily = 0
                if daily > 0:
                    row = conn.execute(
                        "SELECT used FROM rate_daily WHERE agency = ? AND purpose = ? AND day = ?",
                        (agency, purpose, day),
                    ).fetchone()
                    if row is None:  # a new day: earlier days' rows are done with
                        conn.execute(
                            "DELETE FROM rate_daily WHERE agency = ? AND purpose = ? AND day < ?",
                            (agency, purpose, day),
                        )
                    used = 0 if row is None else int(row[0])
                    granted_daily = max(min(daily, ceiling - used), 0)
                    conn.execute(
                        "INSERT INTO rate_daily (agency, purpose, day, used) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (agency, purpose, day) DO UPDATE SET used = excluded.used",
                        (agency, purpose, day, used + granted_daily),
                    )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):  # closed, or rolled back already
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise RateLimitsUnavailableError(f"rate limits file: {exc}") from None
        return Lease(tokens=granted, daily=granted_daily, wait_s=wait)

    def give_back(self, agency: str, purpose: str, day: str, daily: int) -> None:
        """See :meth:`SharedBudget.give_back`."""
        with self._lock:
            try:
                self._conn.execute(
                    "UPDATE rate_daily SET used = max(used - ?, 0)"
                    " WHERE agency = ? AND purpose = ? AND day = ?",
                    (daily, agency, purpose, day),
                )
            except sqlite3.Error as exc:
                raise RateLimitsUnavailableError(f"rate limits file: {exc}") from None

    def close(self) -> None:
        """Close the file (no call may follow)."""
        with self._lock:
            self._conn.close()
