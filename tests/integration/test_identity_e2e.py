"""Agency identity against the real gateway and real departments (the token
and certificate checks themselves are covered in test_mtls_auth.py)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.cli.connect import QueryClient
from gateway.dev.devstack import DevStack
from protos.credit.v1 import adapter_pb2, adapter_pb2_grpc
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _client(stack: DevStack, cert_of: str, token_of: str | None) -> QueryClient:
    return QueryClient.connect(
        stack.gateway.address,
        ca=stack.pki.ca_cert.read_bytes(),
        cert=stack.pki.agency_cert(cert_of).read_bytes(),
        key=stack.pki.agency_key(cert_of).read_bytes(),
        token=stack.tokens[token_of].read_text().strip() if token_of else None,
    )


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo")


async def _query(stack: DevStack, client: QueryClient) -> None:
    async with client:
        await client.query(
            enterprise=subject(stack, "enterprise_clean"), purpose="supervision_inspection"
        )


@pytest.mark.parametrize(
    ("cert_of", "token_of", "code", "reason"),
    [
        ("bank", "procurement", grpc.StatusCode.UNAUTHENTICATED, "TOKEN_CERT_MISMATCH"),
        ("bank", None, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
        (
            "suspended_agency",
            "suspended_agency",
            grpc.StatusCode.PERMISSION_DENIED,
            "AGENCY_SUSPENDED",
        ),
    ],
)
async def test_refused_callers(
    stack: DevStack, cert_of: str, token_of: str | None, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _query(stack, _client(stack, cert_of, token_of))
    assert exc.value.code() is code
    assert _reason(exc.value) == reason
    if token_of:  # the token never comes back in an error
        assert stack.tokens[token_of].read_text().strip() not in (exc.value.details() or "")


async def test_department_refuses_anyone_but_the_gateway(stack: DevStack) -> None:
    """An agency holding a valid certificate from the same CA cannot go around the gateway."""
    dept = stack.departments["tax"]
    creds = grpc.ssl_channel_credentials(
        stack.pki.ca_cert.read_bytes(),
        stack.pki.agency_key("bank").read_bytes(),
        stack.pki.agency_cert("bank").read_bytes(),
    )
    async with grpc.aio.secure_channel(dept.address, creds) as channel:
        stub = adapter_pb2_grpc.DepartmentAdapterStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Describe(adapter_pb2.DescribeRequest(), timeout=10)
    assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_no_client_certificate_is_refused_at_the_handshake(stack: DevStack) -> None:
    creds = grpc.ssl_channel_credentials(stack.pki.ca_cert.read_bytes())
    async with grpc.aio.secure_channel(stack.gateway.address, creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
    assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
