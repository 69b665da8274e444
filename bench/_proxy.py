"""The ceiling: a bare grpc.aio pass-through proxy. It relays request bytes
to the department's ``Lookup`` and response bytes back, parsing nothing, on
one reused channel; with ``--pki`` both hops use mutual TLS, as the gateway's
do. With ``--reuseport`` several proxies share one fixed ``--listen`` port
(``SO_REUSEPORT``: the kernel spreads connections over them, as over the workers of
``credit-gateway serve --workers N``). Prints ``listening on HOST:PORT``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc

from gateway.dev.pki import load_pki

METHOD = "/credit.v1.DepartmentAdapter/Lookup"


async def _main(listen: str, upstream: str, pki_dir: str | None, reuseport: bool) -> None:
    if pki_dir:
        pki = load_pki(Path(pki_dir))
        channel = grpc.aio.secure_channel(
            upstream,
            grpc.ssl_channel_credentials(
                pki.ca_cert.read_bytes(),
                pki.gateway_client_key.read_bytes(),
                pki.gateway_client_cert.read_bytes(),
            ),
        )
    else:
        channel = grpc.aio.insecure_channel(upstream)
    forward = channel.unary_unary(METHOD)  # no serializers: bytes in, bytes out

    async def relay(request: bytes, context: Any) -> bytes:
        response: bytes = await forward(request, timeout=context.time_remaining())
        return response

    handler = grpc.method_handlers_generic_handler(
        "credit.v1.DepartmentAdapter", {"Lookup": grpc.unary_unary_rpc_method_handler(relay)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuseport))])
    server.add_generic_rpc_handlers((handler,))
    if pki_dir:
        creds = grpc.ssl_server_credentials(
            [(pki.gateway_server_key.read_bytes(), pki.gateway_server_cert.read_bytes())],
            root_certificates=pki.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port(listen, creds)
    else:
        port = server.add_insecure_port(listen)
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True)
    p.add_argument("--pki", help="mutual TLS on both hops with this development PKI")
    p.add_argument(
        "--reuseport", action="store_true", help="share a fixed --listen port (SO_REUSEPORT)"
    )
    args = p.parse_args()
    asyncio.run(_main(args.listen, args.upstream, args.pki, args.reuseport))
