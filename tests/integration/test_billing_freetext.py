"""Finance staff's free text (a top-up reference or note, an account id) never
puts an identifier in the ledger, the audit events or an error detail: over real
gRPC on loopback, a property test hides valid identifiers every way a caller
might."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings

from gateway.api.billing import BillingAdminService
from gateway.api.edge import Edge
from gateway.billing.ledger import AsyncLedger
from gateway.errors import PermissionDeniedError
from protos.credit.v1 import billing_pb2, billing_pb2_grpc
from tests.unit.privacy_kit import hidden, leaks

FINANCE = (("x-test-role", "finance"), ("x-test-principal", "finance-1"))


def authorize(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Stands in for gateway.auth with Role.FINANCE: a header names the role."""
    md = dict(context.invocation_metadata() or ())
    if md.get("x-test-role") != "finance":
        raise PermissionDeniedError("billing administration is for finance staff")
    return str(md.get("x-test-principal", "finance"))


class Billing:
    """A real BillingAdminService on a real ledger, served over loopback gRPC and
    driven from synchronous hypothesis examples on one event loop."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.events: list[dict[str, Any]] = []
        self.path = path
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.ledger = await AsyncLedger.open(self.path)

        async def on_event(event: dict[str, Any]) -> None:
            self.events.append(event)

        # Behind the one gRPC edge, as in the gateway: servicers raise, it maps.
        self.server = grpc.aio.server(interceptors=[Edge()], options=[("grpc.so_reuseport", 0)])
        billing_pb2_grpc.add_BillingAdminServicer_to_server(
            BillingAdminService(
                self.ledger,
                authorize=authorize,
                timezone=ZoneInfo("Asia/Shanghai"),
                account_exists={"bank"}.__contains__,
                on_event=on_event,
                clock=lambda: datetime(2026, 11, 5, 2, 0, tzinfo=UTC),
            ),
            self.server,
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = billing_pb2_grpc.BillingAdminStub(self.channel)

    def refused(self, method: Callable[..., Any], message: Any) -> grpc.aio.AioRpcError:
        """The error calling ``method`` with ``message`` as finance staff ends with;
        the call is made on this harness's loop."""

        async def run() -> grpc.aio.AioRpcError:
            try:
                await method(message, metadata=FINANCE)
            except grpc.aio.AioRpcError as err:
                return err
            raise AssertionError("accepted")

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        async def stop() -> None:
            await self.channel.close()
            await self.server.stop(None)
            await self.ledger.close()

        self.loop.run_until_complete(stop())
        self.loop.close()


@pytest.fixture
def billing(tmp_path: Path) -> Iterator[Billing]:
    b = Billing(tmp_path / "ledger.db")
    yield b
    b.close()


def _field(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    return bad.field_violations[0].field


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(secret=hidden())
def test_no_identifier_in_finance_free_text_is_booked_echoed_or_recorded(
    billing: Billing, secret: tuple[str, str]
) -> None:
    identifier, text = secret
    for field in ("reference", "note"):
        request = billing_pb2.TopUpRequest(account_id="bank", amount_fen=100, reference="t-1")
        setattr(request, field, text)
        err = billing.refused(billing.stub.TopUp, request)
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and _field(err) == field
        status = rpc_status.from_call(err)
        assert not leaks(identifier, json.dumps(str(status)))
    unknown = (
        (billing.stub.GetBalance, billing_pb2.GetBalanceRequest(account_id=text)),
        (
            billing.stub.TopUp,
            billing_pb2.TopUpRequest(account_id=text, amount_fen=100, reference="t-2"),
        ),
    )
    for method, message in unknown:
        err = billing.refused(method, message)
        assert err.code() is grpc.StatusCode.NOT_FOUND
        assert not leaks(identifier, json.dumps(str(rpc_status.from_call(err))))
    # Nothing was booked, so nothing went to the audit log either.
    assert billing.events == []
    assert billing.path.exists() and identifier.encode() not in billing.path.read_bytes()
