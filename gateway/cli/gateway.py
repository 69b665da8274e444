"""``credit-gateway``: run the gateway, the demo, and the PKI and token tools.

    credit-gateway serve --config gateway.toml
    credit-gateway serve --config gateway.toml --workers 4   # 4 processes on one port
    credit-gateway demo                         # scripted queries, then exit 0
    credit-gateway demo --postgres              # the same, every store on PostgreSQL
    credit-gateway demo --serve --workdir DIR   # keep the federation running
    credit-gateway certs init DIR               # development PKI
    credit-gateway token issue ...              # mint an agency token
    credit-gateway token refresh --demo F --all # re-mint demo tokens before they expire
    credit-gateway consent issue ...            # mint a consent (development issuer)
    credit-gateway billing --ledger F balance   # accounts, top-ups, statements
    credit-gateway policy --demo F --officer ID list   # policy versions (security officers)
    credit-gateway controls --demo F --officer ID suspend bank_x --reason R   # live controls
    credit-gateway db migrate --config gateway.toml   # PostgreSQL schema of the shared stores
    credit-gateway screening stats --audit-log F --key K --from D --to D  # screening counts
    credit-gateway legal-basis --demo F --officer ID queries CODE   # queries under a legal basis
    credit-gateway portal --demo F --listen 127.0.0.1:8080   # the public lookup page

Errors of the gateway's own hierarchy print one line and exit 2; a traceback
means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from gateway.cli.console import console_script, path_arg
from gateway.errors import GatewayError

__all__ = ["main"]


#: Commands whose own tool parses everything after the command word (its options may come
#: before its subcommand: ``billing --ledger F balance``).
_DELEGATED = {
    "certs": "development PKI",
    "token": "agency tokens: issue; refresh (demo tokens)",
    "consent": "consent tokens (development consent issuer)",
    "billing": "accounts: balance, top-up, statement, credit limit, check",
    "policy": "policy versions: draft, validate, test, diff, replay, approve, activate",
    "controls": "live controls: suspend, reinstate, revoke certificates and consents, status",
    "db": "PostgreSQL schema of the shared stores: migrate, status",
    "screening": "screening reports: stats per list, scenario and agency",
    "legal-basis": "legal bases: the published list, queries per basis, archived consents",
    "portal": "serve the public enterprise lookup page",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway", description="Federated credit-query gateway."
    )
    # Before or after the command: --log-level is every command's option.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="logging level (default INFO)"
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", parents=[common], help="run the gateway from a TOML configuration"
    )
    serve.add_argument("--config", type=path_arg, required=True, help="configuration file (TOML)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the port (SO_REUSEPORT), under a supervisor that "
        "restarts a dead one and drains all on SIGTERM (default 1; above 1 needs the audit "
        "log on PostgreSQL)",
    )
    # One of a supervisor's workers: SO_REUSEPORT, no metrics port of its own.
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    demo = sub.add_parser(
        "demo", parents=[common], help="run the whole federation on generated data"
    )
    demo.add_argument("--serve", action="store_true", help="keep running until interrupted")
    demo.add_argument(
        "--workdir", type=path_arg, help="folder for data, keys and demo.json (default: temporary)"
    )
    demo.add_argument(
        "--subjects", type=int, default=10_000, help="synthetic subjects (default 10000)"
    )
    demo.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    demo.add_argument(
        "--postgres",
        action="store_true",
        help="every store on a throwaway local PostgreSQL cluster, stopped at the end",
    )
    demo.add_argument(
        "--portal-listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="with --serve: where the public lookup page listens (default: a free local port)",
    )

    for name, help_ in _DELEGATED.items():
        # Only the command word is parsed here; _split hands the rest, --help included, to
        # the command's own parser.
        sub.add_parser(name, help=help_, add_help=False)
    return p


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(what this parser reads, what a delegated command's own parser reads). A
    ``--log-level`` anywhere is this parser's: no command has an option of that name."""
    levels: list[str] = []
    mine: list[str] = []
    rest: list[str] = []
    command: str | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--log-level":
            levels += [arg, *(v for v in [next(args, None)] if v is not None)]
        elif arg.startswith("--log-level="):
            levels.append(arg)
        elif command in _DELEGATED:
            rest.append(arg)
        else:
            mine.append(arg)
            if command is None and not arg.startswith("-"):
                command = arg
    return levels + mine, rest


