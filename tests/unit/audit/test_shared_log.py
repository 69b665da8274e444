"""SharedAuditLog over PostgreSQL: numbering in the committing statement, no gap and no
duplicate across writers, lost COMMITs looked up by append id, one integrator at a time,
proofs from any process, the checkpoint history's refusals, failing closed and healing.

The real many-process test (separate processes, SIGKILL of the integrator) is
tests/integration/test_audit_pg_processes.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api.audit import AuditServicer
from gateway.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from gateway.audit.errors import StorageError
from gateway.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from gateway.audit.note import Ed25519Signer, Verifier, generate_key, write_key_files
from gateway.audit.records import (
    decode_record,
    encode_record,
    leaf_template,
    write_pseudonym_key,
)
from gateway.audit.shared import SharedAuditLog
from gateway.audit.store import PendingLeaf
from gateway.audit.verify import verify_log
from gateway.errors import (
    AuditUnavailableError,
    InternalError,
    NotFoundError,
    NotYetIntegratedError,
)
from gateway.runtime.assembly import open_auditor
from gateway.runtime.config import AuditConfig, StorageConfig
from gateway.runtime.stores import open_subject_parts
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.postgres.url import PgTarget
from protos.credit.v1 import audit_pb2
from tests.unit.audit.audit_testkit import ORIGIN

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    record=st.dictionaries(
        st.text(max_size=6).filter(lambda k: k not in ("v", "seq")), _json, max_size=6
    ),
    seq=st.integers(0, 2**53 - 1),
)
def test_leaf_template_splices_to_the_encoded_record(record: dict[str, Any], seq: int) -> None:
    head, tail = leaf_template(record)
    assert PendingLeaf(b"\0" * 16, head, tail).leaf(seq) == encode_record(record, seq=seq)


def test_leaf_template_refuses_what_encode_record_refuses() -> None:
    from gateway.audit.errors import RecordError

    for bad in ({"seq": 1}, {"v": 2}, {"x": 1.5}, {1: "a"}, ["not", "a", "mapping"]):
        with pytest.raises(RecordError):
            leaf_template(bad)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, 70), more=st.integers(0, 70))
def test_compact_range_roots_match_the_tree(start: int, more: int) -> None:
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(start + more)]
    tree = MerkleTree(hashes[:start])
    edge = CompactRange.of(tree)
    assert edge.root() == tree.root()
    for h in hashes[start:]:
        edge.append(h)
        tree.append(h)
        assert edge.root() == tree.root() and edge.size == tree.size


# --- PostgreSQL -------------------------------------------------------------------------


def _store(url: str, name: str = "t") -> PostgresAuditStore:
    return PostgresAuditStore(PgTarget(url, application_name=f"audit-test-{name}"), identity=name)


def _verifiers(signer: Ed25519Signer) -> list[Verifier]:
    return [Verifier.from_key_string(signer.verifier_key())]


def _pending(n: int, tag: str = "r") -> list[PendingLeaf]:
    out = []
    for i in range(n):
        head, tail = leaf_template({"kind": "test", "n": i, "tag": tag})
        out.append(PendingLeaf(os.urandom(16), head, tail))
    return out


def _empty_note(signer: Ed25519Signer) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [signer])


async def _open(url: str, signer: Ed25519Signer, name: str, **kw: Any) -> SharedAuditLog:
    kw.setdefault("checkpoint_interval", 0.2)
    kw.setdefault("follow_interval", 0.05)
    kw.setdefault("lead_interval", 0.1)
    return await SharedAuditLog.open_shared(_store(url, name), signer, **kw)


async def _until(cond: Any, timeout: float = 10.0) -> float:
    """Seconds until ``cond()`` holds; fails the test after ``timeout``."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def test_store_numbers_batches_densely_and_hashes_what_it_stores(
    pg_url: str, signer: Ed25519Signer
) -> None:
    store = _store(pg_url)
    try:
        assert store.init_log(ORIGIN, _empty_note(signer)) == ORIGIN
        assert store.init_log("other.example/audit", "x") == ORIGIN  # created once
        a, b = _pending(3, "a"), _pending(2, "b")
        got_a = store.append_leaves(a)
        got_b = store.append_leaves(b)
        assert [i for i, _ in got_a + got_b] == [0, 1, 2, 3, 4]
        for p, (index, h) in zip(a + b, got_a + got_b, strict=True):
            entry = store.entry(index)
            assert entry is not None and entry.leaf == p.leaf(index)
            assert h == entry.leaf_hash == leaf_hash(entry.leaf)
            assert decode_record(entry.leaf)["seq"] == index
        assert store.state().head == 5 == store.size()
    finally:
        store.close()


