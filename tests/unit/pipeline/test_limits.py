"""Rate limits: the token bucket's bound, the daily ceiling at the Beijing day boundary,
limits.toml parsing, the hot switch, the error's gRPC details and the harvesting counters."""

from __future__ import annotations

import datetime as dt
import math
from types import MappingProxyType
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.rpc import error_details_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth.registry import Role, load_registry
from gateway.domain.files import load_toml, parse_toml
from gateway.domain.purposes import load_purposes
from gateway.errors import ConfigError, RateLimitedError, to_rpc_status
from gateway.pipeline.limits import (
    MAX_SUBJECTS_PER_DAY,
    UNLIMITED,
    AgencyLimit,
    Limits,
    RateLimiter,
    parse_limits,
)
from gateway.policyadmin.loading import DEFAULT_LIMITS_PATH
from gateway.runtime.metrics import Metrics

BEIJING = ZoneInfo("Asia/Shanghai")
PURPOSES = tuple(load_purposes())


class Clock:
    """A settable monotonic clock and wall clock (seconds)."""

    def __init__(self, wall: float = 1_764_460_800.0) -> None:
        self.mono = 1000.0
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def limits(
    rate: float = math.inf,
    burst: int = 1,
    daily: int | None = None,
    per_purpose: dict[str, int] | None = None,
) -> Limits:
    return Limits(
        AgencyLimit(rate, burst, daily, MappingProxyType(per_purpose or {})),
        MappingProxyType({}),
        BEIJING,
    )


def limiter(lim: Limits, clock: Clock, metrics: Metrics | None = None) -> RateLimiter:
    return RateLimiter(lim, metrics=metrics, monotonic=lambda: clock.mono, wall=lambda: clock.wall)


# --- the token bucket -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=100.0),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_bucket_never_admits_more_than_burst_plus_rate_times_window(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    rl = limiter(limits(rate, burst), clock)
    admitted: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        try:
            rl.admit("bank", "lending")
        except RateLimitedError as err:
            assert err.limit == "rate"
            assert err.retry_after_s is not None and err.retry_after_s > 0
        else:
            admitted.append(clock.mono)
    # Every window [admitted[i], admitted[j]] of length t holds at most burst + rate * t.
    for i in range(len(admitted)):
        for j in range(i, len(admitted)):
            window = admitted[j] - admitted[i]
            assert j - i + 1 <= burst + rate * window + 1e-6


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(min_value=0.1, max_value=50.0), burst=st.integers(min_value=1, max_value=10))
def test_retry_info_says_when_the_next_token_arrives(rate: float, burst: int) -> None:
    clock = Clock()
    rl = limiter(limits(rate, burst), clock)
    for _ in range(burst):
        rl.admit("bank", "lending")  # a full bucket admits a whole burst at once
    with pytest.raises(RateLimitedError) as refused:
        rl.admit("bank", "lending")
    retry = refused.value.retry_after_s
    assert retry is not None
    # Rounded up to the millisecond: at retry the token is there, a little before it is not.
    assert retry == pytest.approx(1 / rate, abs=0.0011)
    clock.advance(retry)
    rl.admit("bank", "lending")


def test_a_refused_query_takes_no_token() -> None:
    clock = Clock()
    rl = limiter(limits(rate=1.0, burst=1), clock)
    rl.admit("bank", "lending")
    for _ in range(5):
        clock.advance(0.1)
        with pytest.raises(RateLimitedError):
            rl.admit("bank", "lending")
    clock.advance(0.5)  # one second after the first: one token, despite five refusals
    rl.admit("bank", "lending")


def test_agencies_have_buckets_of_their_own() -> None:
    clock = Clock()
    rl = limiter(limits(rate=1.0, burst=1), clock)
    rl.admit("bank", "lending")
    rl.admit("guarantor", "lending")
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "lending")


# --- the daily ceiling at the Beijing day boundary --------------------------------------


def at(local: str) -> float:
    return dt.datetime.fromisoformat(local).replace(tzinfo=BEIJING).timestamp()


def test_daily_ceiling_resets_at_beijing_midnight_not_utc() -> None:
    clock = Clock(wall=at("2026-11-30T23:59:58"))
    rl = limiter(limits(daily=2), clock)
    rl.admit("bank", "lending")
    rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError) as refused:
        rl.admit("bank", "lending")
    err = refused.value
    assert (err.limit, err.metadata["purpose"], err.metadata["quota"]) == ("daily", "lending", "2")
    assert err.retry_after_s == pytest.approx(2.0)  # until 00:00 Beijing
    rl.admit("bank", "guarantee")  # per purpose: another purpose has its own count
    clock.advance(1.999)
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "lending")
    clock.advance(0.001)  # 2026-12-01T00:00:00+08:00 (16:00 UTC): a new day
    rl.admit("bank", "lending")
    rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "lending")
    # UTC midnight (08:00 Beijing) is no day boundary.
    clock.wall = at("2026-12-01T08:00:01")
    with pytest.raises(RateLimitedError) as again:
        rl.admit("bank", "lending")
    assert again.value.retry_after_s == pytest.approx(16 * 3600 - 1)


