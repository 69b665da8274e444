"""Shared constants and helpers of the audit tests (imported by name: the test
folders are not packages)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.audit.errors import StorageError
from gateway.audit.log import AuditLog
from gateway.audit.note import Signer
from gateway.stores.sqlite.audit import SQLiteStore

#: Test vectors kept in the repository (tests/vectors, with their
#: licence), so that the interoperability tests run on any checkout.
VECTORS = Path(__file__).resolve().parents[2] / "vectors"

ORIGIN = "credit-gateway.test/audit"


def need_vectors(sub: str) -> Path:
    """The vector folder, or skip the test saying where it was looked for."""
    path = VECTORS / sub
    if not path.exists():
        pytest.fail(f"test vectors not found at {path}")
    return path


class GatedStore(SQLiteStore):
    """The real SQLite store whose tile reads, once ``armed``, wait for ``gate`` to open:
    a proof that read tiles on the event loop would hold the whole loop meanwhile.

    A read called on an event loop's thread is counted in ``on_loop`` and not held (so
    that a regression fails the test's assertions instead of hanging it); ``entered`` is
    set when a read off the loop starts waiting.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.armed = False
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.on_loop: list[int] = []

    def tile_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        if self.armed:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a worker thread: hold it until the test opens the gate
                self.entered.set()
                if not self.gate.wait(30):
                    raise StorageError("the test never opened the gate") from None
            else:
                self.on_loop.append(level)
        return super().tile_hashes(level, start, end)


async def wait_until_held(store: GatedStore, timeout_s: float = 10.0) -> None:
    """Return once a tile read is held at ``store``'s gate; polling keeps the loop
        running. A read on the loop itself is never held, so it fails at once
    (AssertionError), or, if it never reaches the store, after ``timeout_s`` (TimeoutError)."""
    async with asyncio.timeout(timeout_s):
        while not store.entered.is_set():
            assert not store.on_loop, "a tile was read on the event loop"
            await asyncio.sleep(0.002)


def numbered_record(i: int) -> dict[str, object]:
    """A small query-shaped record, the ``i``-th of a run."""
    return {"kind": "query", "agency_id": f"agency-{i % 3}", "n": i}


async def fill_log(path: Path, signer: Signer, n: int) -> list[bytes]:
    """A new SQLite log at ``path`` holding ``n`` numbered records (appended at once,
    batches of 100), closed; their leaf hashes in order."""
    log = await AuditLog.open(path, signer, max_batch=100)
    receipts = await asyncio.gather(*(log.append(numbered_record(i)) for i in range(n)))
    await log.close()
    return [r.leaf_hash for r in receipts]