def test_a_retried_batch_is_looked_up_never_numbered_twice(
    pg_url: str, signer: Ed25519Signer
) -> None:
    store = _store(pg_url)
    try:
        store.init_log(ORIGIN, _empty_note(signer))
        batch = _pending(4)
        first = store.append_leaves(batch)
        # The COMMIT's answer was lost: the writer retries the same batch.
        assert store.append_leaves(batch, uncertain=True) == first
        # Retried without the look-up (an old statement still in flight): the unique
        # append id refuses it, the store looks it up, and no index is consumed.
        assert store.append_leaves(batch) == first
        # Part stored, part new: duplicates are removed before numbering.
        more = _pending(2, "more")
        mixed = store.append_leaves(batch[:2] + more, uncertain=True)
        assert mixed[:2] == first[:2]
        assert [i for i, _ in mixed[2:]] == [4, 5]
        assert store.state().head == 6
        assert [e.index for e in store.iter_entries()] == list(range(6))
    finally:
        store.close()


def test_a_connection_killed_mid_statement_is_retried_without_a_gap(
    pg_url: str, signer: Ed25519Signer
) -> None:
    store = _store(pg_url, "victim")
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # The first insert sleeps (a sequence is not rolled back), long enough to
        # terminate its connection from here.
        admin.execute("CREATE SEQUENCE slow_once")
        admin.execute(
            "CREATE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval('slow_once') = 1 THEN PERFORM pg_sleep(30); END IF; RETURN NULL; END $$"
        )
        admin.execute(
            "CREATE TRIGGER slow_once AFTER INSERT ON audit_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION slow_once()"
        )
        try:
            store.init_log(ORIGIN, _empty_note(signer))
            result: list[Any] = []
            worker = threading.Thread(
                target=lambda: result.append(store.append_leaves(_pending(3)))
            )
            worker.start()
            deadline = time.monotonic() + 10
            killed = False
            while not killed and time.monotonic() < deadline:
                row = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'audit-test-victim' AND wait_event = 'PgSleep'"
                ).fetchone()
                killed = bool(row and row[0])
                time.sleep(0.02)
            worker.join(20)
            assert killed and result, "the statement was not caught mid-way"
            assert [i for i, _ in result[0]] == [0, 1, 2]  # retried, numbered from 0
            assert store.state().head == 3
        finally:
            store.close()


async def test_several_logs_append_concurrently_without_gap_or_duplicate(
    pg_url: str, signer: Ed25519Signer
) -> None:
    logs = [await _open(pg_url, signer, f"w{i}") for i in range(3)]
    try:
        receipts = await asyncio.gather(
            *(logs[i % 3].append({"kind": "query", "n": i}) for i in range(900))
        )
        assert sorted(r.index for r in receipts) == list(range(900))
        # Exactly one integrator, and every process follows it to the end.
        await _until(lambda: all(log.checkpoint_size == 900 for log in logs))
        assert sum(log.leading for log in logs) == 1
        cps = {log.latest_checkpoint() for log in logs}
        assert len(cps) == 1
        cp = open_checkpoint(cps.pop(), _verifiers(signer), origin=ORIGIN)
        # Proofs from a process that is not the integrator.
        follower = next(log for log in logs if not log.leading)
        for r in receipts[::97]:
            leaf = await follower.read_leaf(r.index)
            assert leaf is not None and leaf_hash(leaf) == r.leaf_hash
            assert decode_record(leaf)["seq"] == r.index
            proof = await follower.inclusion_proof(r.index, cp.size)
            verify_inclusion(r.leaf_hash, r.index, cp.size, proof, cp.root_hash)
        verify_consistency(
            100,
            900,
            await follower.consistency_proof(100, 900),
            await follower.root(100),
            await follower.root(900),
        )
        with pytest.raises(NotFoundError):
            await follower.inclusion_proof(3, 901)
    finally:
        for log in logs:
            await log.close()
    reader = PostgresAuditStore(PgTarget(pg_url), snapshot=True)
    try:
        report = verify_log(reader, _verifiers(signer))
        assert report.size == report.verified_size == 900
        sizes = [c.size for c in reader.checkpoints()]
        assert sizes == sorted(sizes)  # the history only grows
        assert all(b - a <= 256 for a, b in itertools.pairwise(sizes))
    finally:
        reader.close()


