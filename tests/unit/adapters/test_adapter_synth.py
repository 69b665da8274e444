"""The synthetic data generator: deterministic, valid identifiers, the ageing
and dispute cases the gateway must handle, and fast."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.sql import SqlStore, load_mapping
from adapters.synth import DEPARTMENTS, REFERENCE_DATE, generate, sample_mapping, years_before
from gateway.domain.identifiers import validate_resident_id, validate_uscc

# Columns holding subject identifiers, per department database.
_ID_COLUMNS = {
    "market": [("enterprise", "uscc"), ("penalty", "uscc"), ("abnormal_list", "uscc")],
    "tax": [("credit_rating", "uscc"), ("arrears", "uscc"), ("major_case", "uscc")],
    "court": [("dishonest", "party_id"), ("enforcement", "party_id")],
    "pbccrc": [("ent_loan", "uscc"), ("guarantee", "uscc"), ("person_loan", "id_number")],
    "food_drug": [("licence", "uscc"), ("penalty", "uscc")],
    "agriculture": [("household", "id_number")],
    "hrss": [("wage_blacklist", "subject_id"), ("insured", "id_number")],
}
# (table, end-date column, disputed column) of negative datasets.
_NEGATIVE = {
    "market": [("penalty", "performed_on", "under_objection")],
    "tax": [
        ("major_case", "concluded_on", "objection_pending"),
        ("arrears", "settled_on", "objection_pending"),
    ],
    "court": [("dishonest", "removed_on", "disputed"), ("enforcement", "closed_on", "disputed")],
    "pbccrc": [("overdue", "repaid_on", "disputed")],
    "food_drug": [("penalty", "corrected_on", "disputed")],
    "hrss": [
        ("wage_blacklist", "removed_on", "disputed"),
        ("ss_arrears", "settled_on", "disputed"),
    ],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, seed=7, subjects=1500)
    return out


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _query(db: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_same_seed_same_data(tmp_path: Path, data: Path) -> None:
    generate(tmp_path / "again", seed=7, subjects=1500)
    generate(tmp_path / "other", seed=8, subjects=1500)
    for dept in DEPARTMENTS:
        assert _dump(tmp_path / "again" / f"{dept}.sqlite") == _dump(data / f"{dept}.sqlite"), dept
    assert (tmp_path / "again" / "subjects.json").read_bytes() == (
        data / "subjects.json"
    ).read_bytes()
    assert _dump(tmp_path / "other" / "market.sqlite") != _dump(data / "market.sqlite")


def test_every_identifier_validates(data: Path) -> None:
    seen = 0
    for dept, columns in _ID_COLUMNS.items():
        for table, column in columns:
            for (value,) in _query(
                data / f"{dept}.sqlite", f"SELECT DISTINCT {column} FROM {table}"
            ):
                if len(value) == 18 and value[:2] == "91":
                    assert validate_uscc(value) == value
                else:
                    assert validate_resident_id(value) == value
                    born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
                    assert born <= years_before(REFERENCE_DATE, 18)
                seen += 1
    doc = json.loads((data / "subjects.json").read_text(encoding="utf-8"))
    for subject in doc["subjects"].values():
        check = validate_uscc if subject["type"] == "enterprise" else validate_resident_id
        assert check(subject["id"]) == subject["id"]
    assert seen > 1500


def test_enterprises_and_persons_are_mixed(data: Path) -> None:
    doc = json.loads((data / "subjects.json").read_text(encoding="utf-8"))
    assert doc["subjects_total"] == 1500
    assert doc["enterprises"] + doc["persons"] == 1500
    assert 0.4 < doc["enterprises"] / 1500 < 0.7
    (registered,) = _query(data / "market.sqlite", "SELECT count(*) FROM enterprise")[0]
    assert registered == doc["enterprises"]
    names = [n for (n,) in _query(data / "market.sqlite", "SELECT ent_name FROM enterprise")]
    assert len(set(names)) == len(names)
    assert all(n.endswith("有限公司") for n in names)
    assert all(
        2 <= len(n) <= 4
        for (n,) in _query(data / "market.sqlite", "SELECT legal_rep FROM enterprise")
    )


def test_negative_records_straddle_the_five_year_line(data: Path) -> None:
    boundary = years_before(REFERENCE_DATE, 5).isoformat()
    aged = at_boundary = ongoing = recent = disputed = 0
    for dept, tables in _NEGATIVE.items():
        for table, end, flag in tables:
            for end_on, is_disputed in _query(
                data / f"{dept}.sqlite", f"SELECT {end}, {flag} FROM {table}"
            ):
                if end_on is None:
                    ongoing += 1
                elif end_on < boundary:
                    aged += 1
                elif end_on == boundary:
                    at_boundary += 1
                else:
                    assert end_on <= REFERENCE_DATE.isoformat()
                    recent += 1
                disputed += is_disputed
    assert aged > 20 and ongoing > 20 and recent > 20 and disputed > 5
    assert at_boundary >= 2  # pinned by the showcase subjects


def test_money_is_integer_fen(data: Path) -> None:
    for dept in DEPARTMENTS:
        db = data / f"{dept}.sqlite"
        for (table,) in _query(db, "SELECT name FROM sqlite_master WHERE type = 'table'"):
            for col in [
                r[1] for r in _query(db, f"PRAGMA table_info({table})") if r[1].endswith("_fen")
            ]:
                kinds = {k for (k,) in _query(db, f"SELECT DISTINCT typeof({col}) FROM {table}")}
                assert kinds <= {"integer", "null"}, (dept, table, col, kinds)


async def test_sample_subjects_are_what_subjects_json_says(data: Path) -> None:
    doc = json.loads((data / "subjects.json").read_text(encoding="utf-8"))
    assert doc["reference_date"] == REFERENCE_DATE.isoformat()
    subjects = doc["subjects"]
    assert {
        "enterprise_all_departments",
        "enterprise_clean",
        "person_with_loans",
        "person_rural_household",
        "person_dishonest_debtor",
        "enterprise_unknown",
        "person_unknown",
    } <= set(subjects)
    stores = {
        d: SqlStore(load_mapping(sample_mapping(d)), data / f"{d}.sqlite", workers=1)
        for d in DEPARTMENTS
    }
    try:
        for key, subject in subjects.items():
            for dept, store in stores.items():
                result = await store.lookup(subject["type"], subject["id"], {})
                assert result.subject_known == (dept in subject["known_by"]), (key, dept)
        # The pinned records are there, with the dates and flags listed.
        for subject in subjects.values():
            for note in subject["records"]:
                store = stores[note["department"]]
                fields = list(store.schema()[note["dataset"]])[:1]
                result = await store.lookup(
                    subject["type"], subject["id"], {note["dataset"]: fields}
                )
                (rec,) = [
                    r for r in result.records[note["dataset"]] if r.record_id == note["record_id"]
                ]
                assert (rec.event_end_date or "") == note["event_end_date"]
                assert rec.disputed == note["disputed"]
        notes = subjects["enterprise_all_departments"]["records"]
        boundary = doc["five_year_boundary"]
        assert any(n["event_end_date"] == boundary for n in notes)
        assert any(n["event_end_date"] and n["event_end_date"] < boundary for n in notes)
        assert any(n["disputed"] for n in notes)
    finally:
        for store in stores.values():
            await store.close()


def test_ten_thousand_subjects_are_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = generate(tmp_path, seed=1)
    elapsed = time.perf_counter() - started
    assert summary.enterprises + summary.persons == 10_000
    assert elapsed < 10, f"generating 10,000 subjects took {elapsed:.1f} s"
