"""Serving the public page: uvicorn on a socket of our own, inside the caller's event loop.

    server = await PortalServer.start(config)   # binds, connects, serves
    print(server.url)                           # http://127.0.0.1:8080/
    await server.stop()

``credit-gateway portal`` runs one until SIGINT or SIGTERM; ``credit-gateway demo --serve``
runs one beside the federation. Uvicorn is told to install no signal handlers (the process
that embeds it owns them), to write no access log (its lines hold client addresses and
paths with codes; :mod:`gateway.portal.app` logs its own), to send no ``Server`` header,
and to believe ``X-Forwarded-For`` only from ``trusted_proxies``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from gateway.domain.catalog import Catalog, load_catalog
from gateway.domain.files import read_file
from gateway.errors import ConfigError
from gateway.portal.app import create_app
from gateway.portal.config import PortalConfig, parse_listen
from gateway.portal.limiter import ClientLimiter
from gateway.portal.sources import GatewayConnection, TokenFile

__all__ = ["PortalServer"]


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves signals to the process embedding it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing: the embedding process handles SIGINT and SIGTERM."""
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "portal.listen", f"cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    return sock


@dataclass
class PortalServer:
    """A running page: its URL, the uvicorn server and the connection to the gateway."""

    url: str
    _server: uvicorn.Server
    _task: asyncio.Task[None]
    _connection: GatewayConnection

    @classmethod
    async def start(cls, config: PortalConfig, *, catalog: Catalog | None = None) -> PortalServer:
        """Bind ``config.listen``, connect to the gateway, and serve until :meth:`stop`.

        Raises:
            ConfigError: a connection setting missing, a certificate, key or token file
                unreadable, or the address cannot be bound.
        """
        config.require_connection()
        assert config.ca and config.cert and config.key and config.token_file  # checked above
        tokens = TokenFile(config.token_file)
        tokens.token()  # a missing token file stops start-up, not the first visitor
        connection = GatewayConnection(
            config.gateway,
            ca=read_file(config.ca, "portal.ca"),
            cert=read_file(config.cert, "portal.cert"),
            key=read_file(config.key, "portal.key"),
            token_file=tokens,
            timeout_s=config.timeout_s,
        )
        app = create_app(
            source=connection,
            reports=connection.reports(),
            catalog=catalog or load_catalog(),
            limiter=ClientLimiter(
                rate_per_s=config.rate_per_minute / 60,
                burst=config.burst,
                max_clients=config.max_clients,
            ),
        )
        host, port = parse_listen(config.listen)
        try:
            sock = _bind(host, port)
        except ConfigError:
            await connection.close()
            raise
        server = _Embedded(
            uvicorn.Config(
                app,
                log_config=None,
                log_level="warning",  # its start and stop lines say nothing ours do not
                access_log=False,
                server_header=False,
                proxy_headers=bool(config.trusted_proxies),
                forwarded_allow_ips=list(config.trusted_proxies) or None,
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        # uvicorn offers no event for "started": its own tests poll the flag too.
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if task.done():
            sock.close()
            await connection.close()
            task.result()  # raises what stopped it
            raise ConfigError("portal.listen", "the page stopped before it served")
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        return cls(f"http://{shown}:{bound[1]}/", server, task, connection)

    async def stop(self) -> None:
        """Stop serving (open requests get 5 s) and close the gateway connection."""
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._connection.close()
