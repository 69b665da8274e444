"""Verification in worker processes: the same verdict, the same first bad index and
the same records as one process; a progress line for long passes."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import verify as verify_mod
from gateway.audit.errors import LogIntegrityError
from gateway.audit.log import AuditLog
from gateway.audit.merkle import leaf_hash
from gateway.audit.note import Ed25519Signer, Verifier
from gateway.audit.progress import Progress
from gateway.audit.records import canonical_json, decode_record
from gateway.audit.store import SQLiteStore
from gateway.audit.verify import verify_log

N = 1_200


def _record(i: int) -> dict[str, object]:
    return {"kind": "query", "agency_id": f"agency-{i % 7}", "purpose": "lending", "n": i}


@pytest.fixture
def log_path(tmp_path: Path, signer: Ed25519Signer) -> Path:
    path = tmp_path / "audit.db"

    async def build() -> None:
        log = await AuditLog.open(path, signer)
        await asyncio.gather(*(log.append(_record(i)) for i in range(N)))
        await log.close()

    asyncio.run(build())
    return path


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many chunks over few entries, so that three workers take turns several times.
    monkeypatch.setattr(verify_mod, "CHUNK", 100)


def _verify(path: Path, signer: Ed25519Signer, workers: int, **kw: Any) -> Any:
    store = SQLiteStore(path, read_only=True)
    try:
        return verify_log(
            store, [Verifier.from_key_string(signer.verifier_key())], workers=workers, **kw
        )
    finally:
        store.close()


def _outcome(path: Path, signer: Ed25519Signer, workers: int) -> tuple[str, int | None]:
    with pytest.raises(LogIntegrityError) as info:
        _verify(path, signer, workers)
    return str(info.value), info.value.index


def test_workers_agree_with_one_process(log_path: Path, signer: Ed25519Signer) -> None:
    seen: dict[int, list[tuple[int, dict[str, Any]]]] = {1: [], 3: []}
    reports = {
        w: _verify(log_path, signer, w, on_record=lambda i, r, w=w: seen[w].append((i, r)))
        for w in (1, 3)
    }
    one, three = reports[1], reports[3]
    assert (one.size, one.verified_size, one.checkpoints) == (N, N, three.checkpoints)
    assert (three.size, three.verified_size) == (N, N)
    assert one.tree.root() == three.tree.root()
    assert seen[1] == seen[3] and [i for i, _ in seen[3]] == list(range(N))
    assert seen[3][777][1]["n"] == 777


_TRIGGERS = ("entries_no_update", "entries_no_delete")


def _as_attacker(db: sqlite3.Connection) -> None:
    # Append-only triggers stop mistakes, not someone with the file: drop them.
    for name in _TRIGGERS:
        db.execute(f"DROP TRIGGER IF EXISTS {name}")


def _rewrite(path: Path, index: int, leaf: bytes, *, fix_hash: bool) -> None:
    with sqlite3.connect(path) as db:
        _as_attacker(db)
        if fix_hash:
            db.execute(
                "UPDATE entries SET leaf = ?, leaf_hash = ? WHERE idx = ?",
                (leaf, leaf_hash(leaf), index),
            )
        else:
            db.execute("UPDATE entries SET leaf = ? WHERE idx = ?", (leaf, index))


@pytest.mark.parametrize(
    ("damage", "index", "message"),
    [
        ("leaf", 650, "index 650: record bytes do not match the stored leaf hash"),
        ("seq", 1010, "index 1010: record says seq 9"),
        ("json", 333, "index 333: record is malformed"),
        ("gap", 899, "index 899: entry is missing (the next stored index is 900)"),
    ],
)
def test_the_first_fault_is_reported_the_same(
    log_path: Path, signer: Ed25519Signer, damage: str, index: int, message: str
) -> None:
    with sqlite3.connect(log_path) as db:
        leaf = bytes(db.execute("SELECT leaf FROM entries WHERE idx = ?", (index,)).fetchone()[0])
        if damage == "gap":
            _as_attacker(db)
            db.execute("DELETE FROM entries WHERE idx = ?", (index,))
    if damage == "leaf":
        _rewrite(log_path, index, leaf.replace(b"lending", b"Lending"), fix_hash=False)
    elif damage == "seq":
        moved = canonical_json({**decode_record(leaf), "seq": 9})
        _rewrite(log_path, index, moved, fix_hash=True)
    elif damage == "json":
        _rewrite(log_path, index, b"{not json", fix_hash=True)
    # A second fault further on: the first one must still be the one reported.
    later = canonical_json({**_record(N - 5), "v": 1, "seq": 3})
    _rewrite(log_path, N - 5, later, fix_hash=True)
    serial = _outcome(log_path, signer, 1)
    parallel = _outcome(log_path, signer, 3)
    assert serial == parallel
    assert serial[1] == index and serial[0].startswith(message), serial


def test_progress_on_a_pipe_writes_a_line_per_tenth() -> None:
    out = io.StringIO()
    ticks = iter(range(100))
    progress = Progress("verifying", stream=out, force=True, clock=lambda: float(next(ticks)))
    for done in range(0, 1001, 50):
        progress(done, 1000)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("verifying: 0/1,000 entries (0%)")
    assert lines[-1].startswith("verifying: 1,000/1,000 entries (100%)")
    assert len(lines) == 11  # 0 %, 10 %, ..., 100 %


def test_progress_stays_quiet_on_short_logs_unless_forced() -> None:
    out = io.StringIO()
    Progress("verifying", stream=out)(10, 10)
    assert out.getvalue() == ""


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = _Tty()
    clock = iter([0.0, 1.0, 1.05, 2.0])
    progress = Progress("verifying", stream=out, clock=lambda: next(clock))
    progress(100_000, 400_000)
    progress(150_000, 400_000)  # within 0.2 s of the last draw: skipped
    progress(400_000, 400_000)
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert " 25% " in text and "100%" in text and "ETA" in text


def _audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("credit-audit")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def test_the_console_script_verifies_with_workers_and_progress(
    log_path: Path, signer: Ed25519Signer, tmp_path: Path
) -> None:
    key = tmp_path / "audit.pub"
    key.write_text(signer.verifier_key() + "\n")
    out = _audit_cli("verify", str(log_path), "--key", str(key), "--workers", "2", "--progress")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"OK: {N} entries")
    assert f"verifying: {N:,}/{N:,} entries (100%)" in out.stderr
    bad = _audit_cli("verify", str(log_path), "--key", str(key), "--workers", "0")
    assert bad.returncode == 2 and "--workers must be 1 or more" in bad.stderr
