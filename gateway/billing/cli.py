"""``credit-gateway billing``: offline administration of the ledger file.

::

    credit-gateway billing --ledger ledger.db balance bank
    credit-gateway billing --ledger ledger.db top-up bank 500000 --reference TX-2026-0042
    credit-gateway billing --ledger ledger.db statement bank \\
        --from 2026-11-01 --to 2026-11-30 [--csv]
    credit-gateway billing --ledger ledger.db credit-limit bank 100000
    credit-gateway billing --ledger ledger.db check
    credit-gateway billing reconcile --ledger ledger.db --audit-log audit.db [--key verifier.key]

It works directly on the SQLite file and is safe beside a running gateway
(every write is a ``BEGIN IMMEDIATE`` transaction). Amounts are integer fen;
``12.50`` is refused. The ledger file must exist (a typo never creates an
empty ledger); ``top-up --create`` opens a new account. Exit status: 0 done,
1 ``check`` or ``reconcile`` found discrepancies, 2 usage or ledger error.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gateway.billing import reconcile
from gateway.billing.admin import parse_date, period_bounds
from gateway.billing.ledger import AccountState, SQLiteLedger
from gateway.billing.prices import default_prices_path, load_prices
from gateway.errors import GatewayError, NotFoundError

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway billing", description="Offline administration of the billing ledger."
    )
    p.add_argument("--ledger", type=Path, required=True, help="the ledger SQLite file")
    p.add_argument(
        "--prices",
        type=Path,
        help="price list, for its time zone (default: the shipped policies/prices.toml)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("balance", help="show an account, or every account")
    s.add_argument("account", nargs="?", help="account id (agency id); all if omitted")

    s = sub.add_parser("top-up", help="add money to an account (idempotent by --reference)")
    s.add_argument("account")
    s.add_argument("amount_fen", type=_fen, help="integer fen")
    s.add_argument("--reference", required=True, help="payment reference: the idempotency key")
    s.add_argument("--note", default="")
    s.add_argument("--create", action="store_true", help="open the account if it does not exist")

    s = sub.add_parser("statement", help="entries of a period of local dates")
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
    return p


def _show(acct: AccountState, out: TextIO) -> None:
    print(
        f"{acct.account_id}: balance {acct.balance_fen} fen, held {acct.held_fen} fen,"
        f" credit limit {acct.credit_limit_fen} fen, available {acct.available_fen} fen",
        file=out,
    )


def billing_main(
    argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``credit-gateway billing`` command; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if list(argv[:1]) == ["reconcile"]:  # also `billing reconcile --ledger F --audit-log A`
        return reconcile.reconcile_main(argv[1:], out=out, err=err)
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse exits on --help and on bad usage
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        ledger = SQLiteLedger(args.ledger, create=False)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=err)
        return EXIT_USAGE
    try:
        if args.command == "reconcile":
            return reconcile.run(ledger, args.audit_log, args.key, out=out, err=err)
        return _run(args, ledger, out)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=err)
        return EXIT_USAGE
    finally:
        ledger.close()


def _run(args: argparse.Namespace, ledger: SQLiteLedger, out: TextIO) -> int:
    now = datetime.now(UTC)
    if args.command == "balance":
        accounts = [ledger.account(args.account)] if args.account else ledger.accounts()
        for acct in accounts:
            if acct is None:
                raise NotFoundError(f"no account {args.account!r}")
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
        verb = "already booked" if result.replayed else "booked"
        print(f"top-up {args.reference} {verb} (entry {result.entry.seq})", file=out)
        _show(result.account, out)
        return EXIT_OK
    if args.command == "credit-limit":
        _show(ledger.set_credit_limit(args.account, args.amount_fen), out)
        return EXIT_OK
    if args.command == "statement":
        tz = load_prices(args.prices or default_prices_path()).timezone
        start, end = period_bounds(
            parse_date(args.from_date, "--from"), parse_date(args.to_date, "--to"), tz
        )
        _statement(ledger, args.account, start, end, csv_out=args.csv, out=out)
        return EXIT_OK
    # check
    problems = ledger.check()
    for p in problems:
        print(f"{p.account_id}: {p.problem}", file=out)
    if problems:
        return EXIT_FAILED
    print(f"ledger consistent: {len(ledger.recompute_balances())} accounts", file=out)
    return EXIT_OK


def _statement(
    ledger: SQLiteLedger,
    account: str,
    start: datetime,
    end: datetime,
    *,
    csv_out: bool,
    out: TextIO,
) -> None:
    after = 0
    first = True
    writer = csv.writer(out, lineterminator="\n") if csv_out else None
    while True:
        page = ledger.statement(account, start, end, after_seq=after, limit=5000)
        if first:
            if writer is not None:
                writer.writerow(CSV_COLUMNS)
            else:
                print(f"{account}: opening balance {page.opening_balance_fen} fen", file=out)
            first = False
        for e in page.entries:
            if writer is not None:
                writer.writerow(
                    (
                        e.seq,
                        e.at.isoformat(),
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
                )
            else:
                what = e.request_id or e.reference
                item = f" {e.department}/{e.dataset}" if e.department else ""
                print(
                    f"{e.seq:>8} {e.at.isoformat()} {e.kind:<10} {e.amount_fen:>12}"
                    f" -> balance {e.balance_fen:>12} held {e.held_fen:>10}  {what}{item}",
                    file=out,
                )
        if not page.next_after_seq:
            if writer is None:
                print(f"{account}: closing balance {page.closing_balance_fen} fen", file=out)
            return
        after = page.next_after_seq


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
