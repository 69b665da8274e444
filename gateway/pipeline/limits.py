"""Per-agency rate limits and the counters harvesting alarms read.

    limits = parse_limits(doc, agencies=registry.ids(Role.AGENCY), purposes=purposes)
    limiter = RateLimiter(limits, metrics=metrics)
    limiter.admit("bank_a", "lending", subject_key=pseudonym, case_reference=True)
    limiter.configure(new_limits)              # a policy activation: hot, no restart

Two limits, both from ``limits.toml`` of the active policy version (defaults plus
per-agency overrides):

* a **token bucket per agency**: ``rate_per_s`` queries per second sustained, up to
  ``burst`` at once. The bucket starts full; a query takes one token; a refused query takes
  none. In any window of ``t`` seconds at most ``burst + rate_per_s * t`` queries are admitted.
* a **daily ceiling per (agency, purpose)**: at most ``daily_per_purpose`` (or the purpose's
  own ``[daily]`` entry) queries per local calendar day in ``timezone`` (Beijing by default,
  like the free quotas of :mod:`gateway.billing.meter`); the count resets at local midnight.

Both are checked before a query is decided, before anything is reserved in the ledger and
before any department is asked; an admitted query counts whatever its outcome (a query
the policy then denies still asked). Over a limit: :class:`~gateway.errors.RateLimitedError`
(RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo).

**Alone** (no budget) the state is per process: two gateway processes each admit up to
the limit. **Shared** (``RateLimiter(budget=...)``, a :class:`SharedBudget` such as
:class:`~gateway.stores.postgres.limits.PostgresRateBudget`, configured by ``[storage]``
for the store ``limits``), every process on every host draws from one bucket per agency
and one daily count per (agency, purpose), kept in the database. A query must not pay a
database round trip: each process **leases** tokens in chunks of
``ceil(rate_per_s * lease_s)`` (at least 1, at most ``burst``) and spends them locally;
a leased token is good for ``lease_s`` seconds (default 0.1), then dropped. So one
statement serves a whole chunk of queries (one per query only for agencies slower than
``1 / lease_s`` per second), and the guarantee becomes: in any window of ``t`` seconds,
across all processes, at most ``burst + rate_per_s * (t + lease_s)`` queries are admitted
(every admitted query spent a token taken from the shared bucket at most ``lease_s``
earlier). Tokens a process leased but did not spend are lost, never double-spent: the
error is toward refusing. Daily units are leased in chunks of at most 1 % of the
ceiling (1 for ceilings under 200), so the day's count is exact to within one chunk per
process; :meth:`RateLimiter.close` gives unspent daily units back. A database that cannot
be reached refuses the query (:class:`RateLimitsUnavailableError`, UNAVAILABLE): limits
that cannot be checked are not enforced by admitting everything. The lease runs on the
calling thread (the event loop): one short statement per chunk; ``bench/limits_shared.py``
measures what it costs.

The harvesting counters below stay per process (they feed metrics, which aggregate across
processes). Memory is bounded: agencies are a registered set, purposes a closed list, and
the day's counters are dropped at midnight.

Harvesting counters (:class:`~gateway.runtime.metrics.Metrics`): queries without a case
reference per agency, and per agency the subjects first seen today among those queries
(a bounded set of 8-byte digests of the keyed subject pseudonym, cleared at local midnight;
once :data:`MAX_SUBJECTS_PER_DAY` are held, every further subject counts as new: an
overcount errs on the side of the alarm). Labels carry agency ids only, never a subject.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc

from gateway.errors import ConfigError, LocalError, RateLimitedError
from gateway.runtime.metrics import Metrics

__all__ = [
    "DEFAULT_LEASE_S",
    "MAX_SUBJECTS_PER_DAY",
    "UNLIMITED",
    "AgencyLimit",
    "Lease",
    "Limits",
    "RateLimiter",
    "RateLimitsUnavailableError",
    "SharedBudget",
    "TokenBucket",
    "parse_limits",
]

#: How long a leased token stays good in a process (seconds); see the module docstring.
DEFAULT_LEASE_S = 0.1

#: Distinct subjects remembered per agency per day (8 bytes each: 512 KiB per agency).
MAX_SUBJECTS_PER_DAY = 65_536
_SLACK = 1e-9
_TOP_KEYS = frozenset({"version", "timezone", "default", "agencies"})
_LIMIT_KEYS = frozenset({"rate_per_s", "burst", "daily_per_purpose", "daily"})


@dataclass(frozen=True, slots=True)
class AgencyLimit:
    """One agency's limits: ``rate_per_s`` (queries per second, > 0, ``inf``: none),
    ``burst`` (>= 1) and the daily ceiling per purpose (``daily`` by purpose, else
    ``daily_per_purpose``; None: no ceiling)."""

    rate_per_s: float
    burst: int
    daily_per_purpose: int | None
    daily: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def ceiling(self, purpose: str) -> int | None:
        """The daily ceiling for ``purpose`` (None: none)."""
        return self.daily.get(purpose, self.daily_per_purpose)


@dataclass(frozen=True, slots=True)
class Limits:
    """Every agency's limits: ``default`` unless ``agencies`` names it; days in ``timezone``."""

    default: AgencyLimit
    agencies: Mapping[str, AgencyLimit]
    timezone: ZoneInfo
    version: str = ""

    def of(self, agency: str) -> AgencyLimit:
        """The limits of ``agency``."""
        return self.agencies.get(agency, self.default)


