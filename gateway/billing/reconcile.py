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

The report names bookings by request id (a UUID), top-up reference, agency id
and amounts in fen; never a subject, an officer or any other personal field.
Run it on a stopped gateway's files (or expect queries in flight to show).
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
from gateway.audit.store import open_reader
from gateway.audit.verify import iter_records, verify_log
from gateway.billing.ledger import Entry, LedgerStore
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

    @classmethod
    def parse(cls, value: object) -> Movements | None:
        """From a record's ``movements`` object; None if it is not one."""
        if not isinstance(value, Mapping):
            return None
        amounts = {k: value.get(k, 0) for k in ("reserve", "charge", "release", "refund")}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in amounts.values()):
            return None
        return cls(**amounts)

    def describe(self) -> str:
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
    if kind == "billing":
        if record.get("event") == "top_up":
            ref = record.get("reference")
            return ("top_up", ref) if isinstance(ref, str) and ref else None
        rid = record.get("request_id")
        return ("request", rid) if isinstance(rid, str) and rid else None
    if kind == "query" and isinstance(record.get("billing"), Mapping):
        rid = record.get("request_id")
        return ("request", rid) if isinstance(rid, str) and rid else None
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
    if kind == "query":
        billing = record.get("billing")
        if not isinstance(billing, Mapping) or billing.get("replay"):
            return Movements()
        reserved = billing.get("reserved_fen", 0)
        charged = billing.get("charged_fen", 0)
        if not isinstance(reserved, int) or not isinstance(charged, int):
            return Movements()
        return Movements(reserve=reserved, charge=charged, release=reserved - charged)
    if kind != "billing":
        return Movements()
    parsed = Movements.parse(record.get("movements"))
    if parsed is not None:
        return parsed
    amount = record.get("amount_fen", 0)
    event = record.get("event")
    if not isinstance(amount, int) or event not in ("reserve", "charge", "release", "refund"):
        return Movements()
    return Movements(**{str(event): amount})


@dataclass
class ReconcileReport:
    """The outcome: counts, totals and the differences (empty when the stories agree)."""

    requests: int = 0
    top_ups: int = 0
    records: int = 0
    charged_fen: int = 0
    refunded_fen: int = 0
    differences: list[str] = field(default_factory=list)


def _times_charged(entries: Iterable[Entry]) -> int:
    # One settlement books all its charge entries at one instant; a refund
    # books its adjustments at one instant.
    charges = {e.at for e in entries if e.kind == "charge"}
    refunds = {e.at for e in entries if e.kind == "adjustment"}
    return len(charges) - len(refunds)


def reconcile(ledger: LedgerStore, records: Iterable[Mapping[str, Any]]) -> ReconcileReport:
    """Compare ``ledger`` with the audit ``records`` (decoded, in log order).

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
            amount = record.get("amount_fen", 0)
            agency = record.get("agency_id", "")
            audited_top_ups[ref].append(
                (
                    agency if isinstance(agency, str) else "",
                    amount if isinstance(amount, int) else 0,
                )
            )
            continue
        moved = record_movements(record)
        audited[ref] = audited[ref] + moved
        audited_charges[ref] += (moved.charge > 0) - (moved.refund > 0)

    by_request: dict[str, list[Entry]] = defaultdict(list)
    top_ups: dict[str, Entry] = {}
    diffs = report.differences
    for e in ledger.entries():
        if e.request_id:
            by_request[e.request_id].append(e)
        elif e.kind == "top_up":
            top_ups[e.reference] = e
        elif e.kind == "adjustment":
            diffs.append(f"adjustment {e.reference}: {e.amount_fen} fen, no audit record")
    for rec in ledger.interrupted():
        diffs.append(f"request {rec.request_id}: still reserved ({rec.reserved_fen} fen held)")

    report.requests = len(by_request)
    for rid in sorted(by_request.keys() | audited.keys()):
        entries = by_request.get(rid, [])
        booked = ledger_movements(entries)
        on_record = audited.get(rid, Movements())
        report.charged_fen += booked.charge
        report.refunded_fen += booked.refund
        if booked != on_record:
            diffs.append(
                f"request {rid}: ledger {booked.describe()}; audit log {on_record.describe()}"
            )
        times = max(_times_charged(entries), audited_charges.get(rid, 0))
        if times > 1:
            diffs.append(f"request {rid}: charged {times} times")

    report.top_ups = len(top_ups)
    for ref in sorted(top_ups.keys() | audited_top_ups.keys()):
        entry = top_ups.get(ref)
        seen = audited_top_ups.get(ref, [])
        if entry is None:
            diffs.append(f"top-up {ref}: on the audit log, not in the ledger")
        elif not seen:
            diffs.append(
                f"top-up {ref}: {entry.amount_fen} fen to {entry.account_id}, no audit record"
            )
        elif len(seen) > 1:
            diffs.append(f"top-up {ref}: {len(seen)} audit records")
        elif seen[0] != (entry.account_id, entry.amount_fen):
            diffs.append(
                f"top-up {ref}: ledger {entry.amount_fen} fen to {entry.account_id};"
                f" audit log {seen[0][1]} fen to {seen[0][0]}"
            )
    return report


def read_records(audit_log: Path, key: Path | None = None) -> list[dict[str, Any]]:
    """Every record of the audit log at ``audit_log`` (a SQLite file or an
    export folder), read-only. With ``key`` (a verifier key file) the log is
    verified first, and only records covered by a signed checkpoint are
    returned. Raises AuditError (StorageError, LogIntegrityError, NoteError)."""
    reader = open_reader(audit_log)
    try:
        if key is None:
            return [r for _, r in iter_records(reader)]
        records: list[tuple[int, dict[str, Any]]] = []
        report = verify_log(
            reader, load_verifiers(key), on_record=lambda i, r: records.append((i, r))
        )
        return [r for i, r in records if i < report.verified_size]
    finally:
        reader.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``reconcile`` besides ``--ledger``."""
    parser.add_argument(
        "--audit-log", type=Path, required=True, help="the audit log (SQLite file or export folder)"
    )
    parser.add_argument(
        "--key",
        type=Path,
        help="verifier key file: verify the log first and use only signed records",
    )


def run(
    ledger: LedgerStore,
    audit_log: Path,
    key: Path | None,
    *,
    out: TextIO,
    err: TextIO,
    as_json: bool = False,
) -> int:
    """Reconcile an open ``ledger`` with the log at ``audit_log``; print the
    differences and a summary to ``out`` (``as_json``: one JSON object, amounts
    in integer fen). Returns 0, 1 (differences) or 2 (a file cannot be read)."""
    try:
        records = read_records(audit_log, key)
    except (AuditError, OSError) as exc:
        print(f"error: audit log: {exc}", file=err)
        return 2
    try:
        report = reconcile(ledger, records)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=err)
        return 2
    if as_json:
        print(json.dumps(asdict(report), indent=2), file=out)
        return 1 if report.differences else 0
    for line in report.differences:
        print(line, file=out)
    summary = (
        f"{report.requests} requests, {report.top_ups} top-ups, {report.records} billing records;"
        f" charged {report.charged_fen} fen, refunded {report.refunded_fen} fen"
    )
    if report.differences:
        print(f"{len(report.differences)} differences; {summary}", file=out)
        return 1
    print(f"ledger and audit log agree: 0 differences; {summary}", file=out)
    return 0