async def test_a_fresh_receipt_is_not_yet_integrated_then_proves(
    pg_url: str, signer: Ed25519Signer
) -> None:
    log = await _open(pg_url, signer, "one", checkpoint_interval=0.5)
    try:
        receipt = await log.append({"kind": "query", "n": 1})
        assert log.size == 1
        with pytest.raises(NotYetIntegratedError):
            await log.inclusion_proof(receipt.index, 1)
        assert 0 < log.checkpoint_due_in_s <= 0.5 + 0.05
        await _until(lambda: log.checkpoint_size == 1)
        assert await log.inclusion_proof(receipt.index, 1) == []
        with pytest.raises(InternalError):
            await log.append({"kind": "query", "x": 0.5})  # floats are refused at once
    finally:
        await log.close()


async def test_the_integrator_hands_over_when_it_stops(pg_url: str, signer: Ed25519Signer) -> None:
    first = await _open(pg_url, signer, "first")
    await _until(lambda: first.leading)
    second = await _open(pg_url, signer, "second")
    try:
        await first.append({"kind": "query", "n": 0})
        await first.close()  # integrates what it holds, then gives the lock up
        took = await _until(lambda: second.leading, timeout=5)
        assert took < 1.0  # lead_interval 0.1 s plus a tick
        r = await second.append({"kind": "query", "n": 1})
        assert r.index == 1
        await _until(lambda: second.checkpoint_size == 2)
    finally:
        await second.close()


async def test_origin_and_schema_are_checked(
    pg_url: str, pg_empty_url: str, signer: Ed25519Signer
) -> None:
    log = await _open(pg_url, signer, "a")
    await log.close()
    other = Ed25519Signer.from_key_string(generate_key("elsewhere.example/audit")[0])
    with pytest.raises(AuditUnavailableError, match="origin"):
        await _open(pg_url, other, "b")
    with pytest.raises(StorageError, match="db migrate"):
        _store(pg_empty_url)


def test_the_checkpoint_history_refuses_a_smaller_size_or_a_second_root(
    pg_url: str, signer: Ed25519Signer
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_checkpoints (size, root, note) VALUES (5, %s, 'a')", (b"\1" * 32,)
        )
        conn.execute(
            "INSERT INTO audit_checkpoints (size, root, note) VALUES (5, %s, 'b')", (b"\1" * 32,)
        )
        with pytest.raises(psycopg.errors.CheckViolation, match="second root"):
            conn.execute(
                "INSERT INTO audit_checkpoints (size, root, note) VALUES (5, %s, 'c')",
                (b"\2" * 32,),
            )
        with pytest.raises(psycopg.errors.CheckViolation, match="after one for size 5"):
            conn.execute(
                "INSERT INTO audit_checkpoints (size, root, note) VALUES (4, %s, 'd')",
                (b"\1" * 32,),
            )
        for sql in (
            "UPDATE audit_checkpoints SET note = 'x'",
            "DELETE FROM audit_checkpoints",
            "TRUNCATE audit_entries",
            "UPDATE audit_tree SET size = 0, root = '\\x00'",
        ):
            with pytest.raises(psycopg.errors.Error):
                conn.execute(sql)
        with pytest.raises(psycopg.errors.CheckViolation, match="cannot pass"):
            conn.execute("UPDATE audit_tree SET size = 7, root = %s", (b"\3" * 32,))


