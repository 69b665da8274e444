"""The objection store's contract, on SQLite and on PostgreSQL alike: one open objection per
record, idempotent filing, marks that every process sharing the store sees, the raw
identifier kept only until routed, incremental marks equal to a full reload."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.objections.store import (
    ObjectionFilter,
    ObjectionRow,
    ObjectionStore,
    ObjectionStoreError,
    OpenObjectionExists,
    SQLiteObjectionStore,
)
from tests.contract.live_backends import BACKENDS, Backend, backend_fixture

ENTERPRISE = "91350200MA2YJ1XR9G"


def _row(n: int = 1, **kw: object) -> ObjectionRow:
    base = ObjectionRow(
        objection_id=f"00000000-0000-4000-8000-{n:012d}",
        request_key=f"bank:req-{n}",
        kind="objection",
        subject_key="k" * 64,
        subject_type="enterprise",
        subject_id=ENTERPRISE,
        department="market",
        dataset="administrative_penalties",
        record_id=str(n),
        grounds="wrong amount",
        evidence_sha256=("ab" * 32,),
        consent_id="c-1",
        filed_by="bank",
        filed_at=1_780_000_000.0 + n,
        filed_on="2026-05-01",
        due_on="2026-05-21",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_fixture(request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> ObjectionStore:
    return backend.objections()


def test_filing_is_idempotent_by_request_key(store: ObjectionStore) -> None:
    row, newly = store.create(_row())
    assert newly
    again, newly = store.create(_row(objection_id="00000000-0000-4000-8000-000000000099"))
    assert not newly and again == row
    assert store.get(row.objection_id) == row
    assert row.evidence_sha256 == ("ab" * 32,)


def test_one_open_objection_per_record_and_subject(store: ObjectionStore) -> None:
    first, _ = store.create(_row(1, record_id="7"))
    with pytest.raises(OpenObjectionExists) as clash:
        store.create(_row(2, record_id="7"))
    assert clash.value.existing == first.objection_id
    # Another subject's record of the same id, or a repair application, is not a clash.
    store.create(_row(3, record_id="7", subject_key="o" * 64))
    store.create(_row(4, record_id="7", kind="repair"))
    # Once answered, a new objection may be filed.
    assert store.answered(first.objection_id, "undetermined", "2026-05-10", "both views")
    store.create(_row(5, record_id="7"))


def test_routing_blanks_the_identifier_and_answers_land_once(backend: Backend) -> None:
    store, other = backend.objections(), backend.objections()
    row, _ = store.create(_row())
    assert store.routed(row.objection_id, 1_780_000_100.0)
    assert not other.routed(row.objection_id, 1_780_000_200.0)  # another process: no-op
    got = other.get(row.objection_id)
    assert got is not None and got.subject_id == "" and got.routed_at == 1_780_000_100.0
    assert _column(backend, "subject_id") == [""]  # gone from the store itself
    assert store.answered(row.objection_id, "confirmed", "2026-05-12", "")
    assert not store.answered(row.objection_id, "corrected", "2026-05-13", "")
    got = store.get(row.objection_id)
    assert got is not None and got.outcome == "confirmed" and not got.open


def _column(backend: Backend, column: str) -> list[object]:
    """One column of every row, read past the store (as an operator's shell would)."""
    if backend.url is None:
        with contextlib.closing(sqlite3.connect(backend.tmp / "objections.sqlite")) as db:
            return [r[0] for r in db.execute(f"SELECT {column} FROM objections")]
    import psycopg

    with psycopg.connect(backend.url) as conn:
        return [r[0] for r in conn.execute(f"SELECT {column} FROM objections".encode())]


def test_marks_follow_each_outcome(store: ObjectionStore) -> None:
    key = ("market", "administrative_penalties")
    rows = {
        o: store.create(_row(i, record_id=o, statement="本企业有异议"))[0]
        for i, o in enumerate(["pending", "corrected", "confirmed", "undetermined"], start=1)
    }
    for outcome in ("corrected", "confirmed", "undetermined"):
        store.answered(rows[outcome].objection_id, outcome, "2026-05-10", "note")
    marks = store.marks().by_record
    k = "k" * 64
    assert marks[(*key, "pending", k)].disputed
    assert (*key, "corrected", k) not in marks  # the record changed: nothing shown
    confirmed = marks[(*key, "confirmed", k)]
    assert not confirmed.disputed and confirmed.statement == "本企业有异议"
    undetermined = marks[(*key, "undetermined", k)]
    assert undetermined.disputed and undetermined.note == "note"


def test_a_repair_approved_is_repaired_and_refused_is_not(store: ObjectionStore) -> None:
    a, _ = store.create(_row(1, kind="repair", record_id="1"))
    b, _ = store.create(_row(2, kind="repair", record_id="2"))
    store.answered(a.objection_id, "repair_approved", "2026-05-10", "")
    store.answered(b.objection_id, "repair_refused", "2026-05-10", "")
    marks = store.marks()
    assert marks.is_repaired("market", "administrative_penalties", "1")
    assert not marks.is_repaired("market", "administrative_penalties", "2")
    assert not marks.by_record  # a repair application never marks a record disputed


def test_a_second_process_sees_a_mark_on_its_next_read(backend: Backend) -> None:
    one, two = backend.objections(), backend.objections()
    before = two.marks()
    row, _ = one.create(_row())
    after = two.marks()
    assert after.version > before.version
    assert ("market", "administrative_penalties", "1", "k" * 64) in after.by_record
    assert two.marks() is after  # unchanged version: no reload
    one.set_statement(row.objection_id, "声明")
    assert (
        two.marks().by_record[("market", "administrative_penalties", "1", "k" * 64)].statement
        == "声明"
    )


def test_find_filters_and_pages(store: ObjectionStore) -> None:
    for i in range(1, 6):
        store.create(_row(i, filed_by="bank" if i % 2 else "ndrc", due_on=f"2026-05-2{i}"))
    mine = store.find(ObjectionFilter(filed_by="bank"))
    assert [r.record_id for r in mine] == ["5", "3", "1"]  # newest first
    page = store.find(ObjectionFilter(limit=2))
    rest = store.find(ObjectionFilter(limit=10, before=(page[-1].filed_at, page[-1].objection_id)))
    assert [r.record_id for r in page + rest] == ["5", "4", "3", "2", "1"]
    overdue = store.find(ObjectionFilter(overdue_on="2026-05-23"))
    assert {r.record_id for r in overdue} == {"1", "2"}
    assert store.note_overdue(overdue[0].objection_id)
    assert not store.note_overdue(overdue[0].objection_id)  # recorded once


def test_two_processes_filing_at_once_get_one_open_objection(backend: Backend) -> None:
    """The same record objected to through two hosts at the same moment: one objection,
    the other filer is told which; the same request sent to both: one row."""
    stores = [backend.objections() for _ in range(4)]
    results: list[object] = [None] * 4
    start = threading.Barrier(4)

    def file(i: int) -> None:
        start.wait()
        try:
            # 0 and 1 send one request (one key); 2 and 3 each their own, same record.
            row = _row(i, request_key="bank:req-x" if i < 2 else f"bank:req-{i}", record_id="9")
            results[i] = stores[i].create(row)
        except OpenObjectionExists as exc:
            results[i] = exc.existing

    threads = [threading.Thread(target=file, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [r for r in results if isinstance(r, tuple) and r[1]]
    assert len(created) == 1
    winner = created[0][0].objection_id  # type: ignore[union-attr]
    for r in results:
        if isinstance(r, tuple):  # the winner, or the same request answered with its row
            assert r[0].objection_id == winner  # type: ignore[union-attr]
        else:
            assert r == winner
    assert len(stores[0].find(ObjectionFilter())) == 1


def test_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    SQLiteObjectionStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'objections-0' WHERE key = 'format'")
    with pytest.raises(ObjectionStoreError, match="format"):
        SQLiteObjectionStore(path)


def test_an_unreadable_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(ObjectionStoreError) as err:
        SQLiteObjectionStore(path)
    assert str(tmp_path) not in err.value.message


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["file", "repair", "answer", "statement"]),
        st.integers(min_value=0, max_value=2),  # record
        st.integers(min_value=0, max_value=1),  # subject
        st.sampled_from(["corrected", "confirmed", "undetermined", "repair_approved",
                         "repair_refused", "no_such_record"]),
        st.sampled_from(["", "声明"]),
    ),
    max_size=25,
)  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_incremental_marks_equal_a_full_reload(
    backend: Backend, ops: list[tuple[str, int, int, str, str]]
) -> None:
    """Whatever happens in whatever order, the marks a long-running process keeps up to date
    (reloading only changed records) are those a fresh process reads from scratch."""
    _empty(backend)
    live = backend.objections()
    live.marks()
    ids: list[str] = []
    for n, (op, record, subj, outcome, statement) in enumerate(ops):
        if op in ("file", "repair"):
            row = _row(
                n, kind="objection" if op == "file" else "repair", record_id=str(record),
                subject_key=str(subj) * 64, filed_at=float(n),
            )  # fmt: skip
            with contextlib.suppress(OpenObjectionExists):
                ids.append(live.create(row)[0].objection_id)
        elif ids and op == "answer":
            live.answered(ids[record % len(ids)], outcome, "2026-05-10", "n")
        elif ids:
            live.set_statement(ids[record % len(ids)], statement)
        fresh = backend.objections()
        try:
            want, got = fresh.marks(), live.marks()
            assert got.by_record == want.by_record
            assert got.repaired == want.repaired
        finally:
            fresh.close()
            backend.opened.remove(fresh)
    live.close()
    backend.opened.remove(live)


