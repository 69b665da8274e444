"""The price list, free-mode quotas and self-query allowance (``policies/prices.toml``).

>>> p = parse_prices({
...     "version": "1", "timezone": "Asia/Shanghai",
...     "free": {"daily_quota": 5, "agencies": {"ndrc": 50}},
...     "self_query": {"free_per_year": 2},
...     "prices": {"tax": {"arrears": 300}},
... })
>>> p.price("tax", "arrears"), p.free_daily_quota("ndrc"), p.free_daily_quota("bank")
(300, 50, 5)
>>> parse_prices({"version": "1", "prices": {"tax": {"arrears": 2.5}}})
Traceback (most recent call last):
...
gateway.errors.ConfigError: prices.tax.arrears: is a float (2.5); money is integer fen, e.g. 250

Money is integer fen. Floats are refused wherever they appear, with a
:class:`~gateway.errors.ConfigError` naming the key, because a float price
cannot be added up exactly and a silently rounded price is a wrong charge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.domain.catalog import Catalog
from gateway.domain.files import load_toml, policies_path
from gateway.errors import ConfigError

__all__ = ["MAX_PRICE_FEN", "PriceList", "default_prices_path", "load_prices", "parse_prices"]

#: No single dataset costs more than 1,000,000 yuan: a bound that catches a
#: price typed in the wrong unit and keeps every sum far inside int64.
MAX_PRICE_FEN = 100_000_000

_TOP_KEYS = frozenset(
    {"version", "currency", "timezone", "free", "self_query", "prices", "screening"}
)


@dataclass(frozen=True, slots=True)
class PriceList:
    """A checked price list. All amounts are integer fen, all counts integers."""

    version: str
    timezone: ZoneInfo
    #: (department, dataset) -> price in fen.
    prices: Mapping[tuple[str, str], int]
    free_daily_default: int
    free_daily_overrides: Mapping[str, int] = field(default_factory=dict)
    self_free_per_year: int = 2
    currency: str = "CNY"
    #: The ``[screening]`` section: per list dataset, what one screen of one subject
    #: costs (fen), and the free screens per agency and day; None when absent (nothing
    #: can then be screened). Its quotas count apart from the queries' (see
    #: gateway.screening).
    screening: PriceList | None = None

    def price(self, department: str, dataset: str) -> int:
        """The price of one dataset in fen.

        Raises ConfigError if the dataset has no price: a dataset that cannot
        be priced cannot be sold, and charging 0 by accident is a loss.
        """
        try:
            return self.prices[(department, dataset)]
        except KeyError:
            raise ConfigError(
                f"prices.{department}.{dataset}", "no price for this dataset"
            ) from None

    def free_daily_quota(self, agency_id: str) -> int:
        """Free-mode queries per local calendar day (the list's ``timezone``) for ``agency_id``."""
        return self.free_daily_overrides.get(agency_id, self.free_daily_default)

    def check_catalog(self, catalog: Catalog) -> None:
        """Every catalog dataset has a price and every price names a catalog
        dataset. Raises ConfigError naming the first problem."""
        known = {(ds.department, ds.name) for ds in catalog.datasets()}
        for dept, ds in sorted(self.prices.keys() - known):
            raise ConfigError(f"prices.{dept}.{ds}", "not a dataset of the catalog")
        for dept, ds in sorted(known - self.prices.keys()):
            raise ConfigError(f"prices.{dept}.{ds}", "catalog dataset has no price")
        if self.screening is not None:
            for (dept, ds), fen in sorted(self.screening.prices.items()):
                key = f"screening.prices.{dept}.{ds}"
                if (dept, ds) not in known:
                    raise ConfigError(key, "not a dataset of the catalog")
                if fen >= self.prices[(dept, ds)] > 0:
                    # A screen answers "on the list or not", never the records: it
                    # must cost less than the query that returns them.
                    raise ConfigError(key, f"{fen} fen is not below the query price")


def default_prices_path() -> Path:
    """The price list shipped in the ``policies`` folder."""
    return policies_path("prices.toml")


def load_prices(path: Path | None = None) -> PriceList:
    """Read and check a price list file. Raises ConfigError."""
    path = path or default_prices_path()
    return parse_prices(load_toml(path, "prices"))


def parse_prices(doc: Mapping[str, Any]) -> PriceList:
    """Build a :class:`PriceList` from parsed TOML. Raises ConfigError."""
    # First refuse every float wherever it is, so that the error names the
    # exact key even in a table we would otherwise reject for another reason.
    _no_floats(doc, "")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown key")
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise ConfigError("version", "must be a non-empty string")
    currency = doc.get("currency", "CNY")
    if currency != "CNY":
        raise ConfigError("currency", "only CNY (fen) is supported")
    tz_name = doc.get("timezone", "Asia/Shanghai")
    if not isinstance(tz_name, str):
        raise ConfigError("timezone", "must be an IANA zone name such as Asia/Shanghai")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("timezone", f"unknown time zone {tz_name!r}") from None

    free = _table(doc, "free", required=False)
    _only(free, {"daily_quota", "agencies"}, "free")
    daily = _count(free.get("daily_quota", 0), "free.daily_quota")
    overrides = {
        agency: _count(n, f"free.agencies.{agency}")
        for agency, n in _table(free, "agencies", "free.agencies", required=False).items()
    }

    screening = None
    section = _table(doc, "screening", required=False)
    if section:
        _only(section, {"free", "prices"}, "screening")
        try:
            inner = parse_prices({"version": version, "timezone": tz_name, **section})
        except ConfigError as err:
            raise ConfigError(f"screening.{err.key}", err.problem) from None
        screening = dataclasses.replace(inner, self_free_per_year=0)

    self_query = _table(doc, "self_query", required=False)
    _only(self_query, {"free_per_year"}, "self_query")
    self_free = _count(self_query.get("free_per_year", 2), "self_query.free_per_year")

    prices: dict[tuple[str, str], int] = {}
    for dept, table in _table(doc, "prices").items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"prices.{dept}", "must be a table of dataset = fen")
        for ds, value in table.items():
            key = f"prices.{dept}.{ds}"
            fen = _count(value, key)
            if fen > MAX_PRICE_FEN:
                raise ConfigError(key, f"{fen} fen is above the limit of {MAX_PRICE_FEN} fen")
            prices[(dept, ds)] = fen
    return PriceList(
        version=version,
        timezone=tz,
        prices=prices,
        free_daily_default=daily,
        free_daily_overrides=overrides,
        self_free_per_year=self_free,
        currency=currency,
        screening=screening,
    )


def _no_floats(value: object, key: str) -> None:
    if isinstance(value, float):
        cents = round(value * 100)
        raise ConfigError(key, f"is a float ({value!r}); money is integer fen, e.g. {cents}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _no_floats(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_floats(v, f"{key}[{i}]")


def _count(value: object, key: str) -> int:
    # bool is an int in Python; "true" is no price.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be a non-negative integer, not {value!r}")
    if value < 0:
        raise ConfigError(key, f"must not be negative ({value})")
    return value


def _table(
    parent: Mapping[str, Any], name: str, key: str | None = None, *, required: bool = True
) -> Mapping[str, Any]:
    value = parent.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key or name, "missing or not a table")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], key: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key")
