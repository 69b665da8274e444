"""``credit-gateway portal``: serve the public enterprise lookup page.

    credit-gateway portal --config portal.toml
    credit-gateway portal --demo var/demo/demo.json --listen 127.0.0.1:8080

Settings come from ``--config`` (see :mod:`gateway.portal.config`), then ``--demo`` fills in
the gateway address and the portal agency's CA, certificate, key and token file where they
are not set, and a flag given always wins. It prints ``credit-gateway portal serving on URL``
once it serves and runs until SIGINT or SIGTERM. Exit status: 0 stopped; 2 usage or
configuration (one line naming the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from gateway.cli.connect import UsageError, demo_member, read_demo
from gateway.cli.console import path_arg
from gateway.errors import ConfigError
from gateway.portal.config import PortalConfig, load_portal_config, merge

__all__ = ["portal_main"]

#: The agency of ``demo.json`` the page acts as, unless ``--agency`` names another.
DEMO_AGENCY = "portal"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway portal",
        description="Serve the public enterprise lookup page (企业信用信息公示查询).",
    )
    p.add_argument("--config", type=path_arg, help="settings file (TOML, a [portal] table)")
    p.add_argument("--demo", type=path_arg, help="demo.json written by 'demo --serve'")
    p.add_argument(
        "--agency", default=DEMO_AGENCY, help=f"with --demo: the agency to act as ({DEMO_AGENCY})"
    )
    p.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:8080; port 0: any)")
    p.add_argument("--gateway", help="gateway address HOST:PORT")
    p.add_argument("--ca", type=path_arg, help="CA certificate of the gateway (PEM)")
    p.add_argument("--cert", type=path_arg, help="the portal agency's certificate (PEM)")
    p.add_argument("--key", type=path_arg, help="the portal agency's private key (PEM)")
    p.add_argument("--token-file", type=path_arg, help="file holding its JWT (re-read on change)")
    p.add_argument("--rate-per-minute", type=float, help="lookups per client address per minute")
    p.add_argument("--burst", type=int, help="lookups a client address may make at once")
    p.add_argument(
        "--trusted-proxy",
        action="append",
        dest="trusted_proxies",
        metavar="ADDRESS",
        help="a reverse proxy whose X-Forwarded-For is believed (repeatable)",
    )
    return p


def settings(args: argparse.Namespace) -> PortalConfig:
    """The page's settings from parsed arguments (file, then demo.json, then flags).

    Raises:
        ConfigError: a setting is wrong or missing.
        UsageError: ``--agency`` is not in demo.json.
        OSError, KeyError, ValueError: demo.json cannot be read or lacks a field.
    """
    config = load_portal_config(args.config) if args.config else PortalConfig()
    if args.demo:
        demo = read_demo(args.demo)
        member = demo_member(demo, "agencies", args.agency, "agency")
        fill = {
            "gateway": demo["gateway_address"],
            "ca": member["ca"],
            "cert": member["cert"],
            "key": member["key"],
            "token_file": member["token_file"],
        }
        config = merge(config, **{k: v for k, v in fill.items() if not getattr(config, k)})
    config = merge(
        config,
        listen=args.listen,
        gateway=args.gateway,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        token_file=args.token_file,
        rate_per_minute=args.rate_per_minute,
        burst=args.burst,
        trusted_proxies=tuple(args.trusted_proxies) if args.trusted_proxies else None,
    )
    config.require_connection()
    return config


def portal_main(argv: list[str]) -> int:
    """Run ``credit-gateway portal`` with ``argv``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = settings(args)
    except ConfigError as exc:
        print(f"credit-gateway portal: {exc.message}", file=sys.stderr)
        return 2
    except (UsageError, OSError, KeyError, ValueError) as exc:
        print(f"credit-gateway portal: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(config))
    except ConfigError as exc:
        print(f"credit-gateway portal: {exc.message}", file=sys.stderr)
        return 2


async def _serve(config: PortalConfig) -> int:
    from gateway.portal.serve import PortalServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server = await PortalServer.start(config)
    print(f"credit-gateway portal serving on {server.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0