def test_a_purpose_ceiling_replaces_the_default_and_zero_refuses_all() -> None:
    clock = Clock()
    rl = limiter(limits(daily=1, per_purpose={"lending": 3, "guarantee": 0}), clock)
    for _ in range(3):
        rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "guarantee")
    rl.admit("bank", "public_bidding")
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "public_bidding")


def test_a_daily_refusal_takes_no_token_and_a_rate_refusal_counts_nothing() -> None:
    clock = Clock()
    rl = limiter(limits(rate=1.0, burst=1, daily=1), clock)
    rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError) as rate:
        rl.admit("bank", "guarantee")  # no token yet: not counted for guarantee
    assert rate.value.limit == "rate"
    clock.advance(1.0)
    rl.admit("bank", "guarantee")


# --- hot switch ---------------------------------------------------------------------------


def test_configure_raises_the_limit_at_once_and_keeps_todays_counts() -> None:
    clock = Clock()
    rl = limiter(limits(rate=0.001, burst=1, daily=2), clock)
    rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "lending")
    rl.configure(limits(rate=0.001, burst=3, daily=3))
    # A raised burst lets the agency through at once: two extra tokens, no waiting.
    rl.admit("bank", "lending")
    rl.admit("bank", "lending")  # the third today, of a new ceiling of 3
    clock.advance(1.0)
    with pytest.raises(RateLimitedError) as daily:
        rl.admit("bank", "lending")
    assert daily.value.limit == "daily"
    rl.configure(limits(rate=1000.0, burst=1))  # a lower burst caps the tokens kept
    clock.advance(1.0)
    rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError):
        rl.admit("bank", "lending")


def test_unlimited_admits_everything() -> None:
    rl = limiter(UNLIMITED, Clock())
    for _ in range(10_000):
        rl.admit("bank", "lending")


# --- the error on the wire ------------------------------------------------------------------


def test_rate_limited_maps_to_resource_exhausted_with_quota_failure_and_retry_info() -> None:
    clock = Clock()
    rl = limiter(limits(rate=2.0, burst=1), clock)
    rl.admit("bank", "lending")
    with pytest.raises(RateLimitedError) as refused:
        rl.admit("bank", "lending")
    status = to_rpc_status(refused.value)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info = error_details_pb2.ErrorInfo()
    quota = error_details_pb2.QuotaFailure()
    retry = error_details_pb2.RetryInfo()
    unpacked = {
        kind
        for d in status.details
        for kind, msg in (("info", info), ("quota", quota), ("retry", retry))
        if d.Unpack(msg)
    }
    assert unpacked == {"info", "quota", "retry"}
    assert info.reason == "RATE_LIMITED"
    assert info.metadata["limit"] == "rate"
    [violation] = quota.violations
    assert violation.subject == "agency:bank"
    assert "2 queries a second" in violation.description
    assert violation.quota_id == "rate_limit"
    assert violation.quota_value == 1
    assert retry.retry_delay.ToMilliseconds() == 500


# --- harvesting counters ---------------------------------------------------------------------


def _value(metrics: Metrics, name: str, agency: str) -> float:
    got = metrics.registry.get_sample_value(name, {"agency": agency})
    return got or 0.0


def test_subjects_without_a_case_reference_are_counted_once_a_day() -> None:
    clock = Clock(wall=at("2026-11-30T12:00:00"))
    metrics = Metrics()
    rl = limiter(UNLIMITED, clock, metrics)
    for key in ("hmac:aa", "hmac:bb", "hmac:aa"):
        rl.admit("bank", "lending", subject_key=key, case_reference=False)
    rl.admit("bank", "lending", subject_key="hmac:cc", case_reference=True)
    subjects = "credit_gateway_subjects_without_case_reference_total"
    queries = "credit_gateway_queries_without_case_reference_total"
    assert _value(metrics, subjects, "bank") == 2
    assert _value(metrics, queries, "bank") == 3
    rl.admit("guarantor", "lending", subject_key="hmac:aa", case_reference=False)
    assert _value(metrics, subjects, "guarantor") == 1
    clock.wall = at("2026-12-01T00:00:01")  # a new Beijing day: seen again, counted again
    rl.admit("bank", "lending", subject_key="hmac:aa", case_reference=False)
    assert _value(metrics, subjects, "bank") == 3
    # No label holds a subject.
    for family in metrics.registry.collect():
        for sample in family.samples:
            assert not any("hmac" in v for v in sample.labels.values())


