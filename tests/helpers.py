"""What many tests share: a settable clock, a fake servicer context, a PKI bootstrap.

Tests import these (``from tests.helpers import Clock``) instead of writing their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import pytest

from gateway.dev.pki import Pki, init_pki
from gateway.errors import GatewayError, abort

_T = TypeVar("_T", float, datetime)


class Clock(Generic[_T]):
    """A settable clock: ``clock()`` is ``clock.now``, seconds (float) or an aware datetime.

    >>> clock = Clock(100.0); clock.advance(seconds=5); clock()
    105.0
    """

    def __init__(self, now: _T) -> None:
        self.now: _T = now

    def __call__(self) -> _T:
        return self.now

    def advance(self, **step: float) -> None:
        """Move the clock forward by ``timedelta(**step)``."""
        delta = timedelta(**step)
        if isinstance(self.now, datetime):
            self.now = self.now + delta
        else:
            self.now = self.now + delta.total_seconds()


@dataclass
class FakeContext:
    """What the authenticators read of a ``grpc.aio.ServicerContext``: the peer's
    certificate (PEM, or None for a call without one) and the call's metadata."""

    cert_pem: bytes | None
    metadata: list[tuple[str, str | bytes]] = field(default_factory=list)

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {"x509_pem_cert": [self.cert_pem]} if self.cert_pem else {}

    def invocation_metadata(self) -> Iterable[tuple[str, str | bytes]] | None:
        return tuple(self.metadata)


def make_pki(
    where: pytest.TempPathFactory | Path,
    *,
    departments: Sequence[str] = (),
    agencies: Sequence[str] = (),
    officers: Sequence[str] = (),
    auditors: Sequence[str] = (),
    name: str = "pki",
    **kw: Any,
) -> Pki:
    """A fresh development PKI in a new temporary folder (from a ``tmp_path_factory``, for
    module-scoped fixtures) or in ``where / "pki"`` (a ``tmp_path``)."""
    root = where.mktemp(name) if isinstance(where, pytest.TempPathFactory) else where
    return init_pki(
        root / "pki",
        departments=list(departments),
        agencies=list(agencies),
        officers=list(officers),
        auditors=list(auditors),
        **kw,
    )


@contextlib.asynccontextmanager
async def who_am_i_server(pki: Pki, authenticator: Any) -> AsyncIterator[int]:
    """A real grpc.aio server on 127.0.0.1 behind the gateway's mutual TLS whose one
    method, ``/test.Auth/WhoAmI``, answers the agency id ``authenticator`` finds
    (any :class:`gateway.auth.Authenticator`), or aborts with its GatewayError.
    Yields the port."""

    async def who_am_i(request: bytes, context: grpc.aio.ServicerContext[object, object]) -> bytes:
        try:
            identity = authenticator.authenticate(context)
        except GatewayError as err:
            await abort(context, err)
        return str(identity.agency_id).encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Auth",
        {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(
                who_am_i, request_deserializer=bytes, response_serializer=bytes
            )
        },
    )
    srv = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    srv.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [(pki.gateway_server_key.read_bytes(), pki.gateway_server_cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = srv.add_secure_port("127.0.0.1:0", creds)
    await srv.start()
    try:
        yield port
    finally:
        await srv.stop(None)
