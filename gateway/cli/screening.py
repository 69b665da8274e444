"""Screening commands: ``credit-query screen`` (agencies) and ``credit-gateway screening
stats`` (the coordinating office).

    credit-query screen --demo var/demo/demo.json --agency procurement \\
        --file bidders.csv --scenario government_procurement --purpose government_procurement
    credit-query screen ... --file bidders.csv --format json --out results.json
    credit-gateway screening stats --audit-log var/demo/audit/audit.sqlite \\
        --key var/demo/audit/log.vkey --from 2026-11-01 --to 2026-11-30

``bidders.csv``: one subject per row, a header naming an ``id`` column (a unified social
credit code or a resident identity number) and optionally a ``type`` column
(``enterprise`` or ``person``; guessed from the identifier's check character otherwise).
One subject (without ``--file``: ``--enterprise`` or ``--person``) is one ``Screen`` call;
a file is one ``ScreenBatch`` call whose results are written as they arrive, in input
order at the end, with a progress line on standard error. Output: CSV (one row per subject
and list) or JSON; money in integer fen. Exit status: 0 every subject answered, 1 refused
(the status line is printed) or some subject refused in a batch, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from gateway.cli.connect import UsageError, agency_connection, open_channel
from gateway.cli.console import console_script, path_arg
from gateway.domain.identifiers import IdentifierError, validate_subject
from gateway.screening.stats import BEIJING
from protos.credit.v1 import common_pb2, query_pb2, screening_pb2, screening_pb2_grpc

__all__ = ["screen_main", "screening_main"]

_MAX_BATCH = 10_000
_STATE = {
    screening_pb2.LIST_STATE_ON_LIST: "on_list",
    screening_pb2.LIST_STATE_NOT_ON_LIST: "not_on_list",
    screening_pb2.LIST_STATE_UNKNOWN: "unknown",
    screening_pb2.LIST_STATE_WITHHELD: "withheld",
}
_CSV_COLUMNS = (
    "row",
    "id",
    "status",
    "list",
    "kind",
    "state",
    "since",
    "until",
    "listing_authority",
    "basis_document",
    "disputed",
    "measures",
    "binding",
    "charge_fen",
    "request_id",
)


def _screen_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-query screen",
        description="Screen subjects against the reward and punishment lists.",
    )
    conn = p.add_argument_group("connection")
    conn.add_argument("--demo", type=path_arg, help="demo.json written by 'demo --serve'")
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
        "--timeout", type=float, default=600.0, help="deadline in seconds (default 600)"
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--file", type=path_arg, help="CSV of subjects (an 'id' column)")
    who.add_argument("--enterprise", metavar="USCC", help="one unified social credit code")
    who.add_argument("--person", metavar="ID", help="one resident identity number")
    p.add_argument("--scenario", required=True, help="scenario (policies/measures.toml)")
    p.add_argument("--purpose", required=True, help="purpose code (policies/purposes.toml)")
    p.add_argument("--mode", choices=("free", "paid"), default="free")
    p.add_argument("--case-reference", default="")
    p.add_argument("--officer-id", default="")
    p.add_argument(
        "--batch-id", help="UUID; the same id retried books nothing twice (default: fresh)"
    )
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="output format")
    p.add_argument("--out", type=path_arg, help="write the results here (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _subject(raw_id: str, raw_type: str, where: str) -> common_pb2.Subject:
    text = raw_id.strip()
    kind = raw_type.strip().lower()
    kinds = [kind] if kind else ["enterprise", "person"]
    for k in kinds:
        if k not in ("enterprise", "person"):
            raise UsageError(f"{where}: type must be enterprise or person")
        try:
            value = validate_subject(k, text)
        except IdentifierError:
            continue
        code = (
            common_pb2.SUBJECT_TYPE_ENTERPRISE
            if k == "enterprise"
            else common_pb2.SUBJECT_TYPE_PERSON
        )
        return common_pb2.Subject(type=code, id=value)
    # Sent as given: the gateway refuses it for this subject only, and says why.
    guess = (
        common_pb2.SUBJECT_TYPE_PERSON if kind == "person" else common_pb2.SUBJECT_TYPE_ENTERPRISE
    )
    return common_pb2.Subject(type=guess, id=text)


def read_subjects(path: Path) -> list[common_pb2.Subject]:
    """The subjects of a CSV file with an ``id`` column (and optional ``type``).
    Raises UsageError (no id column, empty, too many rows), OSError."""
    text = path.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise UsageError(f"{path}: no subjects")
    if "id" not in rows[0]:
        raise UsageError(f"{path}: needs a header with an 'id' column")
    if len(rows) > _MAX_BATCH:
        raise UsageError(f"{path}: {len(rows)} subjects; at most {_MAX_BATCH} per batch")
    return [
        _subject(row.get("id") or "", row.get("type") or "", f"{path}:{n + 2}")
        for n, row in enumerate(rows)
    ]


def _rows(index: int, subject_id: str, item: screening_pb2.ScreenBatchItem) -> list[list[str]]:
    if item.WhichOneof("outcome") == "error":
        e = item.error
        return [[str(index + 1), subject_id, f"{e.reason}: {e.message}"] + [""] * 12]
    r = item.result
    status = "complete" if r.complete else "incomplete"
    out = []
    for s in r.lists:
        out.append(
            [
                str(index + 1),
                subject_id,
                status,
                s.list,
                "red" if s.kind == screening_pb2.LIST_KIND_RED else "black",
                _STATE.get(s.state, "unspecified"),
                s.since,
                s.until,
                s.listing_authority,
                s.basis_document,
                "yes" if s.disputed else "",
                "; ".join(m.id for m in s.measures),
                "yes" if any(m.binding for m in s.measures) else "",
                str(r.charge.amount_fen),
                r.request_id,
            ]
        )
    return out


def write_results(
    subjects: list[common_pb2.Subject],
    items: list[screening_pb2.ScreenBatchItem],
    out: TextIO,
    fmt: str,
) -> None:
    """Write ``items`` in input order as CSV (one row per subject and list) or JSON."""
    ordered = sorted(items, key=lambda i: i.index)
    if fmt == "json":
        doc = [
            {"row": i.index + 1, "id": subjects[i.index].id}
            | json_format.MessageToDict(i, preserving_proto_field_name=True)
            for i in ordered
        ]
        json.dump(doc, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for i in ordered:
        writer.writerows(_rows(i.index, subjects[i.index].id, i))


def _progress(done: int, total: int, err: TextIO, *, final: bool = False) -> None:
    width = 30
    filled = width * done // total
    end = "\n" if final else "\r"
    err.write(f"screened {done}/{total} [{'#' * filled}{'.' * (width - filled)}]{end}")
    err.flush()


async def _run_screen(args: argparse.Namespace, conn: dict[str, Any]) -> int:
    address = conn.pop("address")
    dev = ("x-dev-agency-id", conn.pop("dev_agency")) if "dev_agency" in conn else None
    channel, metadata = open_channel(address, dev_header=dev, **conn)
    stub = screening_pb2_grpc.ScreeningServiceStub(channel)
    mode = query_pb2.QUERY_MODE_PAID if args.mode == "paid" else query_pb2.QUERY_MODE_FREE
    if args.file is not None:
        subjects = read_subjects(args.file)
    else:
        raw, kind = (args.enterprise, "enterprise") if args.enterprise else (args.person, "person")
        subjects = [_subject(raw, kind, "subject")]
    items: list[screening_pb2.ScreenBatchItem] = []
    err = sys.stderr
    try:
        async with channel:
            request = screening_pb2.ScreenBatchRequest(
                batch_id=args.batch_id or str(uuid.uuid4()),
                scenario=args.scenario,
                purpose=args.purpose,
                mode=mode,
                case_reference=args.case_reference,
                officer_id=args.officer_id,
                subjects=subjects,
            )
            call = stub.ScreenBatch(request, metadata=metadata, timeout=args.timeout)
            step = max(1, len(subjects) // 100)
            async for item in call:
                items.append(item)
                if not args.quiet and (item.done % step == 0 or item.done == item.total):
                    _progress(item.done, item.total, err, final=item.done == item.total)
    except grpc.aio.AioRpcError as exc:
        print(f"credit-query screen: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.out is not None:
        with args.out.open("w", encoding="utf-8", newline="") as f:
            write_results(subjects, items, f, args.format)
    else:
        write_results(subjects, items, sys.stdout, args.format)
    refused = sum(1 for i in items if i.WhichOneof("outcome") == "error")
    if refused:
        print(f"credit-query screen: {refused} subjects refused", file=sys.stderr)
    return 1 if refused or len(items) != len(subjects) else 0


@console_script
def screen_main(argv: list[str] | None = None) -> int:
    """``credit-query screen``: returns the exit status (module docstring)."""
    args = _screen_parser().parse_args(argv)
    try:
        conn = agency_connection(args)
        return asyncio.run(_run_screen(args, conn))
    except (UsageError, OSError, ValueError, KeyError) as exc:
        print(f"credit-query screen: {exc}", file=sys.stderr)
        return 2


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _stats_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway screening",
        description="Screening reports for the coordinating office.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "stats", help="screens per list, scenario and agency, and feedback, for a period"
    )
    s.add_argument("--audit-log", type=path_arg, required=True, help="audit.sqlite or an export")
    s.add_argument("--key", type=path_arg, required=True, help="the log's verifier key file")
    today = dt.datetime.now(BEIJING).date()
    s.add_argument("--from", dest="start", type=_date, default=today.replace(day=1))
    s.add_argument("--to", dest="end", type=_date, default=today)
    s.add_argument("--json", action="store_true", help="print the counts as JSON")
    return p


def render_stats(doc: dict[str, Any], out: TextIO) -> None:
    """The counts of :meth:`ScreeningStats.to_json` as text tables."""
    out.write(f"Screening {doc['from']} .. {doc['to']} (Beijing dates)\n")
    out.write(f"screens {doc['screens']}, refused {doc['refused']}\n\n")
    states = ("on_list", "not_on_list", "unknown", "withheld")
    out.write(f"{'list':<24}" + "".join(f"{s:>13}" for s in states) + "\n")
    for name, counts in doc["lists"].items():
        out.write(f"{name:<24}" + "".join(f"{counts.get(s, 0):>13}" for s in states) + "\n")
    out.write(f"\n{'scenario':<24}{'screens':>13}{'hits':>13}\n")
    for name, counts in doc["scenarios"].items():
        out.write(f"{name:<24}{counts.get('screens', 0):>13}{counts.get('hits', 0):>13}\n")
    cols = ("screens", "hits", "refused", "feedback", "applied")
    out.write(f"\n{'agency':<24}" + "".join(f"{c:>10}" for c in cols) + "\n")
    for name, counts in doc["agencies"].items():
        out.write(f"{name:<24}" + "".join(f"{counts.get(c, 0):>10}" for c in cols) + "\n")
    if doc["feedback"]:
        out.write(f"\n{'feedback: list/measure':<40}{'applied':>10}{'not':>10}\n")
        for f in doc["feedback"]:
            label = f"{f['list']}/{f['measure']}"
            out.write(f"{label:<40}{f.get('applied', 0):>10}{f.get('not_applied', 0):>10}\n")
    if doc["unsigned"]:
        out.write(
            f"\nnote: {doc['unsigned']} records after the last signed checkpoint not counted\n"
        )


def screening_main(argv: list[str]) -> int:
    """``credit-gateway screening ...``: 0 done, 2 usage or the log cannot be verified."""
    from gateway.audit.errors import AuditError
    from gateway.screening.stats import screening_stats

    args = _stats_parser().parse_args(argv)
    if args.start > args.end:
        print("credit-gateway screening: --from is after --to", file=sys.stderr)
        return 2
    try:
        stats = screening_stats(args.audit_log, args.key, start=args.start, end=args.end)
    except (AuditError, OSError) as exc:
        print(f"credit-gateway screening: {exc}", file=sys.stderr)
        return 2
    doc = stats.to_json()
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        render_stats(doc, sys.stdout)
    return 0