#: No limits at all (a gateway without a limits file).
UNLIMITED = Limits(
    AgencyLimit(math.inf, 1, None), MappingProxyType({}), ZoneInfo("Asia/Shanghai"), "none"
)


#: The largest burst or daily ceiling: the shared budget on PostgreSQL counts in 32-bit
#: integers (migration 0004), and a limit it cannot hold must be refused here, at load,
#: not turn every query into "cannot check rate limits" later.
MAX_COUNT = 2**31 - 1


def _positive_int(value: Any, key: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value}")
    if value > MAX_COUNT:
        raise ConfigError(key, f"must be at most {MAX_COUNT:,}, got {value:,}")
    return value


def _limit(raw: Any, key: str, base: AgencyLimit | None, purposes: Collection[str]) -> AgencyLimit:
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a table")
    unknown = sorted(set(raw) - _LIMIT_KEYS)
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}", f"unknown key; one of {', '.join(sorted(_LIMIT_KEYS))}"
        )
    if base is None:
        for required in ("rate_per_s", "burst"):
            if required not in raw:
                raise ConfigError(f"{key}.{required}", "missing")
    rate: float = base.rate_per_s if base is not None else 0.0
    if "rate_per_s" in raw:
        value = raw["rate_per_s"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}.rate_per_s", "must be a number (queries per second)")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{key}.rate_per_s", f"must be a finite number above 0, got {value}")
        rate = float(value)
    burst = (
        _positive_int(raw["burst"], f"{key}.burst", minimum=1)
        if "burst" in raw
        else (base.burst if base is not None else 1)
    )
    daily_default = base.daily_per_purpose if base is not None else None
    if "daily_per_purpose" in raw:
        daily_default = _positive_int(
            raw["daily_per_purpose"], f"{key}.daily_per_purpose", minimum=0
        )
    daily = dict(base.daily) if base is not None else {}
    if "daily" in raw:
        table = raw["daily"]
        if not isinstance(table, dict):
            raise ConfigError(f"{key}.daily", "must be a table of purpose = queries per day")
        for purpose, value in table.items():
            if purpose not in purposes:
                raise ConfigError(f"{key}.daily.{purpose}", "unknown purpose")
            daily[purpose] = _positive_int(value, f"{key}.daily.{purpose}", minimum=0)
    return AgencyLimit(rate, burst, daily_default, MappingProxyType(daily))


