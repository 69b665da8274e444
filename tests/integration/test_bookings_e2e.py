"""Every booking is on the record, whatever happens, through a
running federation: a caller that goes away, and an audit log that fails.
Afterwards the installed ``credit-gateway billing reconcile`` finds the ledger
and the audit log telling the same story."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

import gateway.audit.log
from adapters.testing import InMemoryStore
from gateway.audit.errors import StorageError
from gateway.billing.reconcile import Movements, record_movements
from gateway.cli.connect import build_request
from gateway.dev.devstack import DevStack
from gateway.domain.catalog import load_catalog
from gateway.runtime.assembly import build_gateway
from gateway.runtime.config import load_config
from gateway.stores.sqlite.audit import SQLiteStore
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


class FailingStore(SQLiteStore):
    """The real SQLite audit store, whose writes fail once ``failing`` is set (a full disk)."""

    failing = False

    def append(self, first_index: int, entries: Any, checkpoints: Any, tiles: Any = ()) -> None:
        if self.failing:
            raise StorageError("injected: no space left on device")
        super().append(first_index, entries, checkpoints, tiles)


def _ledger(stack: DevStack) -> Path:
    return Path(stack.audit["log"]).parent.parent / "ledger.sqlite"


def _records(stack: DevStack, request_id: str) -> list[dict[str, Any]]:
    store = SQLiteStore(stack.audit["log"], read_only=True)
    try:
        leaves = [json.loads(e.leaf) for e in store.iter_entries()]
    finally:
        store.close()
    return [r for r in leaves if r.get("request_id") == request_id]


async def reconcile(stack: DevStack) -> tuple[int, str]:
    """The installed console script, as an operator runs it."""
    script = Path(sys.executable).parent / "credit-gateway"
    proc = await asyncio.create_subprocess_exec(
        str(script), "billing", "reconcile", "--ledger", str(_ledger(stack)),
        "--audit-log", str(stack.audit["log"]), "--key", str(stack.audit["verifier_key"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_caller_gone_during_fan_out_is_released_on_the_record(tmp_path: Path) -> None:
    slow = InMemoryStore.from_catalog(load_catalog(), "market", delay_s=30)
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, fakes={"market": slow}
    ) as stack:
        meter = stack.gateway.meter
        assert meter is not None
        request = build_request(
            enterprise=subject(stack, "enterprise_clean"), purpose="lending", mode="paid"
        )
        rid = request.request_id
        async with stack.client("bank") as client:
            call = client.stub.Query(request, timeout=60, metadata=client._metadata)
            async with asyncio.timeout(10):
                while not slow.calls:  # reserved, and the departments are being asked
                    await asyncio.sleep(0.01)
            held = await meter.ledger.run(meter.store.request, rid)
            assert held is not None and held.state == "reserved" and held.reserved_fen > 0
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        async with asyncio.timeout(10):
            while ("request", rid) in await meter.ledger.run(meter.store.unaudited):
                await asyncio.sleep(0.02)
        released = await meter.ledger.run(meter.store.request, rid)
        assert released is not None and released.state == "released"
        assert await stack.balance_fen("bank") == 50_000
    (record,) = _records(stack, rid)
    assert record["kind"] == "billing" and record["reason"] == "caller went away"
    assert record_movements(record) == Movements(
        reserve=held.reserved_fen, release=held.reserved_fen
    )
    code, output = await reconcile(stack)
    assert code == 0, output
    assert "0 differences" in output


async def test_while_the_log_is_down_no_department_is_asked_and_nothing_booked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.audit.log, "SQLiteStore", FailingStore)
    market = InMemoryStore.from_catalog(load_catalog(), "market")
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, fakes={"market": market}
    ) as stack:
        meter = stack.gateway.meter
        auditor = stack.gateway._audit
        assert meter is not None and auditor is not None
        store = auditor.log._store
        assert isinstance(store, FailingStore)
        enterprise = subject(stack, "enterprise_clean")
        async with stack.client("bank") as client:
            store.failing = True
            # The first query finds out: its answer is withheld and its charge refunded.
            first = build_request(enterprise=enterprise, purpose="lending", mode="paid")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await client.send(first)
            assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
            assert not auditor.available
            asked = len(market.calls)
            entries = len(await meter.ledger.run(meter.store.entries))
            # From now on: refused before any department is asked or anything booked.
            second = build_request(enterprise=enterprise, purpose="lending", mode="paid")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await client.send(second)
            assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "audit" in (exc.value.details() or "")
        assert len(market.calls) == asked
        assert len(await meter.ledger.run(meter.store.entries)) == entries
        assert await meter.ledger.run(meter.store.request, second.request_id) is None
        assert await stack.balance_fen("bank") == 50_000
        # The refund could not be recorded yet: the ledger keeps it marked.
        assert ("request", first.request_id) in await meter.ledger.run(meter.store.unaudited)

    # The disk has room again: the next start puts the refund on the record.
    restarted = await build_gateway(load_config(stack.config_path))
    await restarted.stop(grace=0)
    (record,) = _records(stack, first.request_id)
    moved = record_movements(record)
    assert record["event"] == "refund" and moved.charge == moved.refund > 0
    assert _records(stack, second.request_id) == []
    code, output = await reconcile(stack)
    assert code == 0, output
