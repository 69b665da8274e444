"""``credit-gateway billing``: offline administration of the ledger file.

::

    credit-gateway billing --ledger ledger.db balance bank
    credit-gateway billing --ledger ledger.db top-up bank 500000 --reference TX-2026-0042
    credit-gateway billing --ledger ledger.db statement bank \\
        --from 2026-11-01 --to 2026-11-30 [--csv]
    credit-gateway billing --ledger ledger.db credit-limit bank 100000
    credit-gateway billing --ledger ledger.db check
    credit-gateway billing reconcile --ledger ledger.db --audit-log audit.db [--key verifier.key]
    credit-gateway billing --config gateway.toml balance bank

It works directly on the SQLite file and is safe beside a running gateway
(every write is a ``BEGIN IMMEDIATE`` transaction). ``--config`` instead names the
gateway's own configuration and uses the ledger it does: the ``[storage]`` PostgreSQL
database when ``[storage]`` puts the ledger there (the password from its
``password_file``/``password_env``, never the command line; the schema must be
current), else ``[billing] ledger``; every write is one transaction there too, so it is
safe beside any number of running gateway processes. Amounts typed are integer fen;
``12.50`` is refused. Amounts printed are yuan (``¥5,000.00``, as ``credit-query``
prints them); ``--json`` and ``--csv`` give integer fen for machines. Statement dates and
times are the price list's zone (Asia/Shanghai, ``+08:00``), as the header says. The
options ``--ledger``, ``--config``, ``--prices`` and ``--json`` go before or after the command. The
ledger file must exist (a typo never creates an empty ledger); ``top-up --create`` opens a
new account. Exit status: 0 done,
1 ``check`` or ``reconcile`` found discrepancies, 2 usage or ledger error.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from gateway.api.billing import parse_date, period_bounds
from gateway.billing import reconcile
from gateway.billing.ledger import AccountState, Entry, LedgerStore
from gateway.billing.prices import default_prices_path, load_prices
from gateway.cli.console import path_arg, yuan
from gateway.errors import ConfigError, GatewayError, NotFoundError
from gateway.stores.sqlite.ledger import SQLiteLedger

__all__ = ["billing_main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

CSV_COLUMNS = (
    "seq",
    "at",
    "kind",
    "amount_fen",
    "balance_change_fen",
    "balance_fen",
    "held_fen",
    "request_id",
    "reference",
    "department",
    "dataset",
    "actor",
    "note",
)


def _fen(text: str) -> int:
    # Integer fen only: a decimal point means someone typed yuan.
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: amounts are integer fen (e.g. 1250 for 12.50 yuan)"
        )
    return int(text)


def _common(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--ledger", type=path_arg, default=default, help="the ledger SQLite file")
    p.add_argument(
        "--config",
        type=path_arg,
        default=default,
        help="the gateway configuration: its ledger ([storage] PostgreSQL or [billing] ledger)",
    )
    p.add_argument(
        "--prices",
        type=path_arg,
        default=default,
        help="price list, for its time zone (default: the shipped policies/prices.toml)",
    )
    p.add_argument(
        "--json", action="store_true", default=default, help="JSON, amounts in integer fen"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway billing", description="Offline administration of the billing ledger."
    )
    _common(p, None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("balance", help="show an account, or every account")
    s.add_argument("account", nargs="?", help="account id (agency id); all if omitted")

    s = sub.add_parser("top-up", help="add money to an account (idempotent by --reference)")
    s.add_argument("account")
    s.add_argument("amount_fen", type=_fen, help="integer fen")
    s.add_argument("--reference", required=True, help="payment reference: the idempotency key")
    s.add_argument("--note", default="")
    s.add_argument("--create", action="store_true", help="open the account if it does not exist")

    s = sub.add_parser("statement", help="entries of a period of local (Beijing) dates")
    s.add_argument("account")
    s.add_argument("--from", dest="from_date", required=True, metavar="YYYY-MM-DD")
    s.add_argument("--to", dest="to_date", required=True, metavar="YYYY-MM-DD")
    s.add_argument("--csv", action="store_true", help="CSV on standard output")

    s = sub.add_parser("credit-limit", help="set how far below zero an account may go")
    s.add_argument("account")
    s.add_argument("amount_fen", type=_fen)

    sub.add_parser("check", help="recompute every balance from the entries and compare")

    s = sub.add_parser(
        "reconcile", help="check that the ledger and the audit log tell the same story"
    )
    reconcile.add_arguments(s)
    for s in sub.choices.values():
        # SUPPRESS: an option given before the command is not reset by the command's default.
        _common(s, argparse.SUPPRESS)
    return p


def _account(acct: AccountState) -> dict[str, Any]:
    return {
        "account": acct.account_id,
        "balance_fen": acct.balance_fen,
        "held_fen": acct.held_fen,
        "credit_limit_fen": acct.credit_limit_fen,
        "available_fen": acct.available_fen,
    }


def _show(acct: AccountState, out: TextIO) -> None:
    print(
        f"{acct.account_id}: balance {yuan(acct.balance_fen)}, held {yuan(acct.held_fen)},"
        f" credit limit {yuan(acct.credit_limit_fen)}, available {yuan(acct.available_fen)}",
        file=out,
    )


def _json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2), file=out)


def billing_main(
    argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``credit-gateway billing`` command; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse exits on --help and on bad usage
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    if (args.ledger is None) == (args.config is None):
        print("error: name the ledger: --ledger FILE or --config GATEWAY.toml", file=err)
        return EXIT_USAGE
    try:
        ledger = (
            SQLiteLedger(args.ledger, create=False)
            if args.ledger is not None
            else _configured_ledger(args.config)
        )
    except GatewayError as exc:
        print(f"error: {exc.message}", file=err)
        return EXIT_USAGE
    try:
        if args.command == "reconcile":
            return reconcile.run(
                ledger,
                args.audit_log,
                args.key,
                out=out,
                err=err,
                as_json=bool(args.json),
                strict=bool(args.strict),
            )
        return _run(args, ledger, out)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=err)
        return EXIT_USAGE
    finally:
        ledger.close()


def _configured_ledger(path: Path) -> LedgerStore:
    """The ledger the gateway configured at ``path`` uses. Raises ConfigError (also for
    a schema that is not current, or a database that cannot be reached), LedgerError."""
    from gateway.runtime.config import load_config
    from gateway.runtime.stores import pg_pool

    config = load_config(path)
    pool = pg_pool(config.storage, "ledger", 2)  # the gateway's own opener
    if pool is None:
        if config.billing is None:
            raise ConfigError("billing", "missing: this gateway keeps no ledger")
        return SQLiteLedger(config.billing.ledger, create=False)
    from gateway.stores.postgres.ledger import PostgresLedger

    return PostgresLedger(pool)


def _run(args: argparse.Namespace, ledger: LedgerStore, out: TextIO) -> int:
    now = datetime.now(UTC)
    if args.command == "balance":
        accounts = [ledger.account(args.account)] if args.account else ledger.accounts()
        shown: list[AccountState] = []
        for acct in accounts:
            if acct is None:
                raise NotFoundError(f"no account {args.account!r}")
            shown.append(acct)
        if args.json:
            _json({"accounts": [_account(a) for a in shown]}, out)
        else:
            for acct in shown:
                _show(acct, out)
        return EXIT_OK
    if args.command == "top-up":
        result = ledger.top_up(
            args.account,
            args.amount_fen,
            args.reference,
            now,
            actor=f"cli:{_user()}",
            note=args.note,
            create=args.create,
        )
        if args.json:
            _json(
                {
                    "reference": args.reference,
                    "replayed": result.replayed,
                    "entry": result.entry.seq,
                    **_account(result.account),
                },
                out,
            )
            return EXIT_OK
        verb = "already booked" if result.replayed else "booked"
        print(f"top-up {args.reference} {verb} (entry {result.entry.seq})", file=out)
        _show(result.account, out)
        return EXIT_OK
    if args.command == "credit-limit":
        acct = ledger.set_credit_limit(args.account, args.amount_fen)
        if args.json:
            _json(_account(acct), out)
        else:
            _show(acct, out)
        return EXIT_OK
    if args.command == "statement":
        tz = load_prices(args.prices or default_prices_path()).timezone
        first, last = parse_date(args.from_date, "--from"), parse_date(args.to_date, "--to")
        start, end = period_bounds(first, last, tz)
        fmt = "csv" if args.csv else "json" if args.json else "text"
        _statement(ledger, args.account, (start, end), f"{first} to {last}", tz, fmt, out)
        return EXIT_OK
    # check
    problems = ledger.check()
    if args.json:
        _json(
            {
                "consistent": not problems,
                "problems": [{"account": p.account_id, "problem": p.problem} for p in problems],
            },
            out,
        )
        return EXIT_FAILED if problems else EXIT_OK
    for p in problems:
        print(f"{p.account_id}: {p.problem}", file=out)
    if problems:
        return EXIT_FAILED
    print(f"ledger consistent: {len(ledger.recompute_balances())} accounts", file=out)
    return EXIT_OK


def _row(e: Entry, tz: ZoneInfo) -> tuple[Any, ...]:
    return (
        e.seq,
        e.at.astimezone(tz).isoformat(),
        e.kind,
        e.amount_fen,
        e.balance_change_fen,
        e.balance_fen,
        e.held_fen,
        e.request_id,
        e.reference,
        e.department,
        e.dataset,
        e.actor,
        e.note,
    )


def _statement(
    ledger: LedgerStore,
    account: str,
    bounds: tuple[datetime, datetime],
    period: str,
    tz: ZoneInfo,
    fmt: str,
    out: TextIO,
) -> None:
    """Every entry of ``account`` in ``bounds`` (UTC instants of the local ``period``), its
    times in ``tz``; ``fmt`` is text, csv or json (amounts in fen)."""
    after = 0
    first = True
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    rows: list[dict[str, Any]] = []
    offset = datetime.now(tz).strftime("%z")
    zone = f"{tz.key}, UTC{offset[:3]}:{offset[3:]}"
    while True:
        page = ledger.statement(account, *bounds, after_seq=after, limit=5000)
        if first and fmt == "csv":
            assert writer is not None
            writer.writerow(CSV_COLUMNS)
        elif first and fmt == "text":
            print(f"{account}: statement {period}, dates and times in {zone}", file=out)
            print(f"{account}: opening balance {yuan(page.opening_balance_fen)}", file=out)
        first = False
        for e in page.entries:
            if writer is not None:
                writer.writerow(_row(e, tz))
            elif fmt == "json":
                rows.append(dict(zip(CSV_COLUMNS, _row(e, tz), strict=True)))
            else:
                what = e.request_id or e.reference
                item = f" {e.department}/{e.dataset}" if e.department else ""
                print(
                    f"{e.seq:>8} {e.at.astimezone(tz).isoformat(timespec='seconds')}"
                    f" {e.kind:<10} {yuan(e.amount_fen):>14} -> balance {yuan(e.balance_fen):>14}"
                    f" held {yuan(e.held_fen):>12}  {what}{item}",
                    file=out,
                )
        if not page.next_after_seq:
            if fmt == "text":
                print(f"{account}: closing balance {yuan(page.closing_balance_fen)}", file=out)
            elif fmt == "json":
                _json(
                    {
                        "account": account,
                        "period": period,
                        "timezone": tz.key,
                        "opening_balance_fen": page.opening_balance_fen,
                        "closing_balance_fen": page.closing_balance_fen,
                        "entries": rows,
                    },
                    out,
                )
            return
        after = page.next_after_seq


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
