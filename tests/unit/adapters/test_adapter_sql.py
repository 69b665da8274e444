"""The generic SQL store over a generated sample database."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.sql import SqlStore, load_mapping
from adapters.synth import generate, sample_mapping


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sql")
    generate(out, seed=5, subjects=300)
    return out


@pytest.fixture(scope="module")
def subjects(data: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((data / "subjects.json").read_text(encoding="utf-8"))
    return doc["subjects"]


@pytest.fixture
async def court(data: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(load_mapping(sample_mapping("court")), data / "court.sqlite", workers=2)
    yield store
    await store.close()


async def test_only_wanted_fields_are_read(court: SqlStore, subjects: dict[str, Any]) -> None:
    ent = subjects["enterprise_all_departments"]
    result = await court.lookup(
        "enterprise", ent["id"], {"dishonest_debtors": ["court", "published_on"]}
    )
    assert result.subject_known
    (rec,) = result.records["dishonest_debtors"]
    assert set(rec.fields) == {"court", "published_on"}
    assert rec.disputed is True and rec.event_end_date is None
    (note,) = [n for n in ent["records"] if n["dataset"] == "dishonest_debtors"]
    assert rec.record_id == note["record_id"]


async def test_subject_known_from_datasets_not_asked(
    court: SqlStore, subjects: dict[str, Any]
) -> None:
    ent = subjects["enterprise_all_departments"]
    # Known through its enforcement case, though only the (empty for it) list
    # of another subject type's data is asked.
    result = await court.lookup("enterprise", ent["id"], {"enforcement_cases": ["court"]})
    assert result.subject_known and len(result.records["enforcement_cases"]) == 1
    result = await court.lookup("enterprise", ent["id"], {})
    assert result.subject_known and result.records == {}
    result = await court.lookup("enterprise", subjects["enterprise_unknown"]["id"], {})
    assert not result.subject_known


async def test_a_dataset_for_other_subjects_is_empty(data: Path, subjects: dict[str, Any]) -> None:
    store = SqlStore(load_mapping(sample_mapping("pbccrc")), data / "pbccrc.sqlite", workers=1)
    try:
        ent = subjects["enterprise_all_departments"]
        result = await store.lookup("enterprise", ent["id"], {"personal_loans": ["lender"]})
        assert result.records == {"personal_loans": []}
        assert result.subject_known  # its enterprise loans are known
    finally:
        await store.close()


async def test_the_caller_never_reaches_the_sql(court: SqlStore) -> None:
    result = await court.lookup("person", "x' OR 1=1 --", {"dishonest_debtors": ["court"]})
    assert result.records == {"dishonest_debtors": []} and not result.subject_known


async def test_lookups_run_off_the_event_loop_on_read_only_connections(
    court: SqlStore, subjects: dict[str, Any]
) -> None:
    threads: set[int] = set()
    original = court._connection

    def spy() -> sqlite3.Connection:
        threads.add(threading.get_ident())
        return original()

    court._connection = spy  # type: ignore[method-assign]
    person = subjects["person_dishonest_debtor"]
    await court.lookup("person", person["id"], {"dishonest_debtors": ["court"]})
    assert threads and threading.get_ident() not in threads
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        court._pool.submit(lambda: original().execute("DELETE FROM dishonest")).result()
