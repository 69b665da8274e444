"""``credit-gateway legal-basis``: access by law, over gRPC (``credit.v1.LegalBasisAdmin``).

::

    credit-gateway legal-basis list                                   # the published bases
    credit-gateway legal-basis --demo DIR/demo.json --officer officer_a \\
        queries supervision_law_art26                                 # queries under a basis
    credit-gateway legal-basis --demo DIR/demo.json --auditor auditor consent CID  # archived

``list`` reads ``policies/legal_bases.toml`` (or ``--file``) and needs no gateway.
``queries`` (security officers) prints every query made under one basis, newest first,
confidential ones included, with the case reference and the day it stops being hidden from
the subject. ``consent`` (auditors) prints the signed consent (compact JWS) a query used, as
archived. Connection as ``credit-gateway controls``: ``--demo demo.json --officer ID`` (or
``--auditor ID``), or ``--gateway HOST:PORT --ca CA --cert CERT --key KEY --token-file JWT``.
Exit status: 0 done; 1 a refusal by the gateway (its code and message on one line); 2 usage
or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TextIO

import grpc

from gateway.api.policy_admin import DEV_OFFICER_HEADER
from gateway.cli.connect import UsageError, add_connection_options, connect_as
from gateway.cli.console import path_arg, yuan
from gateway.errors import ConfigError
from gateway.policy.legal import load_legal_bases
from protos.credit.v1 import subject_pb2, subject_pb2_grpc

__all__ = ["legal_main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_MEMBERS = {
    "officer": "with --demo, for queries: which officer to act as",
    "auditor": "with --demo, for consent: which auditor to act as",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway legal-basis",
        description="Legal bases: the published list, the queries under one, archived consents.",
    )
    add_connection_options(p, None, members=_MEMBERS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("list", help="the published legal bases (no gateway needed)")
    s.add_argument("--file", type=path_arg, help="default policies/legal_bases.toml")
    s = sub.add_parser("queries", help="the queries made under one basis (security officers)")
    s.add_argument("basis", help="a code of policies/legal_bases.toml")
    s.add_argument("--limit", type=int, default=0, help="at most this many (default all)")
    s = sub.add_parser("consent", help="an archived consent, as a query used it (auditors)")
    s.add_argument("consent_id")
    for s in sub.choices.values():
        add_connection_options(s, argparse.SUPPRESS, members=_MEMBERS)
    return p


def _list(args: argparse.Namespace, out: TextIO) -> int:
    bases = load_legal_bases(args.file)
    for code in bases.codes():
        b = bases.get(code)
        assert b is not None
        hidden = f"hidden {b.confidentiality_days} days" if b.confidentiality_days else "not hidden"
        case = "case reference required" if b.case_reference_required else "no case needed"
        print(f"{code}: {b.statute} {b.article}", file=out)
        print(
            f"  kinds {', '.join(sorted(b.agency_kinds))}; tiers "
            f"{', '.join(sorted(t.value for t in b.tiers))}; purposes "
            f"{', '.join(sorted(b.purposes))}; {case}; {hidden}",
            file=out,
        )
    return EXIT_OK


async def _remote(args: argparse.Namespace, out: TextIO) -> int:
    group, flag = ("officers", "officer") if args.command == "queries" else ("auditors", "auditor")
    channel, metadata = connect_as(args, group=group, flag=flag, dev_header=DEV_OFFICER_HEADER)
    stub = subject_pb2_grpc.LegalBasisAdminStub(channel)
    try:
        if args.command == "consent":
            c = await stub.GetArchivedConsent(
                subject_pb2.GetArchivedConsentRequest(consent_id=args.consent_id),
                metadata=metadata,
                timeout=args.timeout,
            )
            print(
                f"consent {c.consent_id}, archived {c.archived_at}, kept until {c.retain_until}",
                file=out,
            )
            print(c.compact_jws, file=out)
            return EXIT_OK
        token, shown = "", 0
        while True:
            page = await stub.ListQueriesByBasis(
                subject_pb2.ListQueriesByBasisRequest(
                    legal_basis=args.basis, page_size=200, page_token=token
                ),
                metadata=metadata,
                timeout=args.timeout,
            )
            for q in page.queries:
                e = q.query
                paid = f"paid {yuan(e.charge_fen)}" if e.charge_fen else "free"
                hidden = (
                    f", hidden from the subject until {q.confidential_until}"
                    if (q.confidential_until)
                    else ""
                )
                datasets = ", ".join(f"{d.department}/{d.dataset}" for d in e.datasets) or "-"
                print(
                    f"{e.time}  {e.agency_id}  {e.purpose}  {paid}  case {q.case_reference or '-'}"
                    f"  [{datasets}]  audit #{e.log_index}{hidden}",
                    file=out,
                )
                shown += 1
                if args.limit and shown >= args.limit:
                    return EXIT_OK
            token = page.next_page_token
            if not token:
                if not shown:
                    print(f"no queries under {args.basis}", file=out)
                return EXIT_OK
    finally:
        await channel.close()


def legal_main(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one ``credit-gateway legal-basis`` command; returns the exit status. Never raises
    for a refusal, a bad argument or an unreachable gateway: it prints one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        if args.command == "list":
            return _list(args, out)
        return asyncio.run(_remote(args, out))
    except ConfigError as exc:
        print(f"error: {exc.message}", file=err)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        print(f"error: {code.name if code else 'UNKNOWN'}: {exc.details()}", file=err)
        return EXIT_USAGE if code == grpc.StatusCode.UNAVAILABLE else EXIT_FAILED