@console_script
def main(argv: list[str] | None = None) -> int:
    """Run ``credit-gateway`` with ``argv`` (default: the command line); returns the exit
    status (0 done; 2 usage or configuration error; a delegated command's own codes)."""
    mine, rest = _split(sys.argv[1:] if argv is None else list(argv))
    args = _parser().parse_args(mine)
    from gateway.runtime.logs import configure_logging

    configure_logging(args.log_level)
    try:
        if args.command == "serve":
            if args.workers != 1 and not args.worker:
                return asyncio.run(_supervise(args.config, args.workers, args.log_level))
            return asyncio.run(_serve(args.config, worker=args.worker))
        if args.command == "demo":
            from gateway.dev.demo import run_demo

            return asyncio.run(
                run_demo(
                    workdir=args.workdir,
                    serve=args.serve,
                    subjects=args.subjects,
                    seed=args.seed,
                    portal_listen=args.portal_listen,
                    postgres=args.postgres,
                )
            )
        if args.command == "certs":
            from gateway.dev.pki import certs_main
            from gateway.domain.catalog import load_catalog

            return certs_main(rest, default_departments=list(load_catalog().departments))
        if args.command == "token" and rest[:1] == ["refresh"]:
            from gateway.dev.tokens import refresh_main

            return refresh_main(rest[1:])
        if args.command == "token":
            from gateway.auth.tokens import token_main

            return token_main(rest)
        if args.command == "consent":
            from gateway.cli.consent import consent_main

            return consent_main(rest)
        if args.command == "billing":
            from gateway.cli.billing import billing_main

            return billing_main(rest)
        if args.command == "policy":
            from gateway.cli.policy import policy_main

            return policy_main(rest)
        if args.command == "controls":
            from gateway.cli.controls import controls_main

            return controls_main(rest)
        if args.command == "db":
            from gateway.cli.db import db_main

            return db_main(rest)
        if args.command == "screening":
            from gateway.cli.screening import screening_main

            return screening_main(rest)
        if args.command == "legal-basis":
            from gateway.cli.legal import legal_main

            return legal_main(rest)
        if args.command == "portal":
            from gateway.cli.portal import portal_main

            return portal_main(rest)
    except GatewayError as exc:
        print(f"credit-gateway: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)  # argparse allows no other


async def _supervise(config_path: Path, workers: int, log_level: str) -> int:
    from gateway.runtime.config import load_config
    from gateway.runtime.workers import Supervisor

    supervisor = Supervisor(config_path, load_config(config_path), workers, log_level=log_level)
    return await supervisor.run()


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor is gone stops (drains) rather than serve unsupervised."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells of a parent's death
        await asyncio.sleep(1.0)
    logging.getLogger(__name__).error("supervisor gone; draining")
    stop.set()


async def _serve(config_path: Path, *, worker: bool = False) -> int:
    from gateway.runtime.assembly import build_gateway
    from gateway.runtime.config import load_config

    gateway = await build_gateway(load_config(config_path))
    gateway.worker = worker
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(_orphaned(os.getppid(), stop)) if worker else None
    # Only now: a SIGTERM sent as soon as this line is read must still stop
    # the gateway cleanly (final audit checkpoint), not kill it outright.
    print(f"credit-gateway serving on {gateway.address}", flush=True)
    await stop.wait()
    if watch is not None:
        watch.cancel()
    logging.getLogger(__name__).info("draining")
    await gateway.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
