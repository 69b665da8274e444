"""A small client for the query service, used by ``credit-query``, the demo,
the tests and the benchmarks.

    async with QueryClient.connect(
        "127.0.0.1:8443", ca=ca_pem, cert=cert_pem, key=key_pem, token=jwt
    ) as client:
        response = await client.query(
            enterprise="91350200MA2YJ1XR9G", purpose="lending", mode="paid"
        )
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType

import grpc

from protos.credit.v1 import common_pb2, query_pb2, query_pb2_grpc

__all__ = ["QueryClient", "build_request"]

_MODES = {"free": query_pb2.QUERY_MODE_FREE, "paid": query_pb2.QUERY_MODE_PAID}


def build_request(
    *,
    enterprise: str | None = None,
    person: str | None = None,
    purpose: str,
    mode: str = "free",
    datasets: Sequence[str] = (),
    consent_token: str = "",
    case_reference: str = "",
    officer_id: str = "",
    represented_party: str = "",
    request_id: str | None = None,
) -> query_pb2.QueryRequest:
    """A ``QueryRequest``; ``datasets`` as ``"department/dataset"`` strings."""
    if (enterprise is None) == (person is None):
        raise ValueError("name exactly one of enterprise or person")
    req = query_pb2.QueryRequest(
        request_id=request_id or str(uuid.uuid4()),
        purpose=purpose,
        mode=_MODES[mode],
        consent_token=consent_token,
        case_reference=case_reference,
        officer_id=officer_id,
        represented_party=represented_party,
    )
    if enterprise is not None:
        req.subject.type, req.subject.id = common_pb2.SUBJECT_TYPE_ENTERPRISE, enterprise
    else:
        req.subject.type, req.subject.id = common_pb2.SUBJECT_TYPE_PERSON, person or ""
    for ref in datasets:
        dept, _, ds = ref.partition("/")
        req.datasets.add(department=dept, dataset=ds)
    return req


class QueryClient:
    """An agency's client of ``QueryService`` over one channel, sending the same metadata on every
    call.
    """

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self._channel = channel
        self._metadata = metadata
        self.stub = query_pb2_grpc.QueryServiceStub(channel)

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        ca: bytes | None = None,
        cert: bytes | None = None,
        key: bytes | None = None,
        token: str | None = None,
        dev_agency: str | None = None,
    ) -> QueryClient:
        """Mutual TLS when ``ca`` is given; plaintext with a development
        identity header otherwise (only a gateway started with
        ``insecure_dev_plaintext`` accepts that)."""
        if token and ca is None:
            raise ValueError("a bearer token is only sent over TLS: give ca, cert and key")
        metadata: list[tuple[str, str]] = []
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        if dev_agency:
            metadata.append(("x-dev-agency-id", dev_agency))
        if ca is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
            channel = grpc.aio.secure_channel(address, creds)
        else:
            channel = grpc.aio.insecure_channel(address)
        return cls(channel, tuple(metadata))

    async def query(self, *, timeout: float = 10.0, **kwargs: object) -> query_pb2.QueryResponse:
        """Build and send a query (see :func:`build_request`). Raises ``grpc.aio.AioRpcError``."""
        return await self.send(build_request(**kwargs), timeout=timeout)  # type: ignore[arg-type]

    async def send(
        self, request: query_pb2.QueryRequest, *, timeout: float = 10.0
    ) -> query_pb2.QueryResponse:
        """Send one ``QueryRequest`` (``timeout`` in seconds) and return the response."""
        response: query_pb2.QueryResponse = await self.stub.Query(
            request, timeout=timeout, metadata=self._metadata
        )
        return response

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> QueryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
