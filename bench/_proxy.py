"""The ceiling: a bare grpc.aio pass-through proxy. It relays request bytes
to the department's ``Lookup`` and response bytes back, parsing nothing, on
one reused channel. Prints ``listening on HOST:PORT``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

METHOD = "/credit.v1.DepartmentAdapter/Lookup"


async def _main(listen: str, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    forward = channel.unary_unary(METHOD)  # no serializers: bytes in, bytes out

    async def relay(request: bytes, context: Any) -> bytes:
        response: bytes = await forward(request, timeout=context.time_remaining())
        return response

    handler = grpc.method_handlers_generic_handler(
        "credit.v1.DepartmentAdapter", {"Lookup": grpc.unary_unary_rpc_method_handler(relay)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True)
    args = p.parse_args()
    asyncio.run(_main(args.listen, args.upstream))
