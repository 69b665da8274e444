"""The ceiling for a seven-department query: a bare grpc.aio proxy that, for each call,
sends every department its prepared ``Lookup`` request (the same datasets and fields
the gateway asks for the bench's query, serialised once by the bench) concurrently on
one reused channel each, and answers with the departments' response bytes joined,
parsing nothing. Prints ``listening on HOST:PORT``.

    python -m bench._fanout_proxy --requests DIR [--pki DIR]

DIR holds ``<dept>.addr`` (HOST:PORT) and ``<dept>.bin`` (a serialised LookupRequest).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc

from gateway.dev.pki import load_pki

METHOD = "/credit.v1.DepartmentAdapter/Lookup"


async def _main(listen: str, requests: Path, pki_dir: str | None) -> None:
    creds = None
    if pki_dir:
        pki = load_pki(Path(pki_dir))
        creds = grpc.ssl_channel_credentials(
            pki.ca_cert.read_bytes(),
            pki.gateway_client_key.read_bytes(),
            pki.gateway_client_cert.read_bytes(),
        )
    calls: list[tuple[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes], bytes]] = []
    for addr_file in sorted(requests.glob("*.addr")):  # noqa: ASYNC240 - at start-up only
        address = addr_file.read_text().strip()
        channel = (
            grpc.aio.secure_channel(address, creds)
            if creds is not None
            else grpc.aio.insecure_channel(address)
        )
        payload = addr_file.with_suffix(".bin").read_bytes()
        calls.append((channel.unary_unary(METHOD), payload))

    async def relay(request: bytes, context: Any) -> bytes:
        timeout = context.time_remaining()
        answers = await asyncio.gather(*(call(p, timeout=timeout) for call, p in calls))
        return b"".join(answers)

    handler = grpc.method_handlers_generic_handler(
        "credit.v1.QueryService", {"Query": grpc.unary_unary_rpc_method_handler(relay)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    if pki_dir:
        server_creds = grpc.ssl_server_credentials(
            [(pki.gateway_server_key.read_bytes(), pki.gateway_server_cert.read_bytes())],
            root_certificates=pki.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port(listen, server_creds)
    else:
        port = server.add_insecure_port(listen)
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--requests", type=Path, required=True)
    p.add_argument("--pki", help="mutual TLS on both hops with this development PKI")
    args = p.parse_args()
    asyncio.run(_main(args.listen, args.requests, args.pki))
