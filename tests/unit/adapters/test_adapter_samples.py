"""The sample departments agree with the published catalog, and mappings that
disagree with themselves are refused naming the key."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapters.sql import SqlStore, catalog_disagreements, load_mapping, parse_mapping
from adapters.synth import DEPARTMENTS, sample_mapping, sample_schema
from gateway.domain.catalog import Catalog, Tier, load_catalog
from gateway.errors import ConfigError
from protos.credit.v1 import common_pb2


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_catalog_names_exactly_the_sample_departments(catalog: Catalog) -> None:
    assert set(catalog.departments) == set(DEPARTMENTS)


@pytest.mark.parametrize("department", DEPARTMENTS)
def test_sample_mapping_agrees_with_catalog(catalog: Catalog, department: str) -> None:
    mapping = load_mapping(sample_mapping(department))
    assert mapping.department == department
    assert catalog_disagreements(mapping, catalog) == []


@pytest.mark.parametrize("department", DEPARTMENTS)
async def test_sample_mapping_runs_against_its_schema(tmp_path: Path, department: str) -> None:
    db = tmp_path / f"{department}.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(sample_schema(department).read_text(encoding="utf-8"))
    conn.close()
    store = SqlStore(load_mapping(sample_mapping(department)), db, workers=1)
    await store.close()


def test_catalog_carries_the_rules_the_gateway_must_show(catalog: Catalog) -> None:
    fields = [(ds.department, ds.name, f) for ds in catalog.datasets() for f in ds.fields.values()]
    prohibited = [(d, n, f.name) for d, n, f in fields if f.prohibited]
    assert prohibited == [("hrss", "social_security", "medical_history")]
    assert any(f.tier is Tier.STATE_SECRET for _, _, f in fields)
    consent = {(d, n, f.name) for d, n, f in fields if f.consent_item}
    assert ("tax", "tax_paid", "tax_paid_fen") in consent
    assert ("hrss", "income", "annual_wage_fen") in consent
    # Money is integer fen everywhere, and named so.
    for d, n, f in fields:
        assert f.name.endswith("_fen") == (f.type == common_pb2.FIELD_TYPE_MONEY_FEN), (
            d,
            n,
            f.name,
        )
    dishonest = catalog.dataset("court", "dishonest_debtors")
    assert dishonest.negative and dishonest.subject_types == {"enterprise", "person"}


def test_catalog_disagreements_are_named(catalog: Catalog) -> None:
    doc = tomllib.loads(sample_mapping("tax").read_text(encoding="utf-8"))
    del doc["datasets"]["tax_paid"]
    doc["datasets"]["arrears"]["fields"]["amount_fen"] = "integer"
    del doc["datasets"]["arrears"]["event_end_date"]
    doc["datasets"]["credit_rating"]["subject_types"] = ["enterprise", "person"]
    problems = catalog_disagreements(parse_mapping(doc), catalog)
    assert problems == [
        "datasets.tax_paid: in the catalog but not mapped",
        "datasets.credit_rating.subject_types: ['enterprise', 'person'] but the catalog says "
        "['enterprise']",
        "datasets.arrears.event_end_date: a negative dataset needs one (Art. 16)",
        "datasets.arrears.fields.amount_fen.type: integer but the catalog says money_fen",
    ]


def _minimal() -> dict[str, Any]:
    return {
        "department": "market",
        "datasets": {
            "registration": {
                "subject_types": ["enterprise"],
                "sql": "SELECT * FROM enterprise WHERE uscc = :subject_id",
                "record_id": "uscc",
                "fields": {"name": {"column": "ent_name", "type": "text"}},
            }
        },
    }


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            lambda d: d["datasets"]["registration"]["fields"]["name"].update(type="float"),
            "datasets.registration.fields.name.type",
        ),
        (
            lambda d: d["datasets"]["registration"].update(sql="SELECT * FROM enterprise"),
            "datasets.registration.sql",
        ),
        (
            lambda d: d["datasets"]["registration"].update(
                sql="DELETE FROM enterprise WHERE uscc = :subject_id"
            ),
            "datasets.registration.sql",
        ),
        (
            lambda d: d["datasets"]["registration"].update(record_column="uscc"),
            "datasets.registration.record_column",
        ),
        (
            lambda d: d["datasets"]["registration"]["fields"]["name"].update(column='x"; DROP'),
            "datasets.registration.fields.name.column",
        ),
        (
            lambda d: d["datasets"]["registration"].update(subject_types=["company"]),
            "datasets.registration.subject_types",
        ),
        (lambda d: d.pop("department"), "department"),
    ],
)
def test_mapping_that_disagrees_with_itself_names_the_key(change: Any, key: str) -> None:
    doc = _minimal()
    change(doc)
    with pytest.raises(ConfigError) as info:
        parse_mapping(doc)
    assert info.value.key == key


def test_column_not_selected_names_the_field(tmp_path: Path) -> None:
    db = tmp_path / "market.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(sample_schema("market").read_text(encoding="utf-8"))
    conn.close()
    doc = _minimal()
    doc["datasets"]["registration"]["sql"] = (
        "SELECT uscc, legal_rep FROM enterprise WHERE uscc = :subject_id"
    )
    with pytest.raises(ConfigError) as info:
        SqlStore(parse_mapping(doc), db)
    assert info.value.key == "datasets.registration.fields.name.column"
    assert "'ent_name' is not selected" in info.value.problem


def test_missing_database_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        SqlStore(parse_mapping(_minimal()), tmp_path / "absent.sqlite")
    assert info.value.key == "db"
