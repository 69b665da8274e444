"""``credit-query``: the agencies' command-line client.

    credit-query --demo DIR/demo.json --agency procurement \\
        --enterprise 91350200MA2YJ1XR9G --purpose government_procurement
    credit-query --gateway HOST:PORT --ca ca.pem --cert me.pem --key me.key \\
        --token-file me.jwt --person 360426199101010071 --purpose lending --mode paid --json
    credit-query --demo DIR/demo.json --agency self_service --self
    credit-query objection --demo DIR/demo.json --agency self_service file|status|list|...

``--self`` prints the subject's own report (:mod:`gateway.cli.selfreport`): its records with
their objection marks and statements, its open objections with their deadlines, and every
query about it (who, when, why, free or paid, the audit index). It runs as a self-service
credential (the token attests the subject); the subject is the demo kiosk's, or the one named
by ``--person``/``--enterprise``; the purpose is ``self_query``. ``objection``: objections
and credit repair, see :mod:`gateway.cli.objection`.

    credit-query report --demo DIR/demo.json --agency procurement \\
        --enterprise 91350200MA2YJ1XR9G --purpose government_procurement \\
        --out report.pdf --json report.json

A readable table by default; ``--json`` prints the response as JSON for
scripts (money in integer fen there; the table prints yuan). ``--demo`` supplies the
connection settings not given as flags: an explicit flag always wins. Without a CA
certificate the client refuses to connect unless told ``--insecure-dev-plaintext`` (a
gateway in development mode only; no token is sent). ``report`` takes the same flags and
writes the signed report (check it with ``credit-audit check-report``). Exit status: 0
answered, 1 refused by the gateway (the status line is printed), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from gateway.cli.connect import (
    QueryClient,
    UsageError,
    agency_connection,
    build_request,
    read_demo,
)
from gateway.cli.console import console_script, field_text, path_arg, yuan
from gateway.cli.objection import objection_main
from gateway.cli.report import run_report
from gateway.cli.selfreport import gather, render_report, report_json
from gateway.domain import names
from protos.credit.v1 import common_pb2, query_pb2

__all__ = ["main", "render"]


def _parser(*, report: bool = False) -> argparse.ArgumentParser:
    """The query's flags; with ``report``, those of ``credit-query report`` (``--out`` and
    ``--json FILE`` instead of the ``--json`` switch)."""
    p = argparse.ArgumentParser(
        prog="credit-query report" if report else "credit-query",
        description="Get a signed credit report (PDF, and JSON) about one subject."
        if report
        else "Query credit-gateway about one subject. "
        "'credit-query report ...' gets a signed credit report instead.",
    )
    conn = p.add_argument_group("connection")
    conn.add_argument(
        "--demo", type=path_arg, help="demo.json written by 'credit-gateway demo --serve'"
    )
    conn.add_argument("--agency", help="with --demo: which demo agency to act as")
    conn.add_argument("--gateway", help="gateway address HOST:PORT")
    conn.add_argument("--ca", type=path_arg, help="CA certificate (PEM)")
    conn.add_argument("--cert", type=path_arg, help="this agency's client certificate (PEM)")
    conn.add_argument("--key", type=path_arg, help="this agency's private key (PEM)")
    conn.add_argument("--token-file", type=path_arg, help="file holding this agency's JWT")
    conn.add_argument(
        "--insecure-dev-plaintext",
        action="store_true",
        help="plaintext, no token: only for a gateway started in insecure development mode",
    )
    conn.add_argument(
        "--timeout", type=float, default=10.0, help="deadline in seconds (default 10)"
    )
    p.add_argument(
        "--self",
        action="store_true",
        dest="self_report",
        help="the subject's own report: records, marks and statements, open objections, "
        "query records (a self-service credential)",
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument("--enterprise", metavar="USCC", help="unified social credit code")
    who.add_argument("--person", metavar="ID", help="resident identity number")
    p.add_argument("--purpose", help="purpose code (policies/purposes.toml); --self: self_query")
    p.add_argument("--mode", choices=("free", "paid"), default="free")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="DEPT/DATASET",
        help="repeatable; default all",
    )
    p.add_argument("--consent-file", type=path_arg, help="file holding a consent token")
    p.add_argument("--case-reference", default="")
    p.add_argument(
        "--legal-basis",
        default="",
        help="a code of policies/legal_bases.toml: query by law instead of with consent",
    )
    p.add_argument("--officer-id", default="")
    p.add_argument("--represented-party", default="")
    p.add_argument("--request-id", help="UUID; default a fresh one")
    if report:
        p.add_argument("--out", type=path_arg, required=True, help="write the PDF report here")
        p.add_argument("--json", type=path_arg, metavar="FILE", help="also write its JSON form")
    else:
        p.add_argument("--json", action="store_true", help="print the response as JSON")
    return p


#: The old name of :func:`gateway.cli.connect.agency_connection`.
_connection = agency_connection


@console_script
def main(argv: list[str] | None = None) -> int:
    """Run ``credit-query`` with ``argv`` (default: the command line); returns the exit status.
    ``credit-query screen ...`` is the screening command (:mod:`gateway.cli.screening`),
    ``credit-query objection ...`` the objections command (:mod:`gateway.cli.objection`)."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["screen"]:
        from gateway.cli.screening import screen_main

        return screen_main(words[1:])
    if words[:1] == ["objection"]:
        return objection_main(words[1:])
    report = bool(words) and words[0] == "report"
    args = _parser(report=report).parse_args(words[1:] if report else words)
    try:
        enterprise, person = _subject(args)
        if args.self_report and args.purpose not in (None, "self_query"):
            raise UsageError("--self queries with purpose self_query")
        purpose = "self_query" if args.self_report else args.purpose
        if not purpose:
            raise UsageError("name --purpose")
        request = build_request(
            enterprise=enterprise,
            person=person,
            purpose=purpose,
            mode=args.mode,
            datasets=args.dataset,
            consent_token=args.consent_file.read_text(encoding="utf-8").strip()
            if args.consent_file
            else "",
            case_reference=args.case_reference,
            officer_id=args.officer_id,
            represented_party=args.represented_party,
            request_id=args.request_id,
            legal_basis=args.legal_basis,
        )
        conn = agency_connection(args)
    except (UsageError, OSError, ValueError, KeyError) as exc:
        print(f"credit-query: {exc}", file=sys.stderr)
        return 2
    if report:
        return asyncio.run(run_report(conn, request, args.timeout, args.out, args.json))
    if args.self_report:
        return asyncio.run(_run_self(conn, request, args.timeout, args.json))
    return asyncio.run(_run(conn, request, args.timeout, args.json))


