"""``BillingAdmin`` over real gRPC on loopback: finance staff only, idempotent top-ups,
statements by local date with paging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.api.billing import BillingAdminService
from gateway.api.edge import Edge
from gateway.billing.ledger import AsyncLedger, PricedLine, ReserveSpec
from gateway.errors import PermissionDeniedError
from protos.credit.v1 import billing_pb2, billing_pb2_grpc
from tests.helpers import Clock

SHANGHAI = ZoneInfo("Asia/Shanghai")
REGISTERED = {"bank", "guarantor"}


def authorize(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Stands in for gateway.auth with Role.FINANCE: a header names the role."""
    md = dict(context.invocation_metadata() or ())
    if md.get("x-test-role") != "finance":
        raise PermissionDeniedError("billing administration is for finance staff")
    return str(md.get("x-test-principal", "finance"))


@dataclass
class Admin:
    stub: billing_pb2_grpc.BillingAdminAsyncStub
    ledger: AsyncLedger
    clock: Clock
    events: list[dict[str, Any]]


FINANCE = (("x-test-role", "finance"), ("x-test-principal", "finance-1"))
AGENCY = (("x-test-role", "agency"),)


@pytest_asyncio.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    ledger = await AsyncLedger.open(tmp_path / "ledger.db")
    clock = Clock(datetime(2026, 11, 5, 2, 0, tzinfo=UTC))
    events: list[dict[str, Any]] = []

    async def on_event(event: dict[str, Any]) -> None:
        events.append(event)

    server = grpc.aio.server(interceptors=[Edge()], options=[("grpc.so_reuseport", 0)])
    billing_pb2_grpc.add_BillingAdminServicer_to_server(
        BillingAdminService(
            ledger,
            authorize=authorize,
            timezone=SHANGHAI,
            account_exists=REGISTERED.__contains__,
            on_event=on_event,
            clock=clock,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Admin(billing_pb2_grpc.BillingAdminStub(channel), ledger, clock, events)
    finally:
        await channel.close()
        await server.stop(None)
        await ledger.close()


def reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


async def top_up(admin: Admin, account: str, fen: int, ref: str) -> billing_pb2.TopUpResponse:
    return await admin.stub.TopUp(
        billing_pb2.TopUpRequest(account_id=account, amount_fen=fen, reference=ref),
        metadata=FINANCE,
    )


async def test_top_up_then_balance(admin: Admin) -> None:
    resp = await top_up(admin, "bank", 50_000, "TX-1")
    assert not resp.replayed
    assert resp.account.balance_fen == 50_000 and resp.account.available_fen == 50_000
    assert resp.entry.kind == billing_pb2.ENTRY_KIND_TOP_UP
    assert resp.entry.actor == "finance-1"
    assert resp.entry.at.ToDatetime(tzinfo=UTC) == admin.clock.now

    bal = await admin.stub.GetBalance(
        billing_pb2.GetBalanceRequest(account_id="bank"), metadata=FINANCE
    )
    assert bal.account.balance_fen == 50_000
    assert [e["event"] for e in admin.events] == ["top_up"]
    assert admin.events[0]["reference"] == "TX-1" and admin.events[0]["actor"] == "finance-1"


async def test_top_up_is_idempotent_by_reference(admin: Admin) -> None:
    first = await top_up(admin, "bank", 50_000, "TX-1")
    again = await top_up(admin, "bank", 50_000, "TX-1")
    assert again.replayed and again.entry == first.entry
    assert again.account.balance_fen == 50_000
    assert len(admin.events) == 1

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await top_up(admin, "bank", 60_000, "TX-1")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(exc.value) == "REFERENCE_REUSED"


@pytest.mark.parametrize(
    ("account", "fen", "ref", "code"),
    [
        ("bank", 0, "TX", grpc.StatusCode.INVALID_ARGUMENT),
        ("bank", -100, "TX", grpc.StatusCode.INVALID_ARGUMENT),
        ("bank", 100, "", grpc.StatusCode.INVALID_ARGUMENT),
        ("phantom", 100, "TX", grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_bad_top_ups(
    admin: Admin, account: str, fen: int, ref: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await top_up(admin, account, fen, ref)
    assert exc.value.code() == code


async def test_unknown_account_is_not_found(admin: Admin) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await admin.stub.GetBalance(
            billing_pb2.GetBalanceRequest(account_id="guarantor"), metadata=FINANCE
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("metadata", [AGENCY, ()])
async def test_non_finance_callers_are_denied(
    admin: Admin, metadata: tuple[tuple[str, str], ...]
) -> None:
    await top_up(admin, "bank", 50_000, "TX-1")
    calls: list[Awaitable[Any]] = [
        admin.stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="bank"), metadata=metadata),
        admin.stub.TopUp(
            billing_pb2.TopUpRequest(account_id="bank", amount_fen=1, reference="TX-2"),
            metadata=metadata,
        ),
        admin.stub.Statement(
            billing_pb2.StatementRequest(
                account_id="bank", from_date="2026-11-01", to_date="2026-11-30"
            ),
            metadata=metadata,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(exc.value) == "PERMISSION_DENIED"
    balance = await admin.ledger.run(admin.ledger.store.account, "bank")
    assert balance is not None and balance.balance_fen == 50_000  # the denied top-up did nothing


async def test_statement_by_local_dates_with_pages(admin: Admin) -> None:
    # 2026-10-31 17:00 UTC is 1 November 01:00 in Shanghai: inside the period.
    admin.clock.now = datetime(2026, 10, 31, 17, 0, tzinfo=UTC)
    await top_up(admin, "bank", 10_000, "TX-1")
    store = admin.ledger.store
    await admin.ledger.run(
        store.reserve,
        ReserveSpec(
            request_id="q-1",
            account_id="bank",
            basis="paid",
            lines=(
                PricedLine("tax", "arrears", 300),
                PricedLine("court", "dishonest_debtors", 200),
            ),
            digest="d",
            at=datetime(2026, 11, 10, 3, 0, tzinfo=UTC),
        ),
    )
    await admin.ledger.run(
        store.settle,
        "q-1",
        frozenset({("tax", "arrears")}),
        datetime(2026, 11, 10, 3, 0, tzinfo=UTC),
    )
    admin.clock.now = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 1 December in Shanghai
    await top_up(admin, "bank", 5, "TX-2")

    entries: list[billing_pb2.LedgerEntry] = []
    token = ""
    pages = 0
    while True:
        page = await admin.stub.Statement(
            billing_pb2.StatementRequest(
                account_id="bank",
                from_date="2026-11-01",
                to_date="2026-11-30",
                page_size=2,
                page_token=token,
            ),
            metadata=FINANCE,
        )
        pages += 1
        assert page.opening_balance_fen == 0 and page.closing_balance_fen == 9_700
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert [(e.kind, e.amount_fen) for e in entries] == [
        (billing_pb2.ENTRY_KIND_TOP_UP, 10_000),
        (billing_pb2.ENTRY_KIND_RESERVE, 300),
        (billing_pb2.ENTRY_KIND_RESERVE, 200),
        (billing_pb2.ENTRY_KIND_CHARGE, 300),
        (billing_pb2.ENTRY_KIND_RELEASE, 200),
    ]
    assert entries[3].request_id == "q-1" and entries[3].balance_fen == 9_700


@pytest.mark.parametrize(
    ("from_date", "to_date", "field"),
    [
        ("2026-11-1", "2026-11-30", "from_date"),
        ("2026-11-01", "2026-02-30", "to_date"),
        ("2026-11-30", "2026-11-01", "to_date"),
    ],
)
async def test_statement_bad_dates(admin: Admin, from_date: str, to_date: str, field: str) -> None:
    await top_up(admin, "bank", 1, "TX-1")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await admin.stub.Statement(
            billing_pb2.StatementRequest(account_id="bank", from_date=from_date, to_date=to_date),
            metadata=FINANCE,
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (exc.value.details() or "")