def parse_limits(
    doc: Mapping[str, Any], *, agencies: Collection[str] | None, purposes: Collection[str]
) -> Limits:
    """``limits.toml`` (already parsed TOML) as :class:`Limits`.

    ``agencies``: the registered agency ids (None: not known, names unchecked). Integers
    must be integers (a float burst is refused); ``rate_per_s`` may be fractional.

    Raises:
        ConfigError: an unknown key, a missing or out-of-range value, an unknown zone,
            agency or purpose; the key names it (``agencies.bank_a.burst``).
    """
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; one of {', '.join(sorted(_TOP_KEYS))}")
    tz_name = doc.get("timezone", "Asia/Shanghai")
    if not isinstance(tz_name, str) or not tz_name:
        raise ConfigError("timezone", "must be an IANA zone name such as Asia/Shanghai")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("timezone", f"unknown time zone {tz_name!r}") from None
    if "default" not in doc:
        raise ConfigError("default", "missing: the limits of agencies not named")
    default = _limit(doc["default"], "default", None, purposes)
    raw_agencies = doc.get("agencies", {})
    if not isinstance(raw_agencies, dict):
        raise ConfigError("agencies", "must be a table of agency id = limits")
    per: dict[str, AgencyLimit] = {}
    for agency, raw in raw_agencies.items():
        if agencies is not None and agency not in agencies:
            raise ConfigError(f"agencies.{agency}", "not an agency of the registry")
        per[agency] = _limit(raw, f"agencies.{agency}", default, purposes)
    version = doc.get("version", "")
    if not isinstance(version, str):
        raise ConfigError("version", "must be a string")
    return Limits(default, MappingProxyType(per), tz, version)


class RateLimitsUnavailableError(LocalError):
    """The shared rate-limit store cannot be reached: the query is refused (UNAVAILABLE)
    rather than admitted unchecked."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "RATE_LIMITS_UNAVAILABLE"
    public_message = "the gateway cannot check rate limits now; try again later"


@dataclass(frozen=True, slots=True)
class Lease:
    """What :meth:`SharedBudget.lease` granted: ``tokens`` from the agency's bucket,
    ``daily`` units of the day's ceiling, and, when tokens were asked for and none was
    granted, ``wait_s`` seconds until the shared bucket has one."""

    tokens: int
    daily: int
    wait_s: float = 0.0


class SharedBudget(ABC):
    """The limits' state shared by processes: one token bucket per agency, one count
    per (agency, purpose, day). Implementations: SQLite (one host) and PostgreSQL
    (every host), in :mod:`gateway.stores`; tested by tests/contract/test_limits.py."""

    @abstractmethod
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
        """In one transaction, take up to ``tokens`` tokens from ``agency``'s bucket
        (refilled at ``rate_per_s`` per second by the store's clock, holding at most
        ``burst``; a new bucket starts full) and up to ``daily`` units of the
        ``ceiling`` of ``(agency, purpose)`` on ``day`` (YYYY-MM-DD, local). Either
        count may be 0 (nothing asked). Raises RateLimitsUnavailableError."""

    @abstractmethod
    def give_back(self, agency: str, purpose: str, day: str, daily: int) -> None:
        """Return ``daily`` unspent units of ``day``. Raises RateLimitsUnavailableError."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release connections."""


@dataclass(slots=True)
class _Leased:
    tokens: int
    until: float


class TokenBucket:
    """A token bucket: ``burst`` tokens at most, refilled at ``rate`` per second from a
    monotonic clock reading (seconds). Not thread-safe on its own."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there (0: one is there now)."""
        self._refill(now)
        # A billionth of a token of slack: clock readings are floats, and a caller told to
        # retry after (1 - tokens) / rate seconds must find the token there.
        if self.tokens >= 1.0 - _SLACK:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> bool:
        """Take a token if there is one; True if taken."""
        if self.wait_s(now) > 0:
            return False
        self.tokens -= 1.0
        return True

    def reshape(self, rate: float, burst: int, now: float) -> None:
        """New limits: refill under the old rate up to ``now``; a larger burst adds its
        extra tokens at once (a raised limit lets a waiting agency through now), a smaller
        one caps what is left."""
        self._refill(now)
        extra = max(burst - self.burst, 0)
        self.rate = rate
        self.burst = burst
        self.tokens = min(self.tokens + extra, float(burst))


