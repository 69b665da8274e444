"""credit-audit end to end: real logs, real signatures, tampering by editing the file."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.cli import main
from gateway.audit.log import AuditLog
from gateway.audit.merkle import MerkleTree, leaf_hash
from gateway.audit.note import Ed25519Signer, generate_key, write_key_files
from gateway.audit.records import encode_record, pseudonymize, write_pseudonym_key

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "credit-gateway.test/audit"
SUBJECT = "11010519491231002X"
PKEY = bytes(range(32))


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "audit.db"
        self.key = root / "audit.pub"
        self.skey, vkey = generate_key(ORIGIN)
        write_key_files(self.skey, vkey, root / "audit.key", self.key)
        self.pkey = root / "pseudonym.key"
        write_pseudonym_key(self.pkey, PKEY)

    def sql(self, script: str) -> None:
        """Edit the log file directly, as an attacker with the file would."""
        conn = sqlite3.connect(self.db)
        for t in ("entries_no_update", "entries_no_delete", "checkpoints_no_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {t}")
        conn.executescript(script)
        conn.commit()
        conn.close()


def _record(i: int) -> dict[str, object]:
    subject = SUBJECT if i % 10 == 0 else f"9135020{i:011d}"
    return {
        "kind": "query" if i % 7 else "settlement",
        "agency_id": f"bank-{i % 3}",
        "purpose": ["lending", "guarantee"][i % 2],
        "time": f"2025-03-{1 + i // 100:02d}T08:{i % 60:02d}:00Z",
        "subject_pseudonym": pseudonymize(PKEY, "person", subject),
    }


async def _fill(env: Env, n: int) -> None:
    log = await AuditLog.open(env.db, Ed25519Signer.from_key_string(env.skey))
    await asyncio.gather(*(log.append(_record(i)) for i in range(n)))
    await log.close()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    asyncio.run(_fill(e, 600))
    return e


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_ok(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "verify", env.db, "--key", env.key)
    assert code == 0
    assert out.startswith("OK: 600 entries")


@pytest.mark.parametrize(
    ("script", "index", "why"),
    [
        # one byte of one record (the stored leaf hash is left as it was)
        (
            "UPDATE entries SET leaf = CAST(replace(CAST(leaf AS TEXT), 'bank-1', 'bank-7') "
            "AS BLOB) WHERE idx = 301",
            301,
            "do not match the stored leaf hash",
        ),
        # one record removed
        ("DELETE FROM entries WHERE idx = 123", 123, "missing"),
        # swap two records, leaf hashes and all
        (
            "UPDATE entries SET idx = -1 WHERE idx = 40; UPDATE entries SET idx = 40 WHERE "
            "idx = 41; UPDATE entries SET idx = 41 WHERE idx = -1",
            40,
            "says seq 41",
        ),
        # the tail removed: the checkpoints left in the file still cover it
        ("DELETE FROM entries WHERE idx >= 590", 590, "truncated"),
    ],
)
def test_verify_names_the_first_bad_index(
    env: Env, capsys: pytest.CaptureFixture[str], script: str, index: int, why: str
) -> None:
    env.sql(script)
    code, _, err = _run(capsys, "verify", env.db, "--key", env.key)
    assert code == 1
    assert f"index {index}:" in err and why in err
    assert len(err.strip().splitlines()) == 1


def test_verify_catches_a_rehashed_edit(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """Edit a record and fix its leaf hash: the signed root still catches it."""
    conn = sqlite3.connect(env.db)
    leaf = conn.execute("SELECT leaf FROM entries WHERE idx = 300").fetchone()[0]
    conn.close()
    forged = leaf.replace(b"lending", b"leNding")
    env.sql("")
    conn = sqlite3.connect(env.db)
    conn.execute(
        "UPDATE entries SET leaf = ?, leaf_hash = ? WHERE idx = 300", (forged, leaf_hash(forged))
    )
    conn.commit()
    conn.close()
    code, _, err = _run(capsys, "verify", env.db, "--key", env.key)
    assert code == 1
    assert "index 256:" in err and "indexes 256..511" in err


def test_truncation_below_a_kept_checkpoint(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "prove", env.db, "--key", env.key, "0")
    assert code == 0
    kept = env.root / "kept.note"
    kept.write_text(out.split("\n\n", 1)[1])  # the checkpoint part of the proof
    assert _run(capsys, "verify", env.db, "--key", env.key, "--checkpoint", kept)[0] == 0
    # Truncate AND remove every checkpoint above: the log is self-consistent now...
    env.sql("DELETE FROM entries WHERE idx >= 500; DELETE FROM checkpoints WHERE size > 500")
    # ...but not with what the auditor kept.
    code, _, err = _run(capsys, "verify", env.db, "--key", env.key, "--checkpoint", kept)
    assert code == 1
    assert "index 500:" in err and "truncated" in err


def test_checkpoint_signed_by_another_key(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(env.db)
    hashes = [bytes(h) for (h,) in conn.execute("SELECT leaf_hash FROM entries ORDER BY idx")]
    leaf = encode_record(_record(600), seq=600)
    tree = MerkleTree([*hashes, leaf_hash(leaf)])
    forger = Ed25519Signer.from_key_string(generate_key(ORIGIN)[0])
    note = sign_checkpoint(Checkpoint(ORIGIN, 601, tree.root()), [forger])
    conn.execute("INSERT INTO entries VALUES (600, ?, ?)", (leaf, leaf_hash(leaf)))
    conn.execute("INSERT INTO checkpoints (size, note) VALUES (601, ?)", (note,))
    conn.commit()
    conn.close()
    code, _, err = _run(capsys, "verify", env.db, "--key", env.key)
    assert code == 1
    assert "index 600:" in err and "not signed by a trusted key" in err


def test_unsigned_tail_fails_unless_allowed(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    leaf = encode_record(_record(600), seq=600)
    env.sql("")
    conn = sqlite3.connect(env.db)
    conn.execute("INSERT INTO entries VALUES (600, ?, ?)", (leaf, leaf_hash(leaf)))
    conn.commit()
    conn.close()
    code, out, err = _run(capsys, "verify", env.db, "--key", env.key)
    assert code == 1 and "index 600:" in err and "1 entries (600..600) are not covered" in err
    code, out, err = _run(capsys, "verify", env.db, "--key", env.key, "--allow-unsigned-tail")
    assert code == 0 and "(600..600) are not covered" in err
    assert out.startswith("OK: 600 entries") and "1 later entries NOT verified" in out


def test_export_prove_and_check_proof(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = env.root / "export"
    assert _run(capsys, "export", env.db, "--key", env.key, "--out", out_dir)[0] == 0
    lines = (out_dir / "records.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 600 and json.loads(lines[17])["seq"] == 17
    assert (out_dir / "verifier.key").read_text() == env.key.read_text()
    assert len(list((out_dir / "checkpoints").glob("*.note"))) >= 4
    # The export itself verifies, and catches an edit.
    assert _run(capsys, "verify", out_dir, "--key", env.key)[0] == 0

    proof = env.root / "e17.tlog-proof"
    assert _run(capsys, "prove", env.db, "--key", env.key, "17", "--out", proof)[0] == 0
    assert proof.read_text().startswith("c2sp.org/tlog-proof@v1\nindex 17\n")
    leaf = env.root / "leaf17.json"
    leaf.write_bytes(lines[17])  # with its line end, as cut from the export
    code, out, _ = _run(capsys, "check-proof", proof, "--key", env.key, "--leaf", leaf)
    assert code == 0 and "entry 17" in out
    leaf.write_bytes(lines[18])
    code, _, err = _run(capsys, "check-proof", proof, "--key", env.key, "--leaf", leaf)
    assert code == 1 and "entry 17" in err

    code, out, _ = _run(capsys, "prove", env.db, "--key", env.key, "3", "--size", "256")
    assert code == 0 and "\n256\n" in out
    code, _, err = _run(capsys, "prove", env.db, "--key", env.key, "3", "--size", "257")
    assert code == 2 and "no signed checkpoint of size 257" in err

    lines[5] = lines[5].replace(b"bank-2", b"bank-0")
    (out_dir / "records.jsonl").write_bytes(b"".join(lines))
    code, _, err = _run(capsys, "verify", out_dir, "--key", env.key)
    assert code == 1 and "index 0:" in err  # exports keep no leaf hashes: the root catches it


def test_history_and_who(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "history", env.db, "--key", env.key, "--subject-type", "person",
        "--subject", SUBJECT.lower(), "--pseudonym-key", env.pkey,
    )  # fmt: skip
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()[2:]]
    # i % 10 == 0 and a query (i % 7 != 0): 60 subjects minus multiples of 70
    assert len(rows) == 60 - 9
    assert rows[0] == ["10", "2025-03-01T08:10:00Z", "bank-1", "lending"]
    assert SUBJECT not in out

    code, out, _ = _run(
        capsys, "who", env.db, "--key", env.key, "--agency", "bank-2",
        "--since", "2025-03-06T00:00:00+00:00",
    )  # fmt: skip
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()[2:]]
    assert rows and all(r[2] == "bank-2" and r[1] >= "2025-03-06" for r in rows)
    assert [int(r[0]) for r in rows] == [i for i in range(500, 600) if i % 3 == 2 and i % 7]


def test_usage_and_io_errors(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "verify", env.root / "nope.db", "--key", env.key)[0] == 2
    assert _run(capsys, "verify", env.db, "--key", env.root / "nope.pub")[0] == 2
    (env.root / "bad.pub").write_text("not a key\n")
    code, _, err = _run(capsys, "verify", env.db, "--key", env.root / "bad.pub")
    assert code == 2 and err.startswith("error:")
    assert _run(capsys, "frobnicate")[0] == 2
    assert _run(capsys, "--help")[0] == 0
    other = env.root / "other.pub"
    other.write_text(generate_key(ORIGIN)[1] + "\n")
    code, _, err = _run(capsys, "verify", env.db, "--key", other)
    assert code == 1 and "index 0:" in err


def test_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "keygen", "--name", ORIGIN, "--private", tmp_path / "k", "--public",
        tmp_path / "k.pub", "--pseudonym-key", tmp_path / "p",
    )  # fmt: skip
    assert code == 0 and out.startswith(ORIGIN + "+")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert Ed25519Signer.from_file(tmp_path / "k").verifier_key() == out.strip()


_BLOCKED = textwrap.dedent(
    """
    import sys

    BLOCKED = ("grpc", "google", "protobuf", "casbin", "prometheus_client", "jwt", "psycopg")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the auditors' tool must not import {name}")
            return None

    sys.meta_path.insert(0, Block())
    from gateway.audit.cli import main
    code = main(sys.argv[1:])
    assert "gateway.errors" not in sys.modules
    assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    sys.exit(code)
    """
)


@pytest.mark.parametrize("command", ["verify", "history", "export", "prove"])
def test_the_tool_needs_only_stdlib_and_cryptography(env: Env, command: str) -> None:
    extra = {
        "verify": ["--checkpoint", str(env.root / "kept.note")],
        "history": ["--subject-type", "person", "--subject", SUBJECT, "--pseudonym-key",
                    str(env.pkey)],
        "export": ["--out", str(env.root / "exp")],
        "prove": ["5"],
    }[command]  # fmt: skip
    conn = sqlite3.connect(env.db)
    note = conn.execute("SELECT note FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()[0]
    conn.close()
    (env.root / "kept.note").write_text(note)
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED, command, str(env.db), "--key", str(env.key), *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if command == "prove":
        assert base64.b64decode(result.stdout.splitlines()[2])