def _empty(backend: Backend) -> None:
    """Forget every objection (hypothesis runs many examples on one store)."""
    if backend.url is None:
        path = backend.tmp / "objections.sqlite"
        if path.exists():
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                db.execute("DELETE FROM objections")
        return
    import psycopg

    with psycopg.connect(backend.url) as conn:
        conn.execute("DELETE FROM objections")


# --- PostgreSQL only: marks followed by LISTEN/NOTIFY ---------------------------------------


def test_followed_marks_arrive_by_notify_and_fail_closed_when_stale(pg_url: str) -> None:
    """A host following the store with a listener reads nothing per query: a filing on
    another host reaches it by NOTIFY within the bound; once the listener is stale its
    marks are refused (UNAVAILABLE) rather than answered unmarked."""
    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.notify import LiveListener
    from gateway.stores.postgres.objections import PgObjectionStore
    from gateway.stores.postgres.url import PgTarget

    target = PgTarget(pg_url)
    writer = PgObjectionStore(open_pool(target, max_size=2))
    reader = PgObjectionStore(open_pool(target, max_size=2))
    listener = LiveListener(target, stale_after_s=1.0, poll_interval_s=0.2)
    listener.subscribe("objections", reader.refresh)
    reader.follow(listener)
    listener.start()
    try:
        assert listener.wait_fresh(10)
        before = reader.marks()
        writer.create(_row())
        filed = time.monotonic()
        key = ("market", "administrative_penalties", "1", "k" * 64)
        while key not in reader.marks().by_record:
            assert time.monotonic() - filed < 1.0, "the mark did not arrive within the bound"
            time.sleep(0.01)
        assert reader.marks().version > before.version
        listener.close()  # the listener stops: stale once the bound has passed
        time.sleep(1.3)
        with pytest.raises(ObjectionStoreError):
            reader.marks()
    finally:
        listener.close()
        writer.close()
        reader.close()


