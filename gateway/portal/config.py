"""The public page's settings, from a TOML file, ``demo.json`` and command-line flags.

A file (``credit-gateway portal --config portal.toml``)::

    [portal]
    listen = "127.0.0.1:8080"           # where the page is served (plain HTTP: put a
                                        # TLS-terminating reverse proxy in front)
    gateway = "gateway.example:8443"    # the gateway, over mutual TLS
    ca = "pki/ca.pem"                   # the CA the gateway's certificate chains to
    cert = "pki/agencies/portal.pem"    # the portal agency's client certificate
    key = "pki/agencies/portal.key"
    token_file = "tokens/portal.jwt"    # re-read whenever it changes
    rate_per_minute = 10                # lookups per client address, sustained
    burst = 10                          # ... and at once
    trusted_proxies = ["127.0.0.1"]     # whose X-Forwarded-For is believed (default: none)
    timeout_s = 10                      # deadline of each call to the gateway

Relative paths are resolved against the file's folder. Every problem raises
:class:`~gateway.errors.ConfigError` naming the key (``portal.burst: must be an integer
of at least 1``). :func:`merge` lays the values of ``demo.json`` and of flags over it (a
flag given always wins).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gateway.domain.files import load_toml
from gateway.errors import ConfigError

__all__ = ["PortalConfig", "load_portal_config", "merge", "parse_listen", "parse_portal_config"]

_PATHS = ("ca", "cert", "key", "token_file")
_MISSING = "missing (give it in the file, by flag or --demo)"


@dataclass(frozen=True, slots=True)
class PortalConfig:
    """Everything ``credit-gateway portal`` needs (see the module docstring)."""

    listen: str = "127.0.0.1:8080"
    gateway: str = ""
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token_file: Path | None = None
    #: Lookups (and report downloads) per client address per minute, sustained.
    rate_per_minute: float = 10.0
    #: Lookups a client may make at once before the rate applies.
    burst: int = 10
    #: Addresses of reverse proxies whose ``X-Forwarded-For`` is believed.
    trusted_proxies: tuple[str, ...] = ()
    #: Deadline of each call to the gateway, in seconds.
    timeout_s: float = 10.0
    #: The most client addresses whose buckets are kept (least recently seen dropped).
    max_clients: int = 100_000

    def require_connection(self) -> None:
        """Raises :class:`ConfigError` naming the first of ``gateway``, ``ca``, ``cert``,
        ``key``, ``token_file`` that is missing: the page never talks to the gateway in
        plaintext or without its own certificate and token."""
        for name in ("gateway", *_PATHS):
            if not getattr(self, name):
                raise ConfigError(f"portal.{name}", _MISSING)


def parse_listen(value: str, key: str = "portal.listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); port 0 picks a free one.

    Raises:
        ConfigError: not of that shape, or the port is out of range.
    """
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(key, "must be HOST:PORT with a port of 0 to 65535")
    return host, int(port)


def _number(raw: Any, key: str, *, integer: bool) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(key, "must be a number")
    if integer and not isinstance(raw, int):
        raise ConfigError(key, "must be an integer of at least 1")
    if not math.isfinite(raw) or raw <= 0 or (integer and raw < 1):
        raise ConfigError(
            key, "must be positive" if not integer else "must be an integer of at least 1"
        )
    return float(raw) if not integer else raw


def parse_portal_config(doc: Mapping[str, Any], *, base: Path | None = None) -> PortalConfig:
    """A :class:`PortalConfig` from a parsed document's ``[portal]`` table (paths relative
    to ``base``). Raises :class:`ConfigError` naming the key for an unknown key, a wrong
    type or a value out of range."""
    extra = sorted(set(doc) - {"portal"})
    if extra:
        raise ConfigError(extra[0], "unknown table (only [portal])")
    table = doc.get("portal", {})
    if not isinstance(table, dict):
        raise ConfigError("portal", "must be a table")
    known = {f.name for f in fields(PortalConfig)}
    for name in table:
        if name not in known:
            raise ConfigError(f"portal.{name}", "unknown key")
    values: dict[str, Any] = {}
    for name, raw in table.items():
        key = f"portal.{name}"
        if name in ("listen", "gateway", *_PATHS):
            if not isinstance(raw, str) or not raw:
                raise ConfigError(key, "must be a non-empty string")
            values[name] = (base / raw if base else Path(raw)) if name in _PATHS else raw
        elif name == "trusted_proxies":
            if not isinstance(raw, list) or not all(isinstance(a, str) and a for a in raw):
                raise ConfigError(key, "must be a list of addresses")
            values[name] = tuple(raw)
        else:
            values[name] = _number(raw, key, integer=name in ("burst", "max_clients"))
    if "listen" in values:
        parse_listen(values["listen"])
    return PortalConfig(**values)


def load_portal_config(path: Path) -> PortalConfig:
    """:func:`parse_portal_config` of the TOML file ``path``. Raises ConfigError."""
    return parse_portal_config(load_toml(path), base=path.parent)


def merge(config: PortalConfig, **values: Any) -> PortalConfig:
    """``config`` with every value in ``values`` that is not None laid over it.

    Raises:
        ConfigError: (key ``--flag``) a listen address, rate, burst or timeout out of range.
    """
    given = {k: v for k, v in values.items() if v is not None}
    if "listen" in given:
        parse_listen(given["listen"], "--listen")
    for name in ("rate_per_minute", "timeout_s"):
        if name in given:
            _number(given[name], f"--{name.replace('_', '-')}", integer=False)
    if "burst" in given:
        _number(given["burst"], "--burst", integer=True)
    return replace(config, **given)
