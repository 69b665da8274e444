"""The subject's own report (``credit-query --self``), laid out as the PBoC personal report.

Three calls on one channel, all as the self-service credential (whose token attests the
subject):

1. ``QueryService.Query`` with purpose ``self_query``: the subject's records, each with its
   objection mark (disputed since, due by) and the subject's own statement (本人声明);
2. ``ObjectionService.List`` (open only): the objections still awaiting a department's answer,
   with their 20-day deadlines (Decree 631 Art. 25); a gateway without that service is said
   to have none available, never silently left out;
3. ``SubjectService.ListQueryRecords``, every page: who queried the subject, when, why, free or
   paid, which datasets, and the audit index that ``AuditService`` proves (Art. 22).

:func:`gather` makes the calls, :func:`render_report` prints, :func:`report_json` is ``--json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from gateway.cli.connect import QueryClient
from gateway.cli.console import field_text, yuan
from protos.credit.v1 import (
    common_pb2,
    objections_pb2,
    objections_pb2_grpc,
    query_pb2,
    subject_pb2,
)

__all__ = ["SelfReport", "gather", "render_report", "report_json"]

#: Query records fetched per call; a subject with more is read page by page.
_PAGE = 200


@dataclass
class SelfReport:
    """What the report shows."""

    answer: query_pb2.QueryResponse
    query_records: list[subject_pb2.QueryRecordEntry] = field(default_factory=list)
    open_objections: list[objections_pb2.Objection] = field(default_factory=list)
    #: Why open objections could not be listed ("" when they were).
    objections_unavailable: str = ""


async def _objections(
    client: QueryClient, timeout: float
) -> tuple[list[objections_pb2.Objection], str]:
    # The seam to the objection desk (issue 14 item 1): its List RPC, open ones only.
    stub = objections_pb2_grpc.ObjectionServiceStub(client.channel)
    found: list[objections_pb2.Objection] = []
    token = ""
    try:
        while True:
            page = await stub.List(
                objections_pb2.ListObjectionsRequest(open_only=True, page_token=token),
                timeout=timeout,
                metadata=client.metadata,
            )
            found.extend(page.objections)
            token = page.next_page_token
            if not token:
                return found, ""
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return [], "this gateway does not track objections"
        raise


async def gather(
    client: QueryClient, request: query_pb2.QueryRequest, *, timeout: float
) -> SelfReport:
    """Make the three calls. Raises ``grpc.aio.AioRpcError`` (the query or the query records
    refused); objections unavailable on this gateway are noted, not raised."""
    report = SelfReport(await client.send(request, timeout=timeout))
    report.open_objections, report.objections_unavailable = await _objections(client, timeout)
    token = ""
    while True:
        page = await client.query_records(page_size=_PAGE, page_token=token, timeout=timeout)
        report.query_records.extend(page.records)
        token = page.next_page_token
        if not token:
            return report


def _masked(subject: common_pb2.Subject) -> str:
    # The subject's own report, but a printout travels: the middle of the number is masked.
    sid = subject.id
    return sid[:4] + "*" * max(len(sid) - 8, 0) + sid[-4:] if len(sid) > 8 else sid


_OUTCOME = {
    common_pb2.OBJECTION_OUTCOME_PENDING: "pending",
    common_pb2.OBJECTION_OUTCOME_UNDETERMINED: "undetermined (both views recorded)",
}


def _records(answer: query_pb2.QueryResponse, out: TextIO) -> list[tuple[str, str]]:
    statements: list[tuple[str, str]] = []
    for section in answer.sections:
        shown = [d for d in section.datasets if d.records]
        if not shown:
            continue
        print(f"  [{section.department}]", file=out)
        for ds in shown:
            print(f"    {ds.dataset}: {len(ds.records)} record(s)", file=out)
            for rec in ds.records:
                cells = ", ".join(f"{k}={field_text(rec.fields[k])}" for k in sorted(rec.fields))
                print(f"      - {cells}", file=out)
                if rec.disputed:
                    mark = rec.dispute
                    since = f" since {mark.filed_on}" if mark.filed_on else ""
                    due = f", answer due {mark.due_on}" if mark.due_on else ""
                    state = _OUTCOME.get(mark.outcome, "")
                    print(
                        f"        DISPUTED{since}{due}" + (f" ({state})" if state else ""),
                        file=out,
                    )
                if rec.statement:
                    where = f"{section.department}/{ds.dataset} {rec.record_id}".strip()
                    statements.append((where, rec.statement))
    return statements


def _datasets(entry: subject_pb2.QueryRecordEntry) -> str:
    return ", ".join(f"{d.department}/{d.dataset}" for d in entry.datasets) or "-"


def render_report(report: SelfReport, subject: common_pb2.Subject, out: TextIO) -> None:
    """Write the report for a reader: identity, records with marks, statements, open
    objections with deadlines, query records."""
    answer = report.answer
    kind = "person" if subject.type == common_pb2.SUBJECT_TYPE_PERSON else "enterprise"
    print(f"CREDIT REPORT (本人信用报告) of {kind} {_masked(subject)}", file=out)
    charge = answer.charge
    cost = f"charged {yuan(charge.amount_fen)}" if charge.amount_fen else "free"
    print(f"as of {answer.query_date}; {cost}; audit #{answer.receipt.log_index}", file=out)
    print("\nRECORDS", file=out)
    statements = _records(answer, out)
    if not any(d.records for s in answer.sections for d in s.datasets):
        print("  none", file=out)
    print("\nSTATEMENTS (本人声明)", file=out)
    for where, text in statements:
        print(f"  {where}: {text}", file=out)
    if not statements:
        print("  none", file=out)
    print("\nOPEN OBJECTIONS", file=out)
    if report.objections_unavailable:
        print(f"  not available: {report.objections_unavailable}", file=out)
    elif not report.open_objections:
        print("  none", file=out)
    for o in report.open_objections:
        late = "  OVERDUE" if o.overdue else ""
        print(
            f"  {o.objection_id}: {o.department}/{o.dataset} {o.record_id}, filed {o.filed_on}, "
            f"answer due {o.due_on}{late}",
            file=out,
        )
    print("\nQUERY RECORDS (查询记录)", file=out)
    if not report.query_records:
        print("  none", file=out)
    for q in report.query_records:
        paid = f"paid {yuan(q.charge_fen)}" if q.charge_fen else "free"
        basis = f", legal basis {q.legal_basis}" if q.legal_basis else ""
        print(
            f"  {q.time[:10]}  {q.agency_id}  {q.purpose}  {paid}{basis}  "
            f"[{_datasets(q)}]  audit #{q.log_index}",
            file=out,
        )


def report_json(report: SelfReport) -> dict[str, Any]:
    """The report as one JSON object (``--json``; money in integer fen)."""

    def many(items: Sequence[Any]) -> list[dict[str, Any]]:
        return [json_format.MessageToDict(i) for i in items]

    return {
        "report": json_format.MessageToDict(report.answer),
        "open_objections": many(report.open_objections),
        "objections_unavailable": report.objections_unavailable,
        "query_records": many(report.query_records),
    }
