"""CPU per query of the audit record and of the query path, in one process, no network.

    python -m bench.record_bench [--runs 7] [--n 1500]

Two measures that the shared machine's noise hides in bench.overhead (the gateway's CPU
per query moves by more than they change from run to run), taken as process CPU time
(``time.process_time``), medians of ``--runs``:

* ``QueryAuditor.append_query`` for an answered query (billing block, decision's fields),
  a one-department and a seven-department answer of realistic size, the record encoded as
  the log encodes it (the log's I/O is bench.audit_bench's);
* ``QueryService.answer`` (the real validator, catalog decider and auditor; departments
  absent, so their sections come back unavailable): answered with plain free text,
  answered with digits in the case reference, refused by the rate limiter after
  validation, and answered with three free texts holding digits (the joined-identifier
  screening).

Not a test: nothing here asserts a time. Run it on two commits for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from gateway.api.query import QueryService
from gateway.audit.auditor import QueryAuditor
from gateway.audit.records import encode_record
from gateway.auth.identity import Caller
from gateway.domain.catalog import load_catalog
from gateway.domain.purposes import load_purposes
from gateway.errors import RateLimitedError
from gateway.pipeline.decision import CatalogDecider
from gateway.pipeline.validation import Validator, ValidQuery
from gateway.runtime.metrics import Metrics
from protos.credit.v1 import common_pb2, query_pb2

SUBJECT = "91350200MA2YJ1XR9G"
CALLER = Caller("ndrc", "government", cert_thumbprint="ab" * 32)


class _Log:
    """The audit log's seam, in memory: each record encoded as the log encodes it."""

    available = True

    def __init__(self) -> None:
        self.n = 0

    async def append(self, record: Any) -> Any:
        encode_record(record, seq=self.n)
        self.n += 1
        return SimpleNamespace(origin="bench", index=self.n, leaf_hash=b"h")


class _Limiter:
    refuse = False

    def admit(
        self, agency: str, purpose: str, *, subject_key: str | None, case_reference: bool
    ) -> None:
        if self.refuse:
            raise RateLimitedError(agency, "rate", "bench", retry_after_s=1, quota=1)


class _Refused(Exception):
    pass


class _Context:
    def time_remaining(self) -> float:
        return 5.0

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort_with_status(self, status: object) -> None:
        raise _Refused


class _Auth:
    def authenticate(self, context: object) -> Caller:
        return CALLER


def _answer(departments: int, records: int, rid: str) -> tuple[query_pb2.QueryResponse, Any]:
    """A response of ``departments`` sections, two datasets each with ``records`` records
    of six text fields; and the decision's fields for it."""
    r = query_pb2.QueryResponse(
        request_id=rid, policy_version="7", catalog_version="c3", query_date="2026-12-01"
    )
    fields = ("name", "status", "rating", "amount", "date", "note")
    allowed: dict[str, dict[str, tuple[str, ...]]] = {}
    for d in range(departments):
        s = r.sections.add(department=f"dept{d}", status=1, latency_ms=3)
        allowed[f"dept{d}"] = {}
        for ds in range(2):
            out = s.datasets.add(dataset=f"ds{ds}")
            allowed[f"dept{d}"][f"ds{ds}"] = fields
            for i in range(records):
                rec = out.records.add(record_id=f"r{i}")
                for f in fields:
                    rec.fields[f].text = "某某有限公司信用记录"
        s.withheld.add(dataset="ds9", field="x", reason=2)
    return r, allowed


def _request(case: str = "", party: str = "") -> query_pb2.QueryRequest:
    r = query_pb2.QueryRequest(
        request_id=str(uuid.uuid4()),
        purpose="administrative_licensing",
        mode=query_pb2.QUERY_MODE_FREE,
        officer_id="officer 7",
        case_reference=case,
        represented_party=party,
    )
    r.subject.type = common_pb2.SUBJECT_TYPE_ENTERPRISE
    r.subject.id = SUBJECT
    r.datasets.add(department="market", dataset="registration")
    r.datasets.add(department="market", dataset="administrative_penalties")
    return r


async def _median_us(
    runs: int, n: int, make: Callable[[], Callable[[], Awaitable[object]]]
) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        calls = [make() for _ in range(n)]
        t = time.process_time()
        for call in calls:
            await call()
        samples.append((time.process_time() - t) / n * 1e6)
    return statistics.median(samples), min(samples)


async def _main(runs: int, n: int) -> None:
    auditor = QueryAuditor(_Log(), b"k" * 32, gateway_origin="bench")  # type: ignore[arg-type]
    rid = str(uuid.uuid4())
    request = _request()
    request.request_id = rid
    query = ValidQuery(rid, "enterprise", SUBJECT, "administrative_licensing", 1, ())  # type: ignore[arg-type]
    billing = {
        "basis": "free",
        "reserved_fen": 0,
        "charged_fen": 0,
        "state": "settled",
        "replay": False,
        "lines": [{"department": "dept0", "dataset": "ds0", "amount_fen": 0}],
    }
    print("QueryAuditor.append_query, CPU us per record (median, min):")
    for departments, records in ((1, 1), (7, 3)):
        response, allowed = _answer(departments, records, rid)

        def make(
            response: query_pb2.QueryResponse = response, allowed: Any = allowed
        ) -> Callable[[], Awaitable[object]]:
            return lambda: auditor.append_query(
                query, CALLER, request, response, None, billing=billing, allowed=allowed
            )

        med, low = await _median_us(runs, n if departments == 1 else n // 4, make)
        label = f"{departments} department(s) x 2 datasets x {records} record(s)"
        print(f"  {label:44s} {med:7.1f} {low:7.1f}")

    catalog = load_catalog()
    limiter = _Limiter()
    service = QueryService(
        catalog=catalog,
        validator=Validator(catalog, load_purposes()),
        decider=CatalogDecider(catalog),
        authenticator=_Auth(),
        clients={},
        metrics=Metrics(),
        audit=auditor,
        pseudonym=auditor.pseudonym,
        limiter=limiter,  # type: ignore[arg-type]
    )
    context = _Context()
    print("QueryService.answer, CPU us per query (median, min), departments absent:")
    cases = (
        ("answered, free text without digits", "inspection A", "", False),
        ("answered, case reference with digits", "2026-XK-00123", "", False),
        ("refused by the rate limiter", "2026-XK-00123", "", True),
        ("answered, three free texts with digits", "case 2026/11/00123", "bank 12", False),
    )
    for label, case, party, refuse in cases:
        limiter.refuse = refuse

        async def one(case: str = case, party: str = party, refuse: bool = refuse) -> None:
            try:
                await service.answer(_request(case, party), context)  # type: ignore[arg-type]
            except _Refused:
                if not refuse:
                    raise RuntimeError("refused: the bench's request is wrong") from None

        med, low = await _median_us(runs, n // 2, lambda one=one: one)  # type: ignore[misc]
        print(f"  {label:44s} {med:7.1f} {low:7.1f}")


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--n", type=int, default=1500, help="calls per run (a quarter for 7 depts)")
    args = p.parse_args(argv)
    asyncio.run(_main(args.runs, max(args.n, 4)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