def test_the_database_refuses_a_routed_row_that_keeps_the_identifier(pg_url: str) -> None:
    import psycopg

    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.objections import PgObjectionStore
    from gateway.stores.postgres.url import PgTarget

    store = PgObjectionStore(open_pool(PgTarget(pg_url), max_size=2))
    try:
        row, _ = store.create(_row())
        with psycopg.connect(pg_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE objections SET routed_at = 1 WHERE objection_id = %s",
                         (row.objection_id,))  # fmt: skip
    finally:
        store.close()


def test_one_handle_polls_at_a_time_and_another_takes_over_when_it_closes(
    backend: Backend,
) -> None:
    """The poller's election (SQLite: a flock beside the file; PostgreSQL: a session
    lock): two handles on one store are two processes; one polls, the other takes over at
    its next try once the first is closed."""
    a, b = backend.objections(), backend.objections()
    assert a.polls()
    assert a.polls()  # still the poller (PostgreSQL: its session checked alive)
    assert not b.polls()
    assert not b.polls()
    a.close()  # its process ends: the lock goes with it
    assert b.polls()
    c = backend.objections()
    assert not c.polls()
    b.close()
    assert c.polls()


def test_a_killed_pollers_lock_goes_with_its_process(backend: Backend) -> None:
    """A poller SIGKILLed in another process: its lock is freed by the kernel (SQLite's
    flock) or with its session (PostgreSQL), and a survivor polls at its next round."""
    opener = (
        "from gateway.objections.store import SQLiteObjectionStore;"
        f"s = SQLiteObjectionStore({str(backend.tmp / 'objections.sqlite')!r})"
        if backend.url is None
        else "from gateway.stores.postgres.connect import open_pool;"
        "from gateway.stores.postgres.objections import PgObjectionStore;"
        "from gateway.stores.postgres.url import PgTarget;"
        f"t = PgTarget({backend.url!r});"
        "s = PgObjectionStore(open_pool(t, max_size=1), target=t)"
    )
    code = f"import time; {opener}; print(s.polls(), flush=True); time.sleep(120)"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        _take_over_from(proc, backend)


def _take_over_from(proc: subprocess.Popen[str], backend: Backend) -> None:
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "True"
        survivor = backend.objections()
        assert not survivor.polls()
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 5.0  # the server notices the closed socket at once
        while not survivor.polls():
            assert time.monotonic() < deadline, "the killed poller's lock was not freed"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)


def test_a_postgres_handle_without_a_target_always_polls(pg_url: str) -> None:
    """Tools and tests open the store without a target: no election, it polls, as every
    host did before (duplicates are harmless; a round nobody runs is not)."""
    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.objections import PgObjectionStore
    from gateway.stores.postgres.url import PgTarget

    elected = PgObjectionStore(open_pool(PgTarget(pg_url), max_size=1), target=PgTarget(pg_url))
    plain = PgObjectionStore(open_pool(PgTarget(pg_url), max_size=1))
    try:
        assert elected.polls()
        assert plain.polls()
    finally:
        elected.close()
        plain.close()


def test_a_lock_file_that_cannot_be_made_is_unavailable_naming_no_path(tmp_path: Path) -> None:
    store = SQLiteObjectionStore(tmp_path / "objections.sqlite")
    try:
        (tmp_path / "objections.sqlite.poller.lock").mkdir()  # in the way: not a file
        with pytest.raises(ObjectionStoreError) as caught:
            store.polls()
        assert str(tmp_path) not in str(caught.value)
    finally:
        store.close()
