"""AuditLog: group commit, receipts, checkpoints, reopening, failing closed, crashes."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.errors import LogIntegrityError
from gateway.audit.log import AuditLog
from gateway.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from gateway.audit.note import Ed25519Signer, Verifier, generate_key
from gateway.audit.records import decode_record
from gateway.audit.store import MemoryStore
from gateway.audit.verify import verify_log
from gateway.errors import AuditUnavailableError, ConfigError, InternalError, NotFoundError
from gateway.stores.sqlite.audit import SQLiteStore
from tests.unit.audit.audit_testkit import ORIGIN

REPO = Path(__file__).resolve().parents[3]


def _query(i: int) -> dict[str, object]:
    return {"kind": "query", "agency_id": f"agency-{i % 3}", "purpose": "lending", "n": i}


def _verifiers(signer: Ed25519Signer) -> list[Verifier]:
    return [Verifier.from_key_string(signer.verifier_key())]


async def test_append_returns_receipts_and_proofs(tmp_path: Path, signer: Ed25519Signer) -> None:
    log = await AuditLog.open(tmp_path / "audit.db", signer)
    receipts = await asyncio.gather(*(log.append(_query(i)) for i in range(300)))
    assert [r.index for r in receipts] == list(range(300))
    assert {r.origin for r in receipts} == {ORIGIN}
    assert log.size == 300
    # 256 entries forced a checkpoint without waiting for the clock.
    cp = open_checkpoint(log.latest_checkpoint(), _verifiers(signer), origin=ORIGIN)
    assert cp.size >= 256
    for r in receipts[::37]:
        proof = await log.inclusion_proof(r.index, cp.size) if r.index < cp.size else None
        if proof is not None:
            verify_inclusion(r.leaf_hash, r.index, cp.size, proof, cp.root_hash)
    verify_consistency(
        10, 300, await log.consistency_proof(10, 300), await log.root(10), await log.root(300)
    )
    with pytest.raises(NotFoundError):
        await log.inclusion_proof(5, 301)
    with pytest.raises(NotFoundError):
        await log.consistency_proof(0, 10)
    await log.close()
    store = SQLiteStore(tmp_path / "audit.db", read_only=True)
    entry = store.entry(42)
    assert entry is not None
    assert decode_record(entry.leaf) == {**_query(42), "seq": 42, "v": 1}
    assert entry.leaf_hash == receipts[42].leaf_hash == leaf_hash(entry.leaf)
    report = verify_log(store, _verifiers(signer))
    assert report.size == report.verified_size == 300  # close signed a final checkpoint
    store.close()


async def test_group_commit_batches_concurrent_writers(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    log = await AuditLog.open(tmp_path / "audit.db", signer)
    await asyncio.gather(*(log.append(_query(i)) for i in range(1000)))
    await log.close()
    # Far fewer transactions than records: one checkpoint per <= 256 entries
    # proves entries were written in batches, not one commit per append.
    store = SQLiteStore(tmp_path / "audit.db", read_only=True)
    sizes = [c.size for c in store.checkpoints()]
    assert sizes[0] == 0 and sizes[-1] == 1000
    assert all(b - a <= 256 for a, b in itertools.pairwise(sizes))
    store.close()


async def test_time_based_checkpoint_while_idle(tmp_path: Path, signer: Ed25519Signer) -> None:
    log = await AuditLog.open(tmp_path / "audit.db", signer, checkpoint_interval=0.1)
    await log.append(_query(0))
    await asyncio.sleep(0.4)
    cp = open_checkpoint(log.latest_checkpoint(), _verifiers(signer))
    assert cp.size == 1
    await log.close()


async def test_bad_records_fail_fast_without_hurting_others(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    log = await AuditLog.open(tmp_path / "audit.db", signer)
    with pytest.raises(InternalError, match="float"):
        await log.append({"amount": 1.5})
    with pytest.raises(InternalError, match="set by the log"):
        await log.append({"seq": 3})
    assert (await log.append(_query(1))).index == 0
    await log.close()
    with pytest.raises(AuditUnavailableError, match="closed"):
        await log.append(_query(2))
    await log.close()  # twice is harmless


async def test_reopen_continues_and_rotation(tmp_path: Path, signer: Ed25519Signer) -> None:
    path = tmp_path / "audit.db"
    log = await AuditLog.open(path, signer)
    await asyncio.gather(*(log.append(_query(i)) for i in range(10)))
    await log.close()
    new = Ed25519Signer.from_key_string(generate_key(ORIGIN)[0])
    with pytest.raises(AuditUnavailableError, match="trusted key"):
        await AuditLog.open(path, new)
    log = await AuditLog.open(path, new, trusted_keys=[signer.verifier_key()])
    # Reopened under the new key: it signs the current size at once.
    assert open_checkpoint(log.latest_checkpoint(), _verifiers(new)).size == 10
    assert (await log.append(_query(10))).index == 10
    await log.close()
    store = SQLiteStore(path, read_only=True)
    assert verify_log(store, _verifiers(signer) + _verifiers(new)).size == 11
    store.close()


async def test_open_refuses_bad_configuration(tmp_path: Path, signer: Ed25519Signer) -> None:
    with pytest.raises(ConfigError, match="origin"):
        await AuditLog.open(tmp_path / "a.db", signer, "other.example/log")
    log = await AuditLog.open(tmp_path / "a.db", signer)
    await log.close()
    other = Ed25519Signer.from_key_string(generate_key("other.example/log")[0])
    with pytest.raises(AuditUnavailableError, match="origin"):
        await AuditLog.open(tmp_path / "a.db", other)


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("DELETE FROM entries WHERE idx = 3", "lacks hashes 0..7 of tile level 0"),
        ("DELETE FROM entries WHERE idx >= 5", "only 5 are stored"),
        (
            "UPDATE entries SET leaf = (SELECT leaf FROM entries WHERE idx = 1), leaf_hash = "
            "(SELECT leaf_hash FROM entries WHERE idx = 1) WHERE idx = 2",
            "do not match the checkpoint",
        ),
    ],
)
async def test_open_refuses_a_tampered_log(
    tmp_path: Path,
    signer: Ed25519Signer,
    sql: Callable[[Path, str], None],
    tamper: str,
    problem: str,
) -> None:
    path = tmp_path / "audit.db"
    log = await AuditLog.open(path, signer)
    await asyncio.gather(*(log.append(_query(i)) for i in range(8)))
    await log.close()
    sql(path, tamper)
    with pytest.raises(AuditUnavailableError, match=problem):
        await AuditLog.open(path, signer)


async def test_a_tampered_leaf_is_refused_when_read_and_by_verify(
    tmp_path: Path, signer: Ed25519Signer, sql: Callable[[Path, str], None]
) -> None:
    # Start-up reads the tree's right edge only (issue 13: no minutes-long re-hash of
    # every entry), so a record changed behind its unchanged leaf hash is caught where
    # it is served, and by `credit-audit verify`, never passed on.
    path = tmp_path / "audit.db"
    log = await AuditLog.open(path, signer)
    await asyncio.gather(*(log.append(_query(i)) for i in range(8)))
    await log.close()
    sql(
        path,
        "UPDATE entries SET leaf = CAST(replace(CAST(leaf AS TEXT), 'agency-1', 'agency-X') "
        "AS BLOB) WHERE idx = 4",
    )
    log = await AuditLog.open(path, signer)
    try:
        assert await log.read_leaf(3) is not None
        with pytest.raises(AuditUnavailableError, match="storage"):
            await log.read_leaf(4)
    finally:
        await log.close()
    store = SQLiteStore(path, read_only=True)
    try:
        with pytest.raises(LogIntegrityError, match="index 4: record bytes do not match"):
            verify_log(store, _verifiers(signer))
    finally:
        store.close()


async def test_write_failure_fails_the_whole_batch_closed_then_heals(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    path = tmp_path / "audit.db"
    log = await AuditLog.open(path, signer, retry_interval=0.05)
    await log.append(_query(0))
    # A real SQLite failure, caused from outside, as a full disk would: no write passes.
    conn = sqlite3.connect(path)
    for table in ("entries", "checkpoints"):
        conn.execute(
            f"CREATE TRIGGER boom_{table} BEFORE INSERT ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    conn.commit()
    results = await asyncio.gather(
        *(log.append(_query(i)) for i in range(1, 50)), return_exceptions=True
    )
    assert all(isinstance(r, AuditUnavailableError) for r in results)
    # The caller hears that the log is failing, never the file or the OS error.
    assert "disk on fire" not in str(results[0]) and str(path) not in str(results[0])
    assert not log.available
    with pytest.raises(AuditUnavailableError):
        await log.append(_query(99))  # stays closed while the storage fails
    await asyncio.sleep(0.3)  # the healer tries, and fails, meanwhile
    assert not log.available
    conn.executescript("DROP TRIGGER boom_entries; DROP TRIGGER boom_checkpoints;")
    conn.commit()
    conn.close()
    async with asyncio.timeout(10):  # heals by itself: no reopening
        while not log.available:
            await asyncio.sleep(0.02)
    assert log.size == 1 and log.checkpoint_size == 1
    assert (await log.append(_query(1))).index == 1
    await log.close()
    store = SQLiteStore(path, read_only=True)
    report = verify_log(store, _verifiers(signer))
    store.close()
    assert report.size == report.verified_size == 2


async def test_memory_store_fake_fails_closed(signer: Ed25519Signer) -> None:
    store = MemoryStore()
    log = await AuditLog.open(None, signer, store=store)
    await log.append(_query(0))
    store.fail_writes = True
    with pytest.raises(AuditUnavailableError, match="storage is failing"):
        await log.append(_query(1))
    report = verify_log(store, _verifiers(signer), allow_unsigned_tail=True)
    assert report.size == 1 and report.unsigned == 1  # stored, but not signed: not verified
    with pytest.raises(AuditUnavailableError):
        await log.close()


async def test_cancelled_caller_does_not_break_the_batch(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    log = await AuditLog.open(tmp_path / "audit.db", signer)
    task = asyncio.create_task(log.append(_query(0)))
    others = [asyncio.create_task(log.append(_query(i))) for i in range(1, 20)]
    await asyncio.sleep(0)
    task.cancel()
    assert [r.index for r in await asyncio.gather(*others)] == list(range(1, 20))
    await log.close()
    assert log.size == 20  # the cancelled caller's record was logged all the same


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.audit.note import Ed25519Signer
    from gateway.audit.log import AuditLog

    async def main():
        log = await AuditLog.open(sys.argv[1], Ed25519Signer.from_key_string(sys.argv[2]))
        async def writer(w):
            for i in range(100000):
                r = await log.append({"kind": "query", "writer": w, "i": i})
                sys.stdout.write(f"{r.index}\\n")
                sys.stdout.flush()
        await asyncio.gather(*(writer(w) for w in range(16)))

    asyncio.run(main())
    """
)


