"""A storage failure behind any servicer reaches the client as a clean status.

Each store the gateway writes through (the audit log's, the billing ledger's, the policy
versions') is swapped in turn, in a running federation, for one that implements the real
interface and fails every call with an error naming a server path. Then every RPC of every
service is called by its allowed principal with a plausible request. Whatever the answer,
it goes through the one interceptor (gateway.api.edge.Edge): never UNKNOWN, and no server
path, exception name or traceback in the status.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import json_format, message_factory
from grpc_status import rpc_status

from gateway.audit.store import AuditStore
from gateway.billing.ledger import LedgerStore
from gateway.dev.devstack import DevStack
from gateway.domain.files import policies_path
from gateway.policyadmin.store import VersionStore
from protos.credit.v1 import audit_pb2, billing_pb2, policy_admin_pb2, query_pb2
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "/srv/credit-gateway/secret-store.sqlite"
SERVICES = [
    query_pb2.DESCRIPTOR.services_by_name["QueryService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    billing_pb2.DESCRIPTOR.services_by_name["BillingAdmin"],
    policy_admin_pb2.DESCRIPTOR.services_by_name["PolicyAdmin"],
]
METHODS = [(s, m) for s in SERVICES for m in s.methods]
ALLOWED = {
    "credit.v1.QueryService": ("agencies", "bank"),
    "credit.v1.AuditService": ("auditors", "auditor"),
    "credit.v1.BillingAdmin": ("finance", "finance"),
    "credit.v1.PolicyAdmin": ("officers", "officer_a"),
}
_EXCEPTION_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b")
_T = TypeVar("_T")


def failing(interface: type[_T]) -> _T:
    """An instance of ``interface`` (an ABC) whose every abstract member raises the
    error a broken SQLite file raises, naming the file."""

    def broken(*_args: object, **_kwargs: object) -> Any:
        raise sqlite3.OperationalError(f"disk I/O error: {SECRET}")

    namespace: dict[str, Any] = {}
    for name in getattr(interface, "__abstractmethods__", ()):
        original = getattr(interface, name)
        namespace[name] = property(broken) if isinstance(original, property) else broken
    return type(f"Failing{interface.__name__}", (interface,), namespace)()  # type: ignore[no-any-return]


def _bodies(stack: DevStack) -> dict[str, dict[str, Any]]:
    """A plausible request per method: one that reaches storage when storage works."""
    size = stack.gateway._audit.log.size  # type: ignore[union-attr]
    policy = policies_path("policy.csv").read_text(encoding="utf-8")
    return {
        "Query": {
            "request_id": str(uuid.uuid4()),
            "subject": {"type": 1, "id": subject(stack, "enterprise_clean")},
            "purpose": "lending",
            "mode": query_pb2.QUERY_MODE_PAID,
            "datasets": [{"department": "market", "dataset": "registration"}],
        },
        "GetCheckpoint": {},
        "GetInclusionProof": {"index": 0, "tree_size": max(size, 1)},
        "GetConsistencyProof": {"old_size": 1, "new_size": max(size, 1)},
        "GetBalance": {"account_id": "ndrc"},
        "TopUp": {"account_id": "ndrc", "amount_fen": 100, "reference": "storage-test"},
        "Statement": {"account_id": "ndrc", "from_date": "2026-01-01", "to_date": "2026-12-31"},
        "Draft": {"files": [{"name": "policy.csv", "content": policy}], "reason": "storage test"},
        "Validate": {"version": 1},
        "Test": {"version": 1},
        "Diff": {"version": 1, "base": 1},
        "Replay": {"version": 1, "last": 5},
        "Approve": {"version": 1, "reason": "storage test"},
        "Activate": {"version": 1, "reason": "storage test"},
        "Rollback": {"version": 1, "reason": "storage test"},
        "ListVersions": {},
        "GetVersion": {"version": 1},
    }


def _message(method: Any, fields: dict[str, Any]) -> bytes:
    cls = message_factory.GetMessageClass(method.input_type)
    return json_format.ParseDict(fields, cls()).SerializeToString()


def _swap_audit(stack: DevStack) -> Callable[[], None]:
    log = stack.gateway._audit.log  # type: ignore[union-attr]
    real = log._store
    log._store = failing(AuditStore)
    return lambda: setattr(log, "_store", real)


def _swap_ledger(stack: DevStack) -> Callable[[], None]:
    ledger = stack.gateway.meter.ledger  # type: ignore[union-attr]
    real = ledger.store
    ledger.store = failing(LedgerStore)
    return lambda: setattr(ledger, "store", real)


def _swap_policy(stack: DevStack) -> Callable[[], None]:
    admin = stack.gateway.policy_admin.admin  # type: ignore[union-attr]
    real = admin.store
    admin.store = failing(VersionStore)
    return lambda: setattr(admin, "store", real)


@pytest.fixture(scope="module")
def channels(stack: DevStack) -> Iterator[dict[str, tuple[grpc.aio.Channel, Any]]]:
    opened = {service: stack.channel(*who) for service, who in ALLOWED.items()}
    yield opened


async def test_the_failing_stores_implement_the_real_interfaces() -> None:
    for interface in (AuditStore, LedgerStore, VersionStore):
        store = failing(interface)
        assert isinstance(store, interface)
        assert interface.__abstractmethods__  # there was something to implement


# The audit store last: a log that lost its store stays unavailable for the module.
@pytest.mark.parametrize(
    ("swap", "broken"),
    [
        (_swap_ledger, {"Query", "GetBalance", "TopUp", "Statement"}),
        (_swap_policy, {m.name for m in SERVICES[3].methods}),
        (_swap_audit, {"Query", "GetInclusionProof"}),
    ],
)
async def test_every_rpc_answers_a_clean_status_when_storage_fails(
    stack: DevStack,
    channels: dict[str, tuple[grpc.aio.Channel, Any]],
    swap: Callable[[DevStack], Callable[[], None]],
    broken: set[str],
) -> None:
    bodies = _bodies(stack)
    restore = swap(stack)
    seen: dict[str, str] = {}
    try:
        for service, method in METHODS:
            channel, metadata = channels[service.full_name]
            body = _message(method, bodies[method.name])
            where = f"{service.full_name}/{method.name} ({swap.__name__})"
            try:
                await channel.unary_unary(f"/{service.full_name}/{method.name}")(
                    body, metadata=metadata, timeout=30
                )
            except grpc.aio.AioRpcError as err:
                code = err.code()
                assert code is not grpc.StatusCode.UNKNOWN, (where, err)
                status = rpc_status.from_call(err)  # type: ignore[arg-type]
                text = f"{err.details()} {status}"
                assert SECRET not in text and "/srv/" not in text, (where, text)
                assert "Traceback" not in text and ".py" not in text, (where, text)
                assert not _EXCEPTION_NAME.search(text), (where, text)
                seen[method.name] = code.name
            else:
                seen[method.name] = "OK"
    finally:
        restore()
    # The RPCs that need the broken store did meet the failure (and answered it cleanly).
    assert {name for name, code in seen.items() if code != "OK"} >= broken, seen
