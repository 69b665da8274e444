"""The price list: integer fen only, floats refused naming the key, checked against the catalog."""

from __future__ import annotations

import copy
import doctest
from pathlib import Path
from typing import Any

import pytest

import gateway.billing.prices
from gateway.billing.prices import load_prices, parse_prices
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from tests.unit.billing.conftest import PRICES_DOC


def doc(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(PRICES_DOC)
    out.update(changes)
    return out


def test_shipped_price_list_prices_every_catalog_dataset() -> None:
    prices = load_prices()
    prices.check_catalog(load_catalog())
    assert prices.self_free_per_year == 2  # Art. 17
    assert prices.free_daily_quota("nogrants") == 0
    assert all(isinstance(v, int) for v in prices.prices.values())


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"prices": {"tax": {"arrears": 2.5}}}, "prices.tax.arrears"),
        ({"free": {"daily_quota": 10.0}}, "free.daily_quota"),
        ({"free": {"agencies": {"ndrc": 1e3}}}, "free.agencies.ndrc"),
        ({"self_query": {"free_per_year": 2.0}}, "self_query.free_per_year"),
    ],
)
def test_floats_are_refused_naming_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_prices(doc(**changes))
    assert exc.value.key == key
    assert "float" in exc.value.message


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"prices": {"tax": {"arrears": -1}}}, "prices.tax.arrears"),
        ({"prices": {"tax": {"arrears": True}}}, "prices.tax.arrears"),
        ({"prices": {"tax": {"arrears": "300"}}}, "prices.tax.arrears"),
        ({"prices": {"tax": {"arrears": 10**9}}}, "prices.tax.arrears"),
        ({"prices": {"tax": 300}}, "prices.tax"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"currency": "USD"}, "currency"),
        ({"surprise": 1}, "surprise"),
        ({"free": {"daily": 3}}, "free.daily"),
        ({"version": ""}, "version"),
    ],
)
def test_bad_values_are_refused_naming_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_prices(doc(**changes))
    assert exc.value.key == key


def test_float_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('version = "1"\n[prices.tax]\narrears = 3.00\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_prices(path)
    assert exc.value.key == "prices.tax.arrears"


def test_catalog_check_names_missing_and_unknown_datasets() -> None:
    catalog = load_catalog()
    with pytest.raises(ConfigError, match="catalog dataset has no price"):
        parse_prices(PRICES_DOC).check_catalog(catalog)
    with pytest.raises(ConfigError) as exc:
        parse_prices(doc(prices={"tax": {"horoscope": 1}})).check_catalog(catalog)
    assert exc.value.key == "prices.tax.horoscope"


def test_missing_price_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_prices(PRICES_DOC).price("hrss", "income")
    assert exc.value.key == "prices.hrss.income"


def test_doctests() -> None:
    assert doctest.testmod(gateway.billing.prices).failed == 0
