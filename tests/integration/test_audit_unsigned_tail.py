"""Only what a signed checkpoint covers is ever reported as
verified; ``who`` and ``history`` leave the unsigned tail out; a stopped log
has no unsigned tail; ``history`` refuses a mistyped identifier."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.audit.log import AuditLog
from gateway.audit.note import Ed25519Signer, load_verifiers
from gateway.audit.records import encode_record, pseudonymize
from gateway.audit.verify import verify_log
from gateway.stores.sqlite.audit import SQLiteStore
from tests.integration.test_audit_cli import PKEY, SUBJECT, Env, _fill, _run

FORGED_AGENCY = "bank-1"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    asyncio.run(_fill(e, 300))
    return e


def _forged(seq: int) -> bytes:
    """A well-formed query record in the log's own format, for the audited subject."""
    return encode_record(
        {
            "kind": "query",
            "agency_id": FORGED_AGENCY,
            "purpose": "lending",
            "time": "2025-03-09T08:00:00Z",
            "subject_pseudonym": pseudonymize(PKEY, "person", SUBJECT),
        },
        seq=seq,
    )


def _export(env: Env, capsys: pytest.CaptureFixture[str]) -> Path:
    out = env.root / "export"
    code, _, err = _run(capsys, "export", env.db, "--key", env.key, "--out", out)
    assert code == 0, err
    return out


@pytest.mark.parametrize("strict", [False, True])
def test_forged_record_appended_to_an_export_fails_verify(
    env: Env, capsys: pytest.CaptureFixture[str], strict: bool
) -> None:
    out = _export(env, capsys)
    with (out / "records.jsonl").open("ab") as f:
        f.write(_forged(300) + b"\n")
    flags = ["--strict"] if strict else []
    code, stdout, err = _run(capsys, "verify", out, "--key", env.key, *flags)
    assert code == 1 and stdout == ""
    assert err.startswith("FAILED: index 300: 1 entries (300..300) are not covered")
    # Told to accept a tail, it still never counts it as verified.
    code, stdout, err = _run(capsys, "verify", out, "--key", env.key, "--allow-unsigned-tail")
    assert code == 0 and stdout.startswith("OK: 300 entries") and "1 later entries NOT" in stdout


def test_copy_with_its_last_checkpoints_deleted_fails_verify(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.sql("DELETE FROM checkpoints WHERE size > 256")
    code, _, err = _run(capsys, "verify", env.db, "--key", env.key, "--strict")
    assert code == 1
    assert "index 256: 44 entries (256..299) are not covered by a signed checkpoint" in err


def test_who_and_history_leave_the_unsigned_tail_out(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _export(env, capsys)
    history = ["--subject-type", "person", "--subject", SUBJECT, "--pseudonym-key", env.pkey]
    code, before, _ = _run(capsys, "history", out, "--key", env.key, *history)
    assert code == 0
    with (out / "records.jsonl").open("ab") as f:
        f.write(_forged(300) + b"\n")
    code, after, err = _run(capsys, "history", out, "--key", env.key, *history)
    assert code == 0 and after == before and "\n300\t" not in after
    assert "1 records after the last signed checkpoint (indexes 300..300)" in err
    assert "are not listed" in err
    code, who, err = _run(capsys, "who", out, "--key", env.key, "--agency", FORGED_AGENCY)
    assert code == 0 and "\n300\t" not in who and "are not listed" in err


def test_export_copies_only_signed_records(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.sql("DELETE FROM checkpoints WHERE size > 256")
    out = env.root / "export"
    code, stdout, err = _run(capsys, "export", env.db, "--key", env.key, "--out", out)
    assert code == 0 and stdout.startswith("exported 256 records")
    assert "44 records after the last signed checkpoint" in err and "not exported" in err
    assert len((out / "records.jsonl").read_bytes().splitlines()) == 256
    assert _run(capsys, "verify", out, "--key", env.key)[0] == 0


@pytest.mark.parametrize(
    ("subject_type", "typed", "problem"),
    [
        ("person", SUBJECT[:-1] + "3", "wrong check character at position 18"),
        ("person", SUBJECT[:-1], "has 18 characters, got 17"),
        ("person", "11010519491331002X", "impossible birth date in positions 7-14"),
        ("enterprise", "91110000600037341M", "wrong check character"),
        ("enterprise", "91MA00006000373410", "position 3: 'M' is not a digit"),
        # A person's number typed as a code:
        ("enterprise", SUBJECT, "wrong check character at position 18"),
        ("enterprise", "91110000600037341I", "position 18: 'I' is not in the GB 32100 alphabet"),
    ],
)
def test_history_refuses_a_mistyped_identifier(
    env: Env, capsys: pytest.CaptureFixture[str], subject_type: str, typed: str, problem: str
) -> None:
    code, out, err = _run(
        capsys, "history", env.db, "--key", env.key, "--subject-type", subject_type,
        "--subject", typed, "--pseudonym-key", env.pkey,
    )  # fmt: skip
    assert code == 2 and out == ""
    # The gateway's own rules and words (gateway.domain.identifiers, stdlib only).
    assert err.startswith("error: --subject: ") and problem in err
    assert typed not in err and typed[:-1] not in err  # the identifier is personal data


async def test_a_closed_log_has_no_unsigned_tail(tmp_path: Path) -> None:
    """AuditLog.close publishes a final checkpoint, however recent the last append."""
    env = Env(tmp_path)
    log = await AuditLog.open(
        env.db, Ed25519Signer.from_key_string(env.skey), checkpoint_interval=3600
    )
    for i in range(7):
        await log.append({"kind": "query", "i": i})
    assert log.checkpoint_size == 0  # nothing signed yet: an hour between checkpoints
    await log.close()
    store = SQLiteStore(env.db, read_only=True)
    try:
        report = verify_log(store, load_verifiers(env.key), strict=True)
    finally:
        store.close()
    assert report.size == report.verified_size == 7 and report.unsigned == 0
