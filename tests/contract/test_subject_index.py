"""The subject index's contract, on SQLite and on PostgreSQL alike: what it keeps of the
log, paging, confidentiality, rebuilds, and several writers sharing one index (hosts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.subject import decode_page_token, encode_page_token
from gateway.audit.records import encode_record
from gateway.audit.store import LogReader, StoredCheckpoint, StoredEntry
from gateway.errors import InvalidArgumentError
from gateway.subject.index import QueryIndex, entry_from_record, sync_index
from tests.contract.live_backends import BACKENDS, Backend, backend_fixture

A, B = "a" * 64, "b" * 64


def query(subject: str, **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "query",
        "time": "2026-11-30T01:02:03.000Z",
        "agency_id": "bank",
        "purpose": "lending",
        "mode": "paid",
        "charge_fen": 4800,
        "subject_type": "person",
        "subject_pseudonym": subject,
        "outcome": "ok",
        "departments": {
            "pbccrc": {"status": "ok", "datasets": ["personal_loans"], "records": 2},
            "tax": {"status": "withheld", "datasets": [], "records": 0},
        },
    }
    record.update(over)
    return record


class Log(LogReader):
    """A list of records as a log (the index's only view of the audit log)."""

    def __init__(self, records: list[dict[str, Any]], origin: str = "test/log") -> None:
        self.records = records
        self._origin = origin

    def size(self) -> int:
        return len(self.records)

    def origin(self) -> str | None:
        return self._origin

    def checkpoints(self) -> list[StoredCheckpoint]:
        return []

    def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
        for i in range(start, len(self.records)):
            yield StoredEntry(i, encode_record(self.records[i], seq=i), None)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_fixture(request, tmp_path)


@pytest.fixture
def index(backend: Backend) -> QueryIndex:
    return backend.query_index()


def count(index: QueryIndex) -> int:
    return int(index.count())  # type: ignore[attr-defined]


def test_only_answered_queries_about_a_subject_are_indexed() -> None:
    assert entry_from_record(0, query(A)) is not None
    assert entry_from_record(0, query(A, outcome="partial")) is not None
    assert entry_from_record(0, query(A, outcome="legal_basis_not_citable")) is None
    assert entry_from_record(0, query("", outcome="ok")) is None
    assert entry_from_record(0, {"kind": "billing", "subject_pseudonym": A}) is None
    row = entry_from_record(7, query(A))
    assert row is not None
    assert row.datasets == (("pbccrc", "personal_loans"),)
    assert (row.log_index, row.agency_id, row.mode, row.charge_fen) == (7, "bank", "paid", 4800)


def test_sync_indexes_past_the_watermark_and_lists_newest_first(index: QueryIndex) -> None:
    log = Log([query(A), {"kind": "billing"}, query(B), query(A, agency_id="ndrc")])
    assert sync_index(index, log) == 4
    assert index.scanned_to == 4
    assert [
        q.log_index for q in index.for_subject(A, today="2026-12-01", before=None, limit=9)
    ] == [
        3,
        0,
    ]
    log.records.append(query(A, purpose="guarantee"))
    assert sync_index(index, log) == 1  # only the new entry is read
    assert [
        q.log_index for q in index.for_subject(A, today="2026-12-01", before=None, limit=9)
    ] == [
        4,
        3,
        0,
    ]
    assert [
        q.log_index for q in index.for_subject(B, today="2026-12-01", before=None, limit=9)
    ] == [2]


def test_the_watermark_survives_a_restart(backend: Backend) -> None:
    log = Log([query(A), query(B)])
    first = backend.query_index()
    sync_index(first, log)
    first.close()
    again = backend.query_index()
    assert again.scanned_to == 2
    assert sync_index(again, log) == 0
    assert count(again) == 2


def test_another_log_or_a_shorter_one_rebuilds_the_index(index: QueryIndex) -> None:
    sync_index(index, Log([query(A), query(A), query(A)]))
    assert count(index) == 3
    sync_index(index, Log([query(B)], origin="other/log"))
    assert index.origin == "other/log"
    assert index.for_subject(A, today="2026-12-01", before=None, limit=9) == []
    sync_index(index, Log([], origin="other/log"))  # shorter than the watermark: replaced
    assert count(index) == 0 and index.scanned_to == 0


def test_a_confidential_query_is_hidden_until_its_day(index: QueryIndex) -> None:
    sync_index(
        index,
        Log([query(A, legal_basis="supervision_law_art26", confidential_until="2027-11-30")]),
    )
    assert index.for_subject(A, today="2027-11-29", before=None, limit=9) == []
    assert [
        q.legal_basis for q in index.for_subject(A, today="2027-11-30", before=None, limit=9)
    ] == ["supervision_law_art26"]
    # Officers see it at once.
    assert [
        q.log_index for q in index.for_basis("supervision_law_art26", before=None, limit=9)
    ] == [0]


def test_an_undecodable_leaf_is_skipped_not_fatal(index: QueryIndex) -> None:
    class Broken(Log):
        def iter_entries(self, start: int = 0) -> Iterator[StoredEntry]:
            yield StoredEntry(0, b"not json", None)
            yield from super().iter_entries(1)

    sync_index(index, Broken([query(A), query(A)]))
    assert index.scanned_to == 2 and count(index) == 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    owners=st.lists(st.sampled_from([A, B, "c" * 64]), min_size=0, max_size=60),
    hidden=st.sets(st.integers(0, 59)),
    page=st.integers(1, 7),
)
def test_paging_lists_exactly_the_subjects_visible_queries_once(
    index: QueryIndex, owners: list[str], hidden: set[int], page: int
) -> None:
    records = [
        query(o, **({"confidential_until": "2099-01-01"} if i in hidden else {}))
        for i, o in enumerate(owners)
    ]
    idx = index
    idx.reset()  # hypothesis runs many examples on one index
    sync_index(idx, Log(records), batch=7)
    expected = [i for i in reversed(range(len(owners))) if owners[i] == A and i not in hidden]
    got: list[int] = []
    before: int | None = None
    while True:
        rows = idx.for_subject(A, today="2026-12-01", before=before, limit=page + 1)
        got += [r.log_index for r in rows[:page]]
        assert all(r.subject == A for r in rows)
        if len(rows) <= page:
            break
        before = decode_page_token(encode_page_token(rows[page - 1].log_index))
    assert got == expected