class RateLimiter:
    """Admits or refuses each query by its agency's limits (see the module docstring) and
    feeds the harvesting counters. Thread-safe; O(1) per query.

    ``monotonic`` times the buckets; ``wall`` (seconds since the epoch) dates the days.
    """

    def __init__(
        self,
        limits: Limits = UNLIMITED,
        *,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        budget: SharedBudget | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if not lease_s > 0:
            raise ValueError("lease_s must be positive")
        self._budget = budget
        self._lease_s = lease_s
        self._leased: dict[str, _Leased] = {}
        self._daily_left: dict[tuple[str, str], int] = {}
        self._limits = limits
        self._metrics = metrics
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._day: dt.date | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._seen: dict[str, set[bytes]] = {}

    def bind_metrics(self, metrics: Metrics) -> None:
        """Feed the harvesting counters of ``metrics`` from now on."""
        self._metrics = metrics

    @property
    def limits(self) -> Limits:
        """The limits in force."""
        return self._limits

    def configure(self, limits: Limits) -> None:
        """Switch to ``limits`` now (a policy activation). Buckets keep their tokens, plus
        the extra of a raised burst, at most the new burst, and refill at the new rate;
        today's counts stay."""
        with self._lock:
            now = self._monotonic()
            self._limits = limits
            for agency, bucket in self._buckets.items():
                lim = limits.of(agency)
                bucket.reshape(lim.rate_per_s, lim.burst, now)

    @property
    def budget(self) -> SharedBudget | None:
        """The shared budget, or None when this process's limits are its own."""
        return self._budget

    def _roll(self, today: dt.date) -> None:
        if today != self._day:
            self._day = today
            self._counts.clear()
            self._seen.clear()
            self._daily_left.clear()  # yesterday's units are of no use today

    def close(self) -> None:
        """Give today's unspent daily units back to the shared budget and close it
        (best effort: what cannot be returned is lost, which errs toward refusing)."""
        budget = self._budget
        if budget is None:
            return
        with self._lock:
            left = {k: n for k, n in self._daily_left.items() if n > 0}
            self._daily_left.clear()
            day = self._day.isoformat() if self._day else ""
        for (agency, purpose), n in sorted(left.items()):
            try:
                budget.give_back(agency, purpose, day, n)
            except RateLimitsUnavailableError:
                break
        budget.close()

    def _chunk(self, lim: AgencyLimit) -> int:
        return max(1, min(lim.burst, math.ceil(lim.rate_per_s * self._lease_s)))

    def _take_shared(
        self,
        budget: SharedBudget,
        agency: str,
        purpose: str,
        lim: AgencyLimit,
        ceiling: int | None,
        now: float,
        local: dt.datetime,
    ) -> None:
        """Spend one leased token and one daily unit, leasing more when out. Raises
        RateLimitedError, RateLimitsUnavailableError."""
        key = (agency, purpose)
        finite = math.isfinite(lim.rate_per_s)
        leased = self._leased.get(agency)
        if leased is not None and leased.until <= now:
            leased.tokens = 0  # expired: spending it now could exceed the shared bound
        want_tokens = self._chunk(lim) if finite and (leased is None or leased.tokens <= 0) else 0
        daily_left = self._daily_left.get(key, 0)
        want_daily = 0
        if ceiling is not None and daily_left <= 0:
            want_daily = max(1, min(self._chunk(lim), ceiling // 100))
        wait = 0.0
        if want_tokens or want_daily:
            got = budget.lease(
                agency,
                purpose,
                local.date().isoformat(),
                rate_per_s=lim.rate_per_s if finite else 0.0,
                burst=lim.burst,
                tokens=want_tokens,
                ceiling=ceiling if ceiling is not None else 0,
                daily=want_daily,
            )
            if want_tokens:
                leased = self._leased[agency] = _Leased(got.tokens, now + self._lease_s)
                wait = got.wait_s
            if want_daily:
                daily_left += got.daily
                self._daily_left[key] = daily_left
        if ceiling is not None and daily_left <= 0:
            raise self._daily_refusal(agency, purpose, ceiling, local)
        if finite:
            assert leased is not None
            if leased.tokens <= 0:
                raise RateLimitedError(
                    agency,
                    "rate",
                    f"at most {lim.rate_per_s:g} queries a second, {lim.burst} at once",
                    retry_after_s=max(wait, 0.001),
                    quota=lim.burst,
                )
            leased.tokens -= 1
        if ceiling is not None:
            self._daily_left[key] = daily_left - 1

    def _daily_refusal(
        self, agency: str, purpose: str, ceiling: int, local: dt.datetime
    ) -> RateLimitedError:
        midnight = dt.datetime.combine(
            local.date() + dt.timedelta(days=1), dt.time(0), self._limits.timezone
        )
        return RateLimitedError(
            agency,
            "daily",
            f"at most {ceiling} queries a day for purpose {purpose}",
            retry_after_s=max((midnight - local).total_seconds(), 0.001),
            quota=ceiling,
            purpose=purpose,
        )

    def admit(
        self,
        agency: str,
        purpose: str,
        *,
        subject_key: str | None = None,
        case_reference: bool = True,
    ) -> None:
        """Count one query of ``agency`` for ``purpose``, or refuse it.

        ``subject_key``: the subject's keyed pseudonym (for the distinct-subject counter;
        never stored whole); ``case_reference``: whether the query named a case.

        Raises:
            RateLimitedError: the agency's bucket is empty (``limit`` ``rate``, retry when
                the next token arrives) or its daily ceiling for ``purpose`` is reached
                (``limit`` ``daily``, retry at local midnight). Nothing is counted then.
            RateLimitsUnavailableError: the shared budget cannot be reached.
        """
        with self._lock:
            lim = self._limits.of(agency)
            now = self._monotonic()
            local = dt.datetime.fromtimestamp(self._wall(), self._limits.timezone)
            self._roll(local.date())
            ceiling = lim.ceiling(purpose)
            used = self._counts.get((agency, purpose), 0)
            if self._budget is not None:
                self._take_shared(self._budget, agency, purpose, lim, ceiling, now, local)
            elif ceiling is not None and used >= ceiling:
                raise self._daily_refusal(agency, purpose, ceiling, local)
            elif math.isfinite(lim.rate_per_s):
                bucket = self._buckets.get(agency)
                if bucket is None:
                    bucket = self._buckets[agency] = TokenBucket(lim.rate_per_s, lim.burst, now)
                wait = bucket.wait_s(now)
                if wait > 0:
                    raise RateLimitedError(
                        agency,
                        "rate",
                        f"at most {lim.rate_per_s:g} queries a second, {lim.burst} at once",
                        retry_after_s=wait,
                        quota=lim.burst,
                    )
                bucket.take(now)
            self._counts[(agency, purpose)] = used + 1
            new_subject = False
            if not case_reference and subject_key is not None:
                seen = self._seen.setdefault(agency, set())
                digest = hashlib.blake2b(subject_key.encode(), digest_size=8).digest()
                if digest not in seen:
                    new_subject = True
                    if len(seen) < MAX_SUBJECTS_PER_DAY:
                        seen.add(digest)
        if self._metrics is not None and not case_reference:
            self._metrics.queries_without_case_reference.labels(agency).inc()
            if new_subject:
                self._metrics.subjects_without_case_reference.labels(agency).inc()
