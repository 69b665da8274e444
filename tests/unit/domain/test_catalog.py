"""The catalog loader: the packaged catalog, every malformed shape, and Describe drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.domain.catalog import Tier, load_catalog, parse_catalog
from gateway.errors import ConfigError
from protos.credit.v1 import adapter_pb2, common_pb2


def _doc(**field: Any) -> dict[str, Any]:
    spec = {"type": "text", "tier": "public"} | field
    return {
        "version": "1",
        "departments": {
            "tax": {"datasets": {"arrears": {"negative": True, "fields": {"amount": spec}}}},
        },
    }


def test_packaged_catalog_loads_with_the_departments_of_the_domain() -> None:
    catalog = load_catalog()
    assert {"market", "tax", "court", "pbccrc", "agriculture"} <= set(catalog.departments)
    assert len(catalog.digest) == 64
    tiers = {f.tier for ds in catalog.datasets() for f in ds.fields.values()}
    assert tiers == set(Tier)
    assert any(f.prohibited for ds in catalog.datasets() for f in ds.fields.values())


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"type": "float"}, "departments.tax.datasets.arrears.fields.amount.type"),
        ({"tier": "secret"}, "departments.tax.datasets.arrears.fields.amount.tier"),
        ({"prohibited": "yes"}, "departments.tax.datasets.arrears.fields.amount.prohibited"),
        ({"colour": "red"}, "departments.tax.datasets.arrears.fields.amount.colour"),
    ],
)
def test_bad_field_names_its_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_catalog(_doc(**change))
    assert exc.value.key == key


def test_missing_version_and_departments() -> None:
    with pytest.raises(ConfigError, match="version"):
        parse_catalog({"departments": {}})
    with pytest.raises(ConfigError, match="departments"):
        parse_catalog({"version": "1"})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalog(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("version = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_catalog(bad)


def _describe(
    type_: int = common_pb2.FIELD_TYPE_TEXT, field: str = "amount"
) -> adapter_pb2.DescribeResponse:
    d = adapter_pb2.DescribeResponse(department="tax")
    d.datasets.add(name="arrears").fields.add(name=field, type=type_)
    return d


def test_check_describe_accepts_agreement_and_names_drift() -> None:
    catalog = parse_catalog(_doc())
    catalog.check_describe(_describe())
    with pytest.raises(
        ConfigError, match="type mismatch: catalog says text, department says integer"
    ) as exc:
        catalog.check_describe(_describe(common_pb2.FIELD_TYPE_INTEGER))
    assert exc.value.key == "departments.tax.datasets.arrears.fields.amount"
    with pytest.raises(ConfigError, match="does not serve this field"):
        catalog.check_describe(_describe(field="amount_fen"))
    with pytest.raises(ConfigError, match="not in the catalog"):
        catalog.check_describe(adapter_pb2.DescribeResponse(department="customs"))
