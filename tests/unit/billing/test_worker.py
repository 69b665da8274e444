"""The ledger worker: one thread with group commit for a store that batches (SQLite),
``store.workers`` threads, one transaction per call, for one that does not (PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from gateway.billing.ledger import AsyncLedger, LedgerStore
from gateway.errors import LedgerError
from gateway.stores.sqlite.ledger import SQLiteLedger


class _Concurrent:
    """A stand-in store without ``batch()`` that names its worker count."""

    workers = 3

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def test_a_store_without_batch_runs_calls_side_by_side() -> None:
    store = _Concurrent()
    ledger = AsyncLedger(cast(LedgerStore, store))
    together = threading.Barrier(3, timeout=10)

    def meet(i: int) -> int:
        together.wait()  # passes only if three calls run at once
        return i

    assert await asyncio.gather(*(ledger.run(meet, i) for i in range(3))) == [0, 1, 2]

    def fails() -> Any:
        raise LedgerError("one call's failure is its own")

    with pytest.raises(LedgerError, match="its own"):
        await ledger.run(fails)
    assert await asyncio.wait_for(ledger.run(lambda: 7), 5) == 7  # the workers still serve
    await ledger.close()
    assert store.closed and ledger.closed
    with pytest.raises(LedgerError, match="closed"):
        ledger.submit(meet, 1)


async def test_open_takes_a_path_or_an_open_store(tmp_path: Path) -> None:
    by_path = await AsyncLedger.open(tmp_path / "a.db")
    assert isinstance(by_path.store, SQLiteLedger)
    await by_path.close()
    store = SQLiteLedger(tmp_path / "b.db")
    given = await AsyncLedger.open(store)
    assert given.store is store
    await given.close()
