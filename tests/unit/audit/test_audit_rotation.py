"""Key rotation: the old key co-signs during an overlap, so verifiers that hold
only the old key keep working; afterwards both keys verify the whole history."""

from __future__ import annotations

from pathlib import Path

from gateway.audit import Ed25519Signer, generate_key, write_key_files
from gateway.audit.cli import main as credit_audit
from gateway.audit.log import AuditLog

ORIGIN = "credit-gateway.test/rotation"


def _keys(folder: Path, name: str) -> tuple[Ed25519Signer, Path]:
    skey, vkey = generate_key(ORIGIN)
    write_key_files(skey, vkey, folder / f"{name}.key", folder / f"{name}.vkey")
    return Ed25519Signer.from_file(folder / f"{name}.key"), folder / f"{name}.vkey"


async def _append(log: AuditLog, n: int, start: int) -> None:
    for i in range(n):
        await log.append({"kind": "test", "n": start + i})


async def test_rotation_with_overlap(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    old, old_v = _keys(tmp_path, "old")
    new, new_v = _keys(tmp_path, "new")

    log = await AuditLog.open(db, old)
    await _append(log, 5, 0)
    await log.close()
    # Overlap: the new key signs, the old one co-signs.
    log = await AuditLog.open(db, new, co_signers=[old])
    await _append(log, 5, 5)
    await log.close()
    assert (
        credit_audit(["verify", str(db), "--key", str(old_v)]) == 0
    )  # old-key holders still verify
    # After the overlap: the new key alone; the old one is only trusted for history.
    log = await AuditLog.open(db, new, trusted_keys=[old_v.read_text().strip()])
    await _append(log, 5, 10)
    await log.close()

    both = tmp_path / "both.vkey"
    both.write_text(old_v.read_text() + new_v.read_text())
    assert credit_audit(["verify", str(db), "--key", str(both)]) == 0
    # Holding only the old key after the overlap is not enough: the tail is new-key only.
    assert credit_audit(["verify", str(db), "--key", str(old_v)]) == 1
