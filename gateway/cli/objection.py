"""``credit-query objection``: objections (Decree 631 Art. 25) and credit repair, for agencies
(``credit.v1.ObjectionService``).

::

    credit-query objection --demo DIR/demo.json --agency self_service file --person ID \\
        --record pbccrc/personal_loans/7 --grounds "the amount is wrong" \\
        [--evidence scan.pdf ...] [--statement TEXT]
    credit-query objection --demo DIR/demo.json --agency procurement file --enterprise USCC \\
        --record market/administrative_penalties/12 --grounds G --consent-file consent.jwt
    credit-query objection ... repair --enterprise USCC \\
        --record market/administrative_penalties/12 --grounds "penalty performed" \\
        --consent-file consent.jwt
    credit-query objection ... status OBJECTION_ID
    credit-query objection ... list [--person ID | --enterprise USCC] [--open] [--overdue]
    credit-query objection ... statement OBJECTION_ID "本人声明 ..."

A subject files through its own self-service agency; any other agency files for a subject
with the subject's consent token granted to it (``--consent-file``). ``--evidence`` files are
hashed here (SHA-256); only the digests are sent. ``--record`` is
``DEPARTMENT/DATASET/RECORD_ID`` as a query returned it. Connection: ``--demo demo.json
--agency ID``, or ``--gateway HOST:PORT --ca CA --cert CERT --key KEY --token-file JWT``.
Exit status: 0 done; 1 a refusal by the gateway (its code and message on one line); 2 usage
or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from gateway.auth.identity import InsecureDevAuthenticator
from gateway.cli.connect import UsageError, add_connection_options, connect_as
from gateway.cli.console import path_arg
from protos.credit.v1 import common_pb2, objections_pb2, objections_pb2_grpc

__all__ = ["objection_main", "render"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_MEMBERS = {"agency": "with --demo: which demo agency to act as"}
_OUTCOMES = {
    common_pb2.OBJECTION_OUTCOME_PENDING: "pending",
    common_pb2.OBJECTION_OUTCOME_CORRECTED: "corrected",
    common_pb2.OBJECTION_OUTCOME_CONFIRMED: "confirmed",
    common_pb2.OBJECTION_OUTCOME_UNDETERMINED: "undetermined",
    common_pb2.OBJECTION_OUTCOME_REPAIR_APPROVED: "repair approved",
    common_pb2.OBJECTION_OUTCOME_REPAIR_REFUSED: "repair refused",
    common_pb2.OBJECTION_OUTCOME_NO_SUCH_RECORD: "no such record",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-query objection",
        description="Objections (Art. 25) and credit repair: file, follow, add a statement.",
    )
    add_connection_options(p, None, members=_MEMBERS)
    p.add_argument("--json", action="store_true", default=False, help="print JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    filing = sub.add_parser("file", help="file an objection against a record")
    repair = sub.add_parser("repair", help="apply for credit repair of a penalty or list entry")
    for s in (filing, repair):
        who = s.add_mutually_exclusive_group(required=True)
        who.add_argument("--enterprise", metavar="USCC")
        who.add_argument("--person", metavar="ID")
        s.add_argument("--record", required=True, metavar="DEPT/DATASET/RECORD_ID")
        s.add_argument("--grounds", required=True, help="why (free text, no identifiers)")
        s.add_argument(
            "--evidence", type=path_arg, action="append", default=[], help="a file; repeatable"
        )
        s.add_argument("--consent-file", type=path_arg, help="the subject's consent token")
        s.add_argument("--request-id", help="UUID; default a fresh one")
    filing.add_argument("--statement", default="", help="the subject's statement (本人声明)")
    s = sub.add_parser("status", help="one objection")
    s.add_argument("objection_id")
    s = sub.add_parser("list", help="objections this agency filed (a kiosk: its subject's)")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--enterprise", metavar="USCC")
    who.add_argument("--person", metavar="ID")
    s.add_argument("--open", action="store_true", help="only those not yet answered")
    s.add_argument("--overdue", action="store_true", help="only those past their due day")
    s = sub.add_parser("statement", help="attach the subject's statement (empty removes it)")
    s.add_argument("objection_id")
    s.add_argument("text")
    for s in sub.choices.values():
        add_connection_options(s, argparse.SUPPRESS, members=_MEMBERS)
        s.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return p


def _subject(args: argparse.Namespace) -> common_pb2.Subject | None:
    if args.enterprise:
        return common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=args.enterprise)
    if args.person:
        return common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_PERSON, id=args.person)
    return None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _filing(args: argparse.Namespace) -> dict[str, Any]:
    dept, _, rest = args.record.partition("/")
    dataset, _, record_id = rest.partition("/")
    if not dept or not dataset or not record_id:
        raise UsageError("--record must be DEPARTMENT/DATASET/RECORD_ID")
    return {
        "request_id": args.request_id or str(uuid.uuid4()),
        "subject": _subject(args),
        "department": dept,
        "dataset": dataset,
        "record_id": record_id,
        "grounds": args.grounds,
        "evidence_sha256": [_digest(p) for p in args.evidence],
        "consent_token": args.consent_file.read_text(encoding="utf-8").strip()
        if args.consent_file
        else "",
    }


def render(obj: objections_pb2.Objection, out: TextIO) -> None:
    """One objection, readably: what, when due, how it stands."""
    kind = "repair" if obj.kind == common_pb2.OBJECTION_KIND_REPAIR else "objection"
    state = _OUTCOMES.get(obj.outcome, "?")
    if obj.answered_on:
        state += f" on {obj.answered_on}"
    if obj.overdue:
        state += "  OVERDUE"
    print(
        f"{kind} {obj.objection_id}: {obj.department}/{obj.dataset}/{obj.record_id}"
        f" filed {obj.filed_on} by {obj.filed_by}, due {obj.due_on}: {state}"
        + ("" if obj.routed else " (not yet received by the department)"),
        file=out,
    )
    if obj.severity:
        print(f"  severity {obj.severity}, repair allowed from {obj.repair_allowed_from}", file=out)
    if obj.department_note:
        print(f"  department: {obj.department_note}", file=out)
    if obj.statement:
        print(f"  statement: {obj.statement}", file=out)


def _connect(args: argparse.Namespace) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    return connect_as(
        args, group="agencies", flag="agency", dev_header=InsecureDevAuthenticator.HEADER
    )


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    channel, metadata = _connect(args)
    stub = objections_pb2_grpc.ObjectionServiceStub(channel)
    kw: dict[str, Any] = {"metadata": metadata, "timeout": args.timeout}
    pb = objections_pb2
    try:
        cmd = args.command
        results: list[objections_pb2.Objection] = []
        if cmd == "file":
            req = pb.FileObjectionRequest(**_filing(args), statement=args.statement)
            results.append(await stub.File(req, **kw))
        elif cmd == "repair":
            results.append(await stub.ApplyRepair(pb.ApplyRepairRequest(**_filing(args)), **kw))
        elif cmd == "status":
            req_s = pb.ObjectionStatusRequest(objection_id=args.objection_id)
            results.append(await stub.Status(req_s, **kw))
        elif cmd == "statement":
            req_a = pb.AddStatementRequest(objection_id=args.objection_id, statement=args.text)
            results.append(await stub.AddStatement(req_a, **kw))
        else:  # list: every page
            token = ""
            while True:
                req_l = pb.ListObjectionsRequest(
                    subject=_subject(args),
                    open_only=args.open,
                    overdue_only=args.overdue,
                    page_token=token,
                )
                page = await stub.List(req_l, **kw)
                results.extend(page.objections)
                token = page.next_page_token
                if not token:
                    break
        if args.json:
            print(
                json.dumps(
                    [json_format.MessageToDict(r) for r in results], ensure_ascii=False, indent=2
                ),
                file=out,
            )
        else:
            for r in results:
                render(r, out)
            if cmd == "list" and not results:
                print("no objections", file=out)
        return EXIT_OK
    finally:
        await channel.close()


def objection_main(
    argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``credit-query objection`` command; returns the exit status. Never raises for a
    refusal, a bad argument or an unreachable gateway: it prints one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        return asyncio.run(_run(args, out))
    except UsageError as exc:
        print(f"credit-query objection: error: {exc}", file=err)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        print(f"credit-query objection: error: {exc}", file=err)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        print(
            f"credit-query objection: {code.name if code else 'UNKNOWN'}: {exc.details()}",
            file=err,
        )
        return EXIT_USAGE if code == grpc.StatusCode.UNAVAILABLE else EXIT_FAILED
