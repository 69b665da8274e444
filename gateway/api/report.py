"""The gRPC entry point of ``ReportService``: a query's answer as a signed credit report.

``Report`` runs the query through :meth:`gateway.api.query.QueryService.answer`, the very
code path of ``Query`` (authentication, checks, charge, audit record, refusals), then

1. waits until a signed checkpoint covers the query's audit record (the log signs one at
   least every second) and takes the record's inclusion proof against it;
2. builds the content (:func:`gateway.report.build_content`), signs it with the log's key
   (domain-separated) and renders the PDF, in a worker thread;
3. checks the result as a recipient would (:func:`gateway.audit.reportcheck.check_report`)
   before it leaves: a report the gateway cannot verify itself is never handed out.

The gateway keeps no department data, so a report exists only in the answer to the call
that made it. A missing CJK font is refused (FAILED_PRECONDITION, ``CONFIG_INVALID``)
before the query runs, so nothing is charged for a report that cannot be made. If no
checkpoint comes in time the call is refused with ``NOT_YET_INTEGRATED`` (UNAVAILABLE,
with RetryInfo): the same request id, sent again, is answered without a second charge.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from gateway.api.query import QueryService
from gateway.audit.checkpoint import Checkpoint, TlogProof
from gateway.audit.errors import AuditError
from gateway.audit.log import AuditLog
from gateway.audit.note import Verifier
from gateway.audit.reportcheck import check_report
from gateway.domain.catalog import Catalog
from gateway.domain.identifiers import IdentifierError, validate_subject
from gateway.domain.names import SUBJECT_TYPE
from gateway.domain.purposes import Purpose
from gateway.errors import GatewayError, InternalError, NotYetIntegratedError
from gateway.report import MakerLoader, ReportFacts, build_content
from protos.credit.v1 import report_pb2, report_pb2_grpc

__all__ = ["ReportService"]

log = logging.getLogger("credit_gateway.report")

#: Longest wait for a checkpoint over the query's record, in seconds (the log signs one
#: at least every second); a call's own deadline, less a margin, may shorten it.
MAX_CHECKPOINT_WAIT_S = 3.0
_POLL_S = 0.02


class ReportService(report_pb2_grpc.ReportServiceServicer):
    """The ``ReportService`` servicer.

    ``query`` is the gateway's QueryService; ``audit_log`` the log its records go to (its
    key signs the reports); ``catalog`` and ``purposes`` return the live ones (a policy
    activation may change them); ``agency_name`` gives an agency's Chinese name ("" if
    unknown); ``font`` is the configured CJK font (None: :data:`gateway.report.FONT_PATHS`).
    """

    def __init__(
        self,
        query: QueryService,
        audit_log: AuditLog,
        *,
        catalog: Callable[[], Catalog],
        purposes: Callable[[], Mapping[str, Purpose]],
        agency_name: Callable[[str], str] = lambda _agency: "",
        font: Path | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._query = query
        self._log = audit_log
        self._catalog = catalog
        self._purposes = purposes
        self._agency_name = agency_name
        self._now = now
        self._maker = MakerLoader(audit_log.signer, font)
        self._verifiers = [Verifier.from_key_string(audit_log.signer.verifier_key())]

    async def Report(
        self, request: report_pb2.ReportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> report_pb2.ReportResponse:
        """Run the query, then make, sign and self-check its report (module docstring)."""
        maker = await self._maker.get()  # the font loads in a thread, once
        caller, response = await self._query.answer(request.query, context)
        try:
            proof = await self._proof(response.receipt.log_index, context)
            subject_type = SUBJECT_TYPE[request.query.subject.type]
            purpose = request.query.purpose.strip()
            known = self._purposes().get(purpose)
            facts = ReportFacts(
                agency_id=caller.agency_id,
                agency_name=self._agency_name(caller.agency_id),
                purpose=purpose,
                purpose_title=known.title if known is not None else "",
                subject_type=subject_type.value,
                # The query was validated already; this only normalises it.
                subject_id=validate_subject(subject_type.value, request.query.subject.id),
            )
            content = build_content(response, facts, self._catalog(), generated_at=self._now())
            made = await asyncio.to_thread(maker.make, content, proof)
            await asyncio.to_thread(check_report, made.pdf, self._verifiers)
        except GatewayError:
            raise
        except (AuditError, IdentifierError, KeyError, ValueError, OSError):
            log.exception("report failed", extra={"request_id": response.request_id})
            raise InternalError("the report could not be made") from None
        return report_pb2.ReportResponse(
            response=response, pdf=made.pdf, json=made.json, verification_code=made.code
        )

    async def _proof(self, index: int, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """A tlog-proof of entry ``index`` against the first signed checkpoint covering it.
        Raises NotYetIntegratedError if none is signed in time."""
        loop = asyncio.get_running_loop()
        wait = MAX_CHECKPOINT_WAIT_S
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(remaining - 0.5, 0.0))  # keep time to render and answer
        give_up = loop.time() + wait
        while self._log.checkpoint_size <= index:
            left = give_up - loop.time()
            if left <= 0:
                raise NotYetIntegratedError(index, max(self._log.checkpoint_due_in_s, 0.1))
            await asyncio.sleep(min(left, _POLL_S))
        note = self._log.latest_checkpoint()
        size = Checkpoint.parse(note.partition("\n\n")[0] + "\n").size
        # Off the event loop: an old entry's proof may read tiles from the store.
        hashes = await self._log.inclusion_proof(index, size)
        return TlogProof(index, tuple(hashes), note).text()
