"""The gRPC edge over a real grpc.aio server on loopback: undecodable bytes, the
mapping of every failure, and refusals on the (fake, in-memory) audit record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.api.edge import REFUSAL_KIND, Edge, authenticate, identified
from gateway.errors import (
    AuditUnavailableError,
    AuthenticationError,
    NotFoundError,
    NotYetIntegratedError,
    PermissionDeniedError,
    abort,
)
from protos.credit.v1 import audit_pb2

SERVICE = "credit.v1.AuditService"
SECRET = "/srv/credit-gateway/audit.sqlite"


class Sink:
    """An EventSink that keeps records in memory (or fails, like a broken log)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.failing = False

    async def append_event(self, kind: str, fields: Mapping[str, Any]) -> object:
        if self.failing:
            raise AuditUnavailableError(f"{SECRET}: disk I/O error")
        self.records.append((kind, dict(fields)))
        return None


async def _checkpoint(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    raise ValueError(f"cannot read {SECRET}")  # a bug, in the servicer


async def _inclusion(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    identified("auditor")
    if request.index == 1:
        raise NotYetIntegratedError(1, 0.5)
    if request.index == 2:
        await abort(context, NotFoundError("answered by the servicer itself"))
    if request.index == 3:
        err = PermissionDeniedError("already on the record")
        err.audited = True
        raise err
    raise PermissionDeniedError(f"not yours: {request.index}")


async def _consistency(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    return audit_pb2.ConsistencyProof(old_size=request.old_size, new_size=request.new_size)


def _handler(fn: Any, request: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Sink]]:
    sink = Sink()
    server = grpc.aio.server(interceptors=[Edge(audit=sink)], options=[("grpc.so_reuseport", 0)])
    handlers = {
        "GetCheckpoint": _handler(
            _checkpoint, audit_pb2.GetCheckpointRequest, audit_pb2.Checkpoint
        ),
        "GetInclusionProof": _handler(
            _inclusion, audit_pb2.GetInclusionProofRequest, audit_pb2.InclusionProof
        ),
        "GetConsistencyProof": _handler(
            _consistency, audit_pb2.GetConsistencyProofRequest, audit_pb2.ConsistencyProof
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, sink
    finally:
        await channel.close()
        await server.stop(None)


async def _call(channel: grpc.aio.Channel, method: str, body: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await channel.unary_unary(f"/{SERVICE}/{method}")(body, timeout=10)
    return exc.value


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    return str(info.reason)


async def test_undecodable_bytes_are_invalid_argument_and_recorded(
    served: tuple[grpc.aio.Channel, Sink],
) -> None:
    channel, sink = served
    err = await _call(channel, "GetConsistencyProof", b"\xff\xff\xff")
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "request: not a valid credit.v1.GetConsistencyProofRequest message"
    assert _reason(err) == "MALFORMED_REQUEST"
    ((kind, record),) = sink.records
    assert kind == REFUSAL_KIND
    assert record == {
        "service": SERVICE,
        "method": "GetConsistencyProof",
        "outcome": "malformed_request",
        "status": "INVALID_ARGUMENT",
        "principal": "",
        "cert_thumbprint": "",
        "error_field": "request",
    }


async def test_a_bug_is_internal_without_its_text(served: tuple[grpc.aio.Channel, Sink]) -> None:
    channel, sink = served
    err = await _call(channel, "GetCheckpoint", b"")
    assert err.code() is grpc.StatusCode.INTERNAL and err.details() == "internal error"
    assert SECRET not in str(err.debug_error_string())
    assert [r["outcome"] for _, r in sink.records] == ["internal"]


async def test_a_refusal_names_the_principal_never_the_message(
    served: tuple[grpc.aio.Channel, Sink],
) -> None:
    channel, sink = served
    body = audit_pb2.GetInclusionProofRequest(index=77).SerializeToString()
    err = await _call(channel, "GetInclusionProof", body)
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    ((_, record),) = sink.records
    assert record["principal"] == "auditor" and record["outcome"] == "permission_denied"
    assert "77" not in repr(record)


@pytest.mark.parametrize(
    ("index", "code"),
    [
        (1, grpc.StatusCode.UNAVAILABLE),  # a retry hint, not a refusal
        (2, grpc.StatusCode.NOT_FOUND),  # the servicer answered (and recorded) itself
        (3, grpc.StatusCode.PERMISSION_DENIED),  # already on the record
    ],
)
async def test_what_is_not_recorded_twice_or_at_all(
    served: tuple[grpc.aio.Channel, Sink], index: int, code: grpc.StatusCode
) -> None:
    channel, sink = served
    body = audit_pb2.GetInclusionProofRequest(index=index).SerializeToString()
    err = await _call(channel, "GetInclusionProof", body)
    assert err.code() is code
    assert sink.records == []


async def test_a_broken_log_still_answers_the_refusal(
    served: tuple[grpc.aio.Channel, Sink],
) -> None:
    channel, sink = served
    sink.failing = True
    body = audit_pb2.GetInclusionProofRequest(index=9).SerializeToString()
    err = await _call(channel, "GetInclusionProof", body)
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_success_passes_through(served: tuple[grpc.aio.Channel, Sink]) -> None:
    channel, sink = served
    body = audit_pb2.GetConsistencyProofRequest(old_size=2, new_size=5).SerializeToString()
    raw = await channel.unary_unary(f"/{SERVICE}/GetConsistencyProof")(body, timeout=10)
    assert audit_pb2.ConsistencyProof.FromString(raw).new_size == 5
    assert sink.records == []


def test_authenticate_turns_any_failure_into_unauthenticated() -> None:
    def overflowing(context: object) -> str:
        return str(int(float("1e999")))  # what a token with "exp": 1e999 did

    with pytest.raises(AuthenticationError) as exc:
        authenticate(overflowing, object())
    assert exc.value.reason == "TOKEN_MALFORMED" and exc.value.message == "token is malformed"


def test_authenticate_lets_gateway_errors_through() -> None:
    def refuse(context: object) -> str:
        raise PermissionDeniedError("not finance", reason="ROLE_NOT_ALLOWED")

    with pytest.raises(PermissionDeniedError):
        authenticate(refuse, object())