async def test_the_log_fails_closed_while_postgres_is_away_and_heals(
    pg_url: str, signer: Ed25519Signer
) -> None:
    log = await _open(pg_url, signer, "heal", retry_interval=0.1)
    heard: list[bool] = []
    log.add_listener(heard.append)
    dbname = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    admin_url = pg_url.replace(f"/{dbname}?", "/postgres?")
    try:
        first = await log.append({"kind": "query", "n": 0})
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
            with pytest.raises(AuditUnavailableError):
                await log.append({"kind": "query", "n": 1})
            assert not log.available and heard == [False]
            with pytest.raises(AuditUnavailableError):  # refused at once while down
                await log.append({"kind": "query", "n": 2})
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        await _until(lambda: log.available, timeout=15)
        assert heard == [False, True]
        again = await log.append({"kind": "query", "n": 3})
        assert again.index == first.index + 1  # the refused appends consumed nothing
        await _until(lambda: log.checkpoint_size == 2)
    finally:
        await log.close()


async def test_the_gateway_opens_the_shared_log_where_storage_says(
    pg_url: str, pg_empty_url: str, tmp_path: Path
) -> None:
    skey, vkey = generate_key(ORIGIN)
    write_key_files(skey, vkey, tmp_path / "audit.key", tmp_path / "audit.pub")
    write_pseudonym_key(tmp_path / "pseudonym.key", bytes(32))
    audit = AuditConfig(
        path=tmp_path / "unused.db",
        key=tmp_path / "audit.key",
        pseudonym_key=tmp_path / "pseudonym.key",
    )
    auditor = await open_auditor(audit, StorageConfig(url=pg_url))
    try:
        assert isinstance(auditor.log, SharedAuditLog)
        assert (await auditor.log.append({"kind": "query"})).index == 0
    finally:
        await auditor.log.close()
    assert not (tmp_path / "unused.db").exists()
    # The audit store kept on SQLite by a per-store override.
    auditor = await open_auditor(audit, StorageConfig(url=pg_url, stores={"audit": "sqlite"}))
    assert not isinstance(auditor.log, SharedAuditLog)
    await auditor.log.close()
    with pytest.raises(AuditUnavailableError, match="db migrate"):
        await open_auditor(audit, StorageConfig(url=pg_empty_url))


async def test_audit_service_proves_from_a_process_that_did_not_write(
    pg_url: str, signer: Ed25519Signer
) -> None:
    writer = await _open(pg_url, signer, "writer", checkpoint_interval=0.3)
    await _until(lambda: writer.leading)
    reader = await _open(pg_url, signer, "reader", integrate=False)
    service = AuditServicer(reader, None)  # no authenticator: development mode, auditor
    try:
        receipt = await writer.append({"kind": "query", "agency_id": "bank-1"})
        await _until(lambda: reader.size > receipt.index)
        request = audit_pb2.GetInclusionProofRequest(index=receipt.index)
        if reader.checkpoint_size <= receipt.index:
            with pytest.raises(NotYetIntegratedError):
                await service.GetInclusionProof(request, None)  # type: ignore[arg-type]
        await _until(lambda: reader.checkpoint_size > receipt.index)
        proof = await service.GetInclusionProof(request, None)  # type: ignore[arg-type]
        assert proof.leaf_hash == receipt.leaf_hash and proof.checkpoint
        cp = open_checkpoint(proof.checkpoint, _verifiers(signer), origin=ORIGIN)
        verify_inclusion(
            receipt.leaf_hash, receipt.index, cp.size, list(proof.hashes), cp.root_hash
        )
    finally:
        await reader.close()
        await writer.close()


