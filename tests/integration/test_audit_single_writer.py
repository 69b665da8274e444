"""One writer per audit log. A second writer, in another
process or this one, is refused at its own start with a clear message, and the
first writer carries on unharmed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.audit.log import AuditLog
from gateway.audit.note import Ed25519Signer, generate_key, load_verifiers, write_key_files
from gateway.audit.verify import verify_log
from gateway.dev.devstack import DevStack
from gateway.errors import ConfigError
from gateway.stores.sqlite.audit import SQLiteStore
from tests.integration.conftest import SUBJECTS, subject

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "credit-gateway.test/audit"

_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.audit.note import Ed25519Signer
    from gateway.audit.log import AuditLog

    async def main():
        log = await AuditLog.open(sys.argv[1], Ed25519Signer.from_file(sys.argv[2]))
        for i in range(3):
            await log.append({"kind": "query", "i": i})
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the parent tries to open meanwhile
        for i in range(3, 6):
            await log.append({"kind": "query", "i": i})
        await log.close()
        print(log.size, flush=True)

    asyncio.run(main())
    """
)


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    skey, vkey = generate_key(ORIGIN)
    write_key_files(skey, vkey, tmp_path / "audit.key", tmp_path / "audit.pub")
    return tmp_path / "audit.key", tmp_path / "audit.pub"


async def _open_then_close(db: Path, key: Path) -> int:
    log = await AuditLog.open(db, Ed25519Signer.from_file(key))
    await log.close()
    return log.size


def test_a_second_process_is_refused_and_the_first_unharmed(tmp_path: Path) -> None:
    key, pub = _keys(tmp_path)
    db = tmp_path / "audit.db"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db), str(key)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as first:
        assert first.stdin is not None and first.stdout is not None
        try:
            assert first.stdout.readline().strip() == "ready"
            with pytest.raises(ConfigError) as exc:
                asyncio.run(_open_then_close(db, key))
            message = str(exc.value)
            assert exc.value.key == "audit.path"
            assert f"already open for writing by process {first.pid}" in message
            assert "exactly one writer" in message and str(db) not in message
            first.stdin.write("go\n")
            first.stdin.flush()
            assert first.stdout.readline().strip() == "6"  # the first writer finished its work
            assert first.wait(30) == 0
        finally:
            first.kill()
    # ...and, once it has gone, the log opens again and verifies whole.
    assert asyncio.run(_open_then_close(db, key)) == 6
    store = SQLiteStore(db, read_only=True)  # readers take no lock
    try:
        assert verify_log(store, load_verifiers(pub)).verified_size == 6
    finally:
        store.close()


async def test_a_second_writer_in_the_same_process_is_refused(tmp_path: Path) -> None:
    key, _ = _keys(tmp_path)
    signer = Ed25519Signer.from_file(key)
    log = await AuditLog.open(tmp_path / "audit.db", signer)
    with pytest.raises(ConfigError, match="already open for writing"):
        await AuditLog.open(tmp_path / "audit.db", signer)
    assert (await log.append({"kind": "query"})).index == 0
    reader = SQLiteStore(tmp_path / "audit.db", read_only=True)
    reader.close()
    await log.close()
    again = await AuditLog.open(tmp_path / "audit.db", signer)  # closing released the lock
    await again.close()


async def test_a_hard_link_to_the_log_is_the_same_log(tmp_path: Path) -> None:
    """A second gateway pointed at a hard link of the log (another name, so
    another ``<name>.lock``) started, reused indexes and cleared the first one's
    pending ledger marks; the lock on the file itself refuses it."""
    key, _ = _keys(tmp_path)
    signer = Ed25519Signer.from_file(key)
    log = await AuditLog.open(tmp_path / "audit.db", signer)
    await log.append({"kind": "query"})
    (tmp_path / "other").mkdir()
    os.link(tmp_path / "audit.db", tmp_path / "other" / "audit.db")
    with pytest.raises(ConfigError, match="already open for writing"):
        await AuditLog.open(tmp_path / "other" / "audit.db", signer)
    assert (await log.append({"kind": "query"})).index == 1  # the first one is unharmed
    await log.close()
    linked = await AuditLog.open(tmp_path / "other" / "audit.db", signer)  # free again
    assert linked.size == 2
    await linked.close()


@pytest.mark.timeout(180)
async def test_a_second_gateway_process_is_refused_and_the_first_serves_on(
    tmp_path: Path,
) -> None:
    async with await DevStack.create(tmp_path / "s", subjects=SUBJECTS) as stack:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli.gateway", "--log-level", "WARNING", "serve",
            "--config", str(stack.config_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2, (out, err)
        assert b"serving on" not in out
        text = err.decode()
        assert "audit.path: the audit log is already open for writing by process" in text
        assert str(os.getpid()) in text and "Traceback" not in text
        assert str(stack.audit["log"]) not in text
        # The first gateway is unharmed: it answers, and its log takes the record.
        async with stack.client("ndrc") as client:
            response = await client.query(
                enterprise=subject(stack, "enterprise_clean"), purpose="supervision_inspection"
            )
        assert response.receipt.log_index >= 0
        assert stack.gateway._audit is not None and stack.gateway._audit.log.available