def _subject(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(enterprise, person) to query: the flags, or with ``--self`` and ``--demo`` the
    subject the demo kiosk's token attests.

    Raises:
        UsageError: no subject named (or none to be found); OSError, KeyError, ValueError:
            the demo file cannot be read.
    """
    if args.enterprise or args.person:
        return args.enterprise, args.person
    if args.self_report and args.demo:
        member = read_demo(args.demo).get("agencies", {}).get(args.agency or "", {})
        subject = member.get("subject") if isinstance(member, dict) else None
        if isinstance(subject, dict) and subject.get("type") in ("person", "enterprise"):
            sid = str(subject.get("id", ""))
            return (sid, None) if subject["type"] == "enterprise" else (None, sid)
        raise UsageError(
            "--self: this demo agency attests no subject; name --person or --enterprise"
        )
    raise UsageError("name --enterprise or --person")


async def _run_self(
    conn: dict[str, Any], request: query_pb2.QueryRequest, timeout: float, as_json: bool
) -> int:
    address = conn.pop("address")
    async with QueryClient.connect(address, **conn) as client:
        try:
            report = await gather(client, request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            print(f"credit-query: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps(report_json(report), ensure_ascii=False, indent=2))
    else:
        render_report(report, request.subject, sys.stdout)
    return 0


async def _run(
    conn: dict[str, Any], request: query_pb2.QueryRequest, timeout: float, as_json: bool
) -> int:
    address = conn.pop("address")
    async with QueryClient.connect(address, **conn) as client:
        try:
            response = await client.send(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            print(f"credit-query: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps(json_format.MessageToDict(response), ensure_ascii=False, indent=2))
    else:
        render(response, sys.stdout)
    return 0


_STATUS = {k: v.replace("_", " ") for k, v in names.STATUS.items()}
_REASON = {k: v.replace("_", " ") for k, v in names.REASON.items()}


def render(response: query_pb2.QueryResponse, out: TextIO) -> None:
    """Write a readable account of one answer."""
    head = f"query {response.request_id} on {response.query_date}, policy {response.policy_version}"
    charge = response.charge
    if charge.amount_fen:
        head += f", charged {yuan(charge.amount_fen)} (balance {yuan(charge.balance_fen)})"
    elif charge.lines:
        head += f", free ({charge.free_remaining} free queries left)"
    print(head, file=out)
    for section in response.sections:
        status = _STATUS.get(section.status, "?")
        timing = (
            f", {section.latency_ms} ms"
            if section.status != query_pb2.SECTION_STATUS_WITHHELD
            else ""
        )
        print(
            f"\n[{section.department}] {status}{timing}"
            + (f": {section.detail}" if section.detail else ""),
            file=out,
        )
        for ds in section.datasets:
            if not ds.records and not ds.aged_out:
                continue  # an empty dataset says nothing a reader needs
            aged = f", {ds.aged_out} aged out" if ds.aged_out else ""
            print(f"  {ds.dataset}: {len(ds.records)} record(s){aged}", file=out)
            for rec in ds.records:
                mark = "  [DISPUTED]" if rec.disputed else ""
                if rec.HasField("dispute"):
                    d = rec.dispute
                    mark += f" since {d.filed_on}, due {d.due_on}"
                    if d.outcome == common_pb2.OBJECTION_OUTCOME_UNDETERMINED:
                        mark += f", undetermined: {d.department_note}"
                if rec.statement:
                    mark += f"  [statement: {rec.statement}]"
                cells = ", ".join(f"{k}={field_text(rec.fields[k])}" for k in sorted(rec.fields))
                print(f"    - #{rec.record_id} {cells}{mark}", file=out)
        if section.withheld:
            print("  withheld:", file=out)
            # One line per dataset and reason: a reader wants why, not a field list first.
            groups: dict[tuple[str, query_pb2.WithholdReason.ValueType, str], list[str]] = {}
            for w in section.withheld:
                groups.setdefault((w.dataset, w.reason, w.detail), []).append(w.field)
            for (dataset, reason, detail), fields in groups.items():
                why = _REASON.get(reason, "?") + (f" ({detail})" if detail else "")
                print(f"    {dataset}: {', '.join(fields)}: {why}", file=out)
    if response.receipt.leaf_hash:
        print(
            f"\naudit receipt: {response.receipt.origin} #{response.receipt.log_index} "
            f"leaf {response.receipt.leaf_hash.hex()[:16]}...",
            file=out,
        )


if __name__ == "__main__":
    raise SystemExit(main())
