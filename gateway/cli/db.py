"""``credit-gateway db``: the PostgreSQL schema of the shared stores.

::

    credit-gateway db migrate --config gateway.toml   # apply pending migrations
    credit-gateway db status --config gateway.toml    # applied and pending, per file

The database is the one ``[storage] url`` names (and every distinct per-store URL of
``[storage.stores]``); its password comes from ``password_file`` or ``password_env``,
never the command line. A serving gateway never migrates by itself: it refuses to start
on a schema that is behind and names this command. Exit status: 0 done (``status``:
current); 1 ``status`` found pending migrations, or the schema is one this build cannot
use; 2 usage, configuration or connection error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway.cli.console import path_arg
from gateway.errors import ConfigError
from gateway.stores.postgres.url import PgTarget

__all__ = ["db_main"]

EXIT_OK = 0
EXIT_PENDING = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway db", description="PostgreSQL schema of the shared stores."
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_ in (
        ("migrate", "apply every pending migration"),
        ("status", "list applied and pending migrations (exit 1 when any is pending)"),
    ):
        cmd = sub.add_parser(name, help=help_)
        cmd.add_argument(
            "--config", type=path_arg, required=True, help="gateway configuration (TOML)"
        )
    return p


def db_main(argv: Sequence[str]) -> int:
    """Run ``credit-gateway db ACTION``; returns the exit status (see the module)."""
    args = _parser().parse_args(list(argv))
    from gateway.runtime.config import STORE_NAMES, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"credit-gateway db: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    targets: dict[str, PgTarget] = {}
    for store in STORE_NAMES:
        target = config.storage.target_for(store, application_name="credit-gateway db")
        if target is not None:
            targets.setdefault(target.url, target)
    if not targets:
        print(
            "credit-gateway db: no PostgreSQL store configured ([storage] url); "
            "the SQLite stores need no migration",
            file=sys.stderr,
        )
        return EXIT_USAGE
    worst = EXIT_OK
    for target in targets.values():
        worst = max(worst, _one(args.action, target))
    return worst


def _one(action: str, target: PgTarget) -> int:
    import psycopg

    from gateway.stores.postgres.connect import connect
    from gateway.stores.postgres.migrate import SchemaMismatch, applied, available, migrate
    from gateway.stores.postgres.url import PgConfigError

    where = _redacted(target.url)
    try:
        with connect(target) as conn:
            if action == "migrate":
                done = migrate(conn)
                for mig in done:
                    print(f"{where}: applied {mig.version:04d}_{mig.name}")
                print(f"{where}: schema current ({len(available())} migrations)")
                return EXIT_OK
            have = applied(conn)
            pending = 0
            for mig in available():
                state = "applied" if mig.version in have else "PENDING"
                pending += state == "PENDING"
                print(f"{where}: {mig.version:04d}_{mig.name} {state}")
            return EXIT_PENDING if pending else EXIT_OK
    except SchemaMismatch as exc:
        print(f"credit-gateway db: {where}: {exc}", file=sys.stderr)
        return EXIT_PENDING
    except PgConfigError as exc:
        print(f"credit-gateway db: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        # libpq's message names host and reason, never the password (it is not in the URL).
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        print(f"credit-gateway db: {where}: cannot connect: {first}", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.Error as exc:
        print(f"credit-gateway db: {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _redacted(url: str) -> str:
    """The URL without its query string (which may name socket folders or options)."""
    return url.split("?", 1)[0]