@pytest.mark.timeout(60)
def test_sigkill_loses_no_acknowledged_record(
    tmp_path: Path, signer: Ed25519Signer, keypair: tuple[str, str]
) -> None:
    path = tmp_path / "audit.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), keypair[0]],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acknowledged: list[int] = []
    assert proc.stdout is not None
    while len(acknowledged) < 3000:
        line = proc.stdout.readline()
        assert line, "child exited early"
        acknowledged.append(int(line))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    async def reopen() -> int:
        log = await AuditLog.open(path, signer)  # re-verified against its checkpoint
        await log.close()
        return log.size

    assert asyncio.run(reopen()) > max(acknowledged)
    store = SQLiteStore(path, read_only=True)
    report = verify_log(store, _verifiers(signer))
    assert report.size == report.verified_size
    for index in acknowledged[::97]:
        entry = store.entry(index)
        assert entry is not None and decode_record(entry.leaf)["seq"] == index
    store.close()


def test_checkpoint_every_must_be_positive() -> None:
    assert Checkpoint(ORIGIN, 0, bytes(32)).size == 0

    async def bad() -> None:
        signer = Ed25519Signer.from_key_string(generate_key(ORIGIN)[0])
        await AuditLog.open(None, signer, store=MemoryStore(), checkpoint_every=0)

    with pytest.raises(ConfigError):
        asyncio.run(bad())
