"""Do the ledger and the audit log tell the same story? (``credit-gateway billing reconcile``)

Every ledger movement must be on the signed record, and every charge on the
record must be in the ledger. The two are compared per booking:

* a **request id**: the ledger's entries of that request, summed by kind
  (``reserve``, ``charge``, ``release``, and ``adjustment`` = refund), against
  the sum of what its audit records say (:func:`record_movements`): a query
  record's ``billing`` block stands for the reservation and the settlement
  (``reserved_fen`` reserved; ``charged_fen`` charged; the rest released), a
  ``billing`` event record for what its ``movements`` name (a release, a refund,
  and the reservation or settlement no query record carries);
* a **top-up reference**: the ledger's ``top_up`` entry against the ``billing``
  record with ``event = "top_up"`` and that reference.

Besides, no request id may be charged more than once (charges not refunded),
and no reservation may be left open: a stopped gateway has none (start-up
recovery releases them), so one found is a query in flight, or a gateway that
has not restarted since it stopped.

**Pending is not a difference.** The ledger marks every movement in the same
transaction that books it and clears the mark once the audit record carrying it
is durable. A booking still marked is owed to the record and known to be: a
query in flight on a running gateway, or, after a crash, a booking that start-up
recovery records (and refunds if nothing was disclosed) at the next start.
Those bookings are reported as *pending*, apart from the differences, so
reconcile can run beside a live gateway; ``--strict`` counts them as
differences (for a stopped and restarted gateway, which has none).

The report names bookings by request id (a UUID), top-up reference, agency id
and amounts in fen; never a subject, an officer or any other personal field.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gateway.audit.errors import AuditError
from gateway.audit.note import load_verifiers
from gateway.audit.schema import BILLED_KINDS, BillingRecord, QueryRecord
from gateway.audit.store import open_reader
from gateway.audit.verify import iter_records, verify_log
from gateway.billing.ledger import Entry, LedgerStore
from gateway.cli.console import path_arg
from gateway.errors import GatewayError

__all__ = [
    "Movements",
    "ReconcileReport",
    "add_arguments",
    "ledger_movements",
    "read_records",
    "reconcile",
    "record_key",
    "record_movements",
    "run",
]

#: Ledger entry kind -> the movement it is (a request's adjustment is its refund).
_KIND = {"reserve": "reserve", "charge": "charge", "release": "release", "adjustment": "refund"}


@dataclass(frozen=True, slots=True)
class Movements:
    """Amounts in fen moved for one request id, by kind."""

    reserve: int = 0
    charge: int = 0
    release: int = 0
    refund: int = 0

    def __add__(self, other: Movements) -> Movements:
        return Movements(
            self.reserve + other.reserve,
            self.charge + other.charge,
            self.release + other.release,
            self.refund + other.refund,
        )

    def __sub__(self, other: Movements) -> Movements:
        return Movements(
            self.reserve - other.reserve,
            self.charge - other.charge,
            self.release - other.release,
            self.refund - other.refund,
        )

    def __bool__(self) -> bool:
        return any(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        """The non-zero amounts, e.g. ``{"reserve": 300, "release": 300}``
        (the ``movements`` field of a billing audit record)."""
        d = {
            "reserve": self.reserve,
            "charge": self.charge,
            "release": self.release,
            "refund": self.refund,
        }
        return {k: v for k, v in d.items() if v}

    def describe(self) -> str:
        """All four amounts in one line for a report, e.g. ``"reserve 300, ... refund 0 fen"``."""
        return (
            f"reserve {self.reserve}, charge {self.charge}, release {self.release},"
            f" refund {self.refund} fen"
        )


def ledger_movements(entries: Iterable[Entry]) -> Movements:
    """Sum of the request entries ``entries`` by kind (top-ups are not request movements)."""
    sums: dict[str, int] = defaultdict(int)
    for e in entries:
        kind = _KIND.get(e.kind)
        if kind is not None:
            sums[kind] += e.amount_fen
    return Movements(**sums)


def record_key(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """``("request", request_id)`` or ``("top_up", reference)`` for an audit
    record about a booking, or None for any other record."""
    kind = record.get("kind")
    if kind == BillingRecord.KIND:
        event = BillingRecord.from_json(record)
        if event.event == "top_up":
            return ("top_up", event.reference) if event.reference else None
        return ("request", event.request_id) if event.request_id else None
    if kind in BILLED_KINDS:  # a screen's billing block reads as a query's
        query = QueryRecord.from_json(record)
        if query.billing is not None and query.request_id:
            return ("request", query.request_id)
    return None


def record_movements(record: Mapping[str, Any]) -> Movements:
    """What one audit record says was moved for its request id.

    A query record with a ``billing`` block, unless it is a replay (which
    books nothing): ``reserved_fen`` reserved, ``charged_fen`` charged and the
    difference released. A ``billing`` event: its ``movements``; a record
    without them (written before they existed) counts ``amount_fen`` under
    its ``event``. Anything else: nothing.
    """
    kind = record.get("kind")
    if kind in BILLED_KINDS:
        billing = QueryRecord.from_json(record).billing
        if billing is None or billing.replay:
            return Movements()
        reserved, charged = billing.reserved_fen or 0, billing.charged_fen or 0
        return Movements(reserve=reserved, charge=charged, release=reserved - charged)
    if kind != BillingRecord.KIND:
        return Movements()
    event = BillingRecord.from_json(record)
    if event.movements is not None:
        return Movements(**event.movements)
    if event.event not in ("reserve", "charge", "release", "refund"):
        return Movements()
    return Movements(**{event.event: event.amount_fen})


@dataclass
class ReconcileReport:
    """The outcome: counts, totals and the differences (empty when the stories agree)."""

    requests: int = 0
    top_ups: int = 0
    records: int = 0
    charged_fen: int = 0
    refunded_fen: int = 0
    differences: list[str] = field(default_factory=list)
    #: Bookings the ledger itself marks as not yet on the record (see the module doc).
    pending: list[str] = field(default_factory=list)


def _times_charged(entries: Iterable[Entry]) -> int:
    # One settlement books all its charge entries at one instant; a refund
    # books its adjustments at one instant.
    charges = {e.at for e in entries if e.kind == "charge"}
    refunds = {e.at for e in entries if e.kind == "adjustment"}
    return len(charges) - len(refunds)


def reconcile(
    ledger: LedgerStore,
    records: Iterable[Mapping[str, Any]],
    unsigned: Iterable[Mapping[str, Any]] = (),
) -> ReconcileReport:
    """Compare ``ledger`` with the audit ``records`` (decoded, in log order).

    ``unsigned``: records past the last signed checkpoint, which are not taken
    as evidence; a booking they name is reported as pending ("recorded, not yet
    signed") rather than as a difference.

    Raises LedgerError if the ledger cannot be read.
    """
    report = ReconcileReport()
    audited: dict[str, Movements] = defaultdict(Movements)
    audited_charges: dict[str, int] = defaultdict(int)
    audited_top_ups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for record in records:
        key = record_key(record)
        if key is None:
            continue
        report.records += 1
        kind, ref = key
        if kind == "top_up":
            top_up = BillingRecord.from_json(record)
            audited_top_ups[ref].append((top_up.agency_id, top_up.amount_fen))
            continue
        moved = record_movements(record)
        audited[ref] = audited[ref] + moved
        audited_charges[ref] += (moved.charge > 0) - (moved.refund > 0)

    by_request: dict[str, list[Entry]] = defaultdict(list)
    top_ups: dict[str, Entry] = {}
    marked: set[tuple[str, str]] = set(ledger.unaudited())
    marked.update(k for k in map(record_key, unsigned) if k is not None)
    differences = report.differences

    def differ(kind: str, ref: str, text: str) -> None:
        (report.pending if (kind, ref) in marked else differences).append(text)

    for e in ledger.entries():
        if e.request_id:
            by_request[e.request_id].append(e)
        elif e.kind == "top_up":
            top_ups[e.reference] = e
        elif e.kind == "adjustment":
            differences.append(f"adjustment {e.reference}: {e.amount_fen} fen, no audit record")
    for rec in ledger.interrupted():
        differ(
            "request",
            rec.request_id,
            f"request {rec.request_id}: still reserved ({rec.reserved_fen} fen held)",
        )

    report.requests = len(by_request)
    for rid in sorted(by_request.keys() | audited.keys()):
        entries = by_request.get(rid, [])
        booked = ledger_movements(entries)
        on_record = audited.get(rid, Movements())
        report.charged_fen += booked.charge
        report.refunded_fen += booked.refund
        if booked != on_record:
            differ(
                "request",
                rid,
                f"request {rid}: ledger {booked.describe()}; audit log {on_record.describe()}",
            )
        times = max(_times_charged(entries), audited_charges.get(rid, 0))
        if times > 1:
            differences.append(f"request {rid}: charged {times} times")

    report.top_ups = len(top_ups)
    for ref in sorted(top_ups.keys() | audited_top_ups.keys()):
        entry = top_ups.get(ref)
        seen = audited_top_ups.get(ref, [])
        if entry is None:
            differences.append(f"top-up {ref}: on the audit log, not in the ledger")
        elif not seen:
            differ(
                "top_up",
                ref,
                f"top-up {ref}: {entry.amount_fen} fen to {entry.account_id}, no audit record",
            )
        elif len(seen) > 1:
            differences.append(f"top-up {ref}: {len(seen)} audit records")
        elif seen[0] != (entry.account_id, entry.amount_fen):
            differences.append(
                f"top-up {ref}: ledger {entry.amount_fen} fen to {entry.account_id};"
                f" audit log {seen[0][1]} fen to {seen[0][0]}"
            )
    return report


def read_records(
    audit_log: Path, key: Path | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records of the audit log at ``audit_log`` (a SQLite file or an
    export folder), read-only, as ``(signed, unsigned)``. With ``key`` (a
    verifier key file) the log is verified first: ``signed`` holds the records
    a signed checkpoint covers, ``unsigned`` the younger tail (a live log has
    one for up to a second). Without ``key`` every record is in ``signed``,
    unverified. Raises AuditError (StorageError, LogIntegrityError, NoteError)."""
    reader = open_reader(audit_log)
    try:
        if key is None:
            return [r for _, r in iter_records(reader)], []
        records: list[tuple[int, dict[str, Any]]] = []
        report = verify_log(
            reader,
            load_verifiers(key),
            on_record=lambda i, r: records.append((i, r)),
            allow_unsigned_tail=True,
        )
        signed = [r for i, r in records if i < report.verified_size]
        return signed, [r for i, r in records if i >= report.verified_size]
    finally:
        reader.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reconcile`` besides ``--ledger``."""
    parser.add_argument(
        "--audit-log",
        type=path_arg,
        required=True,
        help="the audit log (SQLite file or export folder)",
    )
    parser.add_argument(
        "--key",
        type=path_arg,
        help="verifier key file: verify the log first and use only signed records",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count bookings still marked as not yet on the record (pending) as differences",
    )


def run(
    ledger: LedgerStore,
    audit_log: Path,
    key: Path | None,
    *,
    out: TextIO,
    err: TextIO,
    as_json: bool = False,
    strict: bool = False,
) -> int:
    """Reconcile an open ``ledger`` with the log at ``audit_log``; print the
        differences and a summary to ``out`` (``as_json``: one JSON object, amounts
        in integer fen). Returns 0, 1 (differences; with ``strict``, pending bookings
    too) or 2 (a file cannot be read)."""
    try:
        records, unsigned = read_records(audit_log, key)
    except (AuditError, OSError) as exc:
        print(f"error: audit log: {exc}", file=err)
        return 2
    try:
        report = reconcile(ledger, records, unsigned)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=err)
        return 2
    if strict:
        report.differences += report.pending
        report.pending = []
    failed = bool(report.differences)
    if as_json:
        print(json.dumps(asdict(report), indent=2), file=out)
        return 1 if failed else 0
    for line in report.differences:
        print(line, file=out)
    for line in report.pending:
        print(f"pending: {line}", file=out)
    summary = (
        f"{report.requests} requests, {report.top_ups} top-ups, {report.records} billing records;"
        f" charged {report.charged_fen} fen, refunded {report.refunded_fen} fen"
    )
    if report.pending:
        summary += (
            f"; {len(report.pending)} pending (marked in the ledger as not yet on the record:"
            " in flight, or recorded at the gateway's next start)"
        )
    if failed:
        print(f"{len(report.differences)} differences; {summary}", file=out)
        return 1
    print(f"ledger and audit log agree: 0 differences; {summary}", file=out)
    return 0