def test_a_full_subject_set_counts_every_further_subject_as_new() -> None:
    metrics = Metrics()
    rl = limiter(UNLIMITED, Clock(), metrics)
    for i in range(MAX_SUBJECTS_PER_DAY + 10):
        rl.admit("bank", "lending", subject_key=f"s{i}", case_reference=False)
    rl.admit("bank", "lending", subject_key=f"s{MAX_SUBJECTS_PER_DAY + 5}", case_reference=False)
    subjects = "credit_gateway_subjects_without_case_reference_total"
    assert _value(metrics, subjects, "bank") == MAX_SUBJECTS_PER_DAY + 11  # errs to the alarm


# --- limits.toml --------------------------------------------------------------------------------


def test_the_shipped_limits_parse_against_the_registry() -> None:
    agencies = load_registry().ids(Role.AGENCY)
    lim = parse_limits(load_toml(DEFAULT_LIMITS_PATH), agencies=agencies, purposes=PURPOSES)
    assert lim.of("bank").ceiling("lending") == 200_000
    assert lim.of("bank").ceiling("guarantee") == 20_000
    assert lim.of("procurement") == lim.default
    assert lim.of("ndrc").rate_per_s == 200.0


BASE = "[default]\nrate_per_s = 10\nburst = 20\ndaily_per_purpose = 100\n"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[default]\nburst = 1\n", "default.rate_per_s"),
        ("[default]\nrate_per_s = 1\nburst = 2.0\n", "default.burst"),
        ("[default]\nrate_per_s = 1\nburst = true\n", "default.burst"),
        ("[default]\nrate_per_s = 0\nburst = 1\n", "default.rate_per_s"),
        ("[default]\nrate_per_s = inf\nburst = 1\n", "default.rate_per_s"),
        ("[default]\nrate_per_s = 1\nburst = 0\n", "default.burst"),
        (
            "[default]\nrate_per_s = 1\nburst = 1\ndaily_per_purpose = -1\n",
            "default.daily_per_purpose",
        ),
        ("[default]\nrate_per_s = 1\nburst = 1\nqps = 3\n", "default.qps"),
        ("rate = 1\n" + BASE, "rate"),
        ('timezone = "Mars/Base"\n' + BASE, "timezone"),
        ("", "default"),
        (BASE + "[agencies.nobody]\nburst = 1\n", "agencies.nobody"),
        (BASE + "[agencies.bank]\nburst = 1.5\n", "agencies.bank.burst"),
        (BASE + "[agencies.bank.daily]\nharvesting = 5\n", "agencies.bank.daily.harvesting"),
        (BASE + "[agencies.bank.daily]\nlending = 5.0\n", "agencies.bank.daily.lending"),
    ],
)
def test_bad_limits_are_refused_naming_the_key(text: str, key: str) -> None:
    agencies = load_registry().ids(Role.AGENCY)
    with pytest.raises(ConfigError) as refused:
        parse_limits(parse_toml(text, "limits.toml"), agencies=agencies, purposes=PURPOSES)
    assert refused.value.key == key


def test_an_agency_override_inherits_what_it_does_not_set() -> None:
    text = BASE + "[default.daily]\nlending = 50\n[agencies.bank]\nburst = 3\n"
    lim = parse_limits(parse_toml(text, "limits.toml"), agencies=None, purposes=PURPOSES)
    bank = lim.of("bank")
    assert (bank.rate_per_s, bank.burst, bank.ceiling("lending"), bank.ceiling("guarantee")) == (
        10.0,
        3,
        50,
        100,
    )
    assert lim.of("other").burst == 20


def test_a_limit_the_shared_budget_cannot_hold_is_refused_at_load() -> None:
    # The PostgreSQL budget counts in 32-bit integers; a trillion a day turned every query
    # into "cannot check rate limits" before this was checked when the limits load.
    doc = {
        "version": "t",
        "timezone": "Asia/Shanghai",
        "default": {"rate_per_s": 10, "burst": 10, "daily_per_purpose": 10**12},
    }
    with pytest.raises(
        ConfigError, match=r"default.daily_per_purpose: must be at most 2,147,483,647"
    ):
        parse_limits(doc, agencies=None, purposes=PURPOSES)
    doc["default"] = {"rate_per_s": 10, "burst": 2**31, "daily_per_purpose": 10}
    with pytest.raises(ConfigError, match=r"default.burst: must be at most"):
        parse_limits(doc, agencies=None, purposes=PURPOSES)
    doc["default"] = {"rate_per_s": 10, "burst": 2**31 - 1, "daily_per_purpose": 2**31 - 1}
    assert parse_limits(doc, agencies=None, purposes=PURPOSES).of("anyone").burst == 2**31 - 1
