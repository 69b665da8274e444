"""Build a :class:`~gateway.server.Gateway` with all its parts from a config."""

from __future__ import annotations

from gateway.config import Config
from gateway.server import Gateway

__all__ = ["build_gateway"]


async def build_gateway(config: Config) -> Gateway:
    """The production wiring: authenticator, decider and audit log from the
    configuration's sections. Raises :class:`~gateway.errors.ConfigError`."""
    return Gateway(config)