async def test_start_up_recovery_finds_records_written_by_any_process(
    pg_url: str, signer: Ed25519Signer
) -> None:
    one = await _open(pg_url, signer, "one")
    two = await _open(pg_url, signer, "two", integrate=False)
    try:
        await one.append({"kind": "query", "request_id": "req-1", "billing": {"fen": 300}})
        await two.append({"kind": "billing", "request_id": "req-2", "event": "release"})
        await one.append({"kind": "query", "request_id": "req-3"})
        await _until(lambda: one.size == 3 == two.size)
        # The needles start-up recovery looks for (QueryAuditor.billing_records).
        found = await two.find_leaves([b'"request_id":"req-1"', b'"request_id":"req-2"'])
        assert [decode_record(leaf)["seq"] for leaf in found] == [0, 1]
        assert await two.find_leaves([b'"request_id":"req-9"']) == []
        assert await two.find_leaves([]) == []
    finally:
        await two.close()
        await one.close()


async def test_the_subject_index_follows_the_shared_log(
    pg_url: str, tmp_path: Path, signer: Ed25519Signer
) -> None:
    skey, vkey = generate_key(ORIGIN)
    write_key_files(skey, vkey, tmp_path / "audit.key", tmp_path / "audit.pub")
    write_pseudonym_key(tmp_path / "pseudonym.key", bytes(32))
    audit = AuditConfig(
        path=tmp_path / "unused.db",
        key=tmp_path / "audit.key",
        pseudonym_key=tmp_path / "pseudonym.key",
    )
    storage = StorageConfig(url=pg_url)
    auditor = await open_auditor(audit, storage)
    indexer, archive = await asyncio.to_thread(open_subject_parts, audit, storage)
    try:
        await auditor.log.append({"kind": "query", "n": 0})
        assert await indexer.refresh() >= 1  # it read the database, not the unused file
        await auditor.log.append({"kind": "query", "n": 1})
        assert await indexer.refresh() >= 1  # a reader kept open still sees new entries
        assert not (tmp_path / "unused.db").exists()
    finally:
        await indexer.close()
        archive.close()
        await auditor.log.close()


class _CountingStore(PostgresAuditStore):
    """The real store, counting the hashes a joining process reads."""

    hashes_read = 0

    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        got = super().tile_hashes(level, start, end)
        self.hashes_read += len(got)
        return got

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        got = super().leaf_hashes(start, end)
        self.hashes_read += len(got)
        return got


async def test_tiles_are_integrated_and_a_joining_process_reads_the_edge_only(
    pg_url: str, signer: Ed25519Signer
) -> None:
    n = 3 * 256 + 10
    log = await _open(pg_url, signer, "w")
    try:
        receipts = await asyncio.gather(*(log.append({"kind": "t", "n": i}) for i in range(n)))
        await _until(lambda: log.checkpoint_size == n)
    finally:
        await log.close()
    tree = MerkleTree(r.leaf_hash for r in sorted(receipts, key=lambda r: r.index))
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT level, idx, hash FROM audit_tiles ORDER BY idx").fetchall()
        assert [(a, b, bytes(c)) for a, b, c in rows] == [
            (1, i, tree.range_hash(i * 256, (i + 1) * 256)) for i in range(3)
        ]
    store = _CountingStore(PgTarget(pg_url, application_name="audit-test-j"), identity="j")
    joined = await SharedAuditLog.open_shared(store, signer, integrate=False)
    try:
        assert store.hashes_read == 10 + 3  # the partial tile of each level
        assert await joined.root() == tree.root()
        for size in (1, 256, 300, n):
            assert await joined.inclusion_proof(size - 1, size) == tree.inclusion_proof(
                size - 1, size
            )
            assert await joined.consistency_proof(size, n) == tree.consistency_proof(size, n)
    finally:
        await joined.close()
    # A log made before migration 0011 has no tile hashes: the next process fills them in.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_tiles DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit_tiles")
        conn.execute("ALTER TABLE audit_tiles ENABLE TRIGGER USER")
    again = await _open(pg_url, signer, "again")
    try:
        assert await again.inclusion_proof(5, n) == tree.inclusion_proof(5, n)
    finally:
        await again.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM audit_tiles").fetchone() == (3,)