@given(st.integers(0, 2**62))
def test_page_tokens_round_trip(n: int) -> None:
    assert decode_page_token(encode_page_token(n)) == n


@pytest.mark.parametrize("token", ["x", "cTE6", "cTE6LTE", "cTI6MQ", "!!!", "cTE6MWE"])
def test_a_token_this_service_did_not_issue_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        decode_page_token(token)
    assert caught.value.field == "page_token"


def test_several_writers_share_one_index_without_double_or_lost_rows(backend: Backend) -> None:
    """Hosts sharing the index sync at the same time, each from the watermark it read:
    every answered query is indexed exactly once and the watermark ends at the log's end."""
    import threading

    records = [query(A if i % 3 else B) for i in range(500)]
    log = Log(records)
    writers = [backend.query_index() for _ in range(4)]
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def run(idx: QueryIndex) -> None:
        start.wait()
        try:
            for _ in range(3):
                sync_index(idx, log, batch=37)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    reader = backend.query_index()
    assert reader.watermark() == (500, "test/log")
    assert count(reader) == 500
    got = reader.for_subject(B, today="2026-12-01", before=None, limit=1000)
    assert [q.log_index for q in got] == [i for i in reversed(range(500)) if i % 3 == 0]


def test_a_write_from_a_stale_watermark_lands_nothing(index: QueryIndex) -> None:
    sync_index(index, Log([query(A), query(A)]))
    row = entry_from_record(0, query(B))
    assert row is not None
    assert not index.add([row], scanned_to=1, origin="test/log", since=0)
    assert index.watermark() == (2, "test/log")
    assert not index.reset(expect=(1, "test/log"))
    assert count(index) == 2


def test_one_process_at_a_time_follows_a_shared_index(pg_url: str) -> None:
    """The follower's lock: one holder among several processes; when it goes, another
    takes over at its next try."""
    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.subject_index import PgQueryIndex
    from gateway.stores.postgres.url import PgTarget

    target = PgTarget(pg_url)
    a, b = (PgQueryIndex(open_pool(target, max_size=2), target=target) for _ in range(2))
    reader = PgQueryIndex(open_pool(target, max_size=2))  # no target: never follows
    try:
        assert a.follows()
        assert a.follows()  # still the follower, checked alive
        assert not b.follows()
        assert not reader.follows()
        a.close()  # its process ends: the session and the lock go
        assert b.follows()
    finally:
        b.close()
        reader.close()


def test_a_host_that_does_not_follow_tries_the_lock_on_one_kept_session(pg_url: str) -> None:
    """A host that is not the follower asks for the lock every round on the one session it
    keeps (the server sees one backend, the same one, round after round: no connection a
    second), and takes the lock on that session when the holder goes."""
    import psycopg

    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.subject_index import PgQueryIndex
    from gateway.stores.postgres.url import PgTarget

    a = PgQueryIndex(open_pool(PgTarget(pg_url), max_size=1), target=PgTarget(pg_url))
    b_target = PgTarget(pg_url, application_name="subject-index-host-b")
    b = PgQueryIndex(open_pool(PgTarget(pg_url), max_size=1), target=b_target)

    def b_sessions() -> set[int]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (b_target.application_name,),
            ).fetchall()
        return {int(r[0]) for r in rows}

    try:
        assert a.follows()
        seen: list[set[int]] = []
        for _ in range(5):
            assert not b.follows()
            seen.append(b_sessions())
        assert all(s == seen[0] for s in seen) and len(seen[0]) == 1
        a.close()  # the holder goes: b takes the lock on the session it kept
        assert b.follows()
        assert b_sessions() == seen[0]
        assert b.follows()  # held, checked alive, still that session
        assert b_sessions() == seen[0]
    finally:
        b.close()


def test_a_rebuilds_large_batches_land_whole_and_once(index: QueryIndex) -> None:
    """Batches of a rebuild (over 500 rows: COPY on PostgreSQL) add every row, and adding
    them again (a writer that lost its watermark race, retried) adds none twice."""
    records = [query(A if i % 2 else B) for i in range(1_200)]
    assert sync_index(index, Log(records)) == 1_200
    assert count(index) == 1_200
    rows = [entry_from_record(i, r) for i, r in enumerate(records)]
    assert index.add([r for r in rows if r is not None], scanned_to=1_200, origin="test/log")
    assert count(index) == 1_200
    got = index.for_subject(A, today="2026-12-01", before=None, limit=3)
    assert [q.log_index for q in got] == [1_199, 1_197, 1_195]
