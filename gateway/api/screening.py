"""The gRPC entry point of ``ScreeningService``: Screen, ScreenBatch, ReportMeasure.

The screen itself is :class:`gateway.screening.Screener`'s; this module authenticates the
agency, runs a batch as a bounded pool of single screens whose items stream back as each
finishes, and records measure feedback (联合奖惩反馈).

A batch of up to :data:`MAX_BATCH` subjects answers one item per subject, never in input
order: ``index`` names the subject, ``done``/``total`` the progress. Subject *i* is screened
under the request id UUIDv5(batch_id, str(i)), so a batch retried with the same id books
nothing twice. A subject that is refused (bad identifier, quota or balance exhausted...)
gets an ``error`` item and costs nothing; the batch goes on. A department down makes its
lists ``UNKNOWN`` in every item (``complete`` false), with its own deadline per subject.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.api.edge import authenticate, identified, peer_thumbprint
from gateway.audit.auditor import QueryAuditor
from gateway.audit.schema import MeasureFeedbackRecord
from gateway.auth.identity import Caller, CallerSource
from gateway.errors import (
    AuditUnavailableError,
    GatewayError,
    InternalError,
    InvalidArgumentError,
)
from gateway.pipeline.freetext import holds_identifier, joined_identifier
from gateway.screening.screener import Screener
from protos.credit.v1 import query_pb2, screening_pb2, screening_pb2_grpc

__all__ = ["MAX_BATCH", "ScreeningServicer", "batch_request_id"]

log = logging.getLogger("credit_gateway.screening")

#: The most subjects one ScreenBatch call may name (a bid evaluation, a portfolio).
MAX_BATCH = 10_000
#: Subjects of one batch screened at once: enough to keep every department busy, few
#: enough that one batch never starves single screens and queries.
BATCH_CONCURRENCY = 32
_MAX_TEXT = 256

_INTERNAL_MESSAGE = "internal error"


def batch_request_id(batch_id: str, index: int) -> str:
    """The request id of subject ``index`` of batch ``batch_id`` (a UUID): UUIDv5 of both,
    stable across retries. Raises InvalidArgumentError if ``batch_id`` is not a UUID."""
    try:
        namespace = uuid.UUID(batch_id)
    except ValueError:
        raise InvalidArgumentError("batch_id", "must be a UUID") from None
    return str(uuid.uuid5(namespace, str(index)))


def _error_item(err: GatewayError) -> screening_pb2.ScreenError:
    message = err.message if err.disclosed else err.public_message
    return screening_pb2.ScreenError(code=err.code.name, reason=err.reason, message=message)


class ScreeningServicer(screening_pb2_grpc.ScreeningServiceServicer):
    """``credit.v1.ScreeningService`` over a :class:`Screener`."""

    def __init__(
        self,
        screener: Screener,
        authenticator: CallerSource,
        *,
        audit: QueryAuditor | None = None,
        concurrency: int = BATCH_CONCURRENCY,
    ) -> None:
        self.screener = screener
        self._auth = authenticator
        self._audit = audit
        self._concurrency = concurrency

    def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        caller = authenticate(self._auth.authenticate, context)
        identified(caller.agency_id)
        return caller

    def _budget(self, context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
        # None without a deadline, whatever the stubs say.
        remaining: float | None = context.time_remaining()
        if remaining is None:
            return None
        # Keep back time for settling, the durable audit append and the reply.
        return max(remaining - min(0.2, remaining * 0.2), 0.001)

    async def Screen(
        self, request: screening_pb2.ScreenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> screening_pb2.ScreenResponse:
        """Screen one subject (see :class:`Screener`). Raises GatewayError (the edge maps it)."""
        try:
            caller = self._caller(context)
        except GatewayError as err:
            anonymous = Caller("", "unauthenticated", cert_thumbprint=peer_thumbprint(context))
            await self.screener.record_refusal(anonymous, request, err)
            raise
        return await self.screener.screen(caller, request, budget_s=self._budget(context))

    async def ScreenBatch(
        self,
        request: screening_pb2.ScreenBatchRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[screening_pb2.ScreenBatchItem]:
        """Screen every subject of the batch; one item per subject as each is answered."""
        caller: Caller | None = None
        try:
            caller = self._caller(context)
            total = len(request.subjects)
            if not 1 <= total <= MAX_BATCH:
                raise InvalidArgumentError("subjects", f"1 to {MAX_BATCH} subjects, not {total}")
            batch_request_id(request.batch_id, 0)  # the batch id is a UUID
            batch_id = str(uuid.UUID(request.batch_id))
        except GatewayError as err:
            who = caller or Caller("", "unauthenticated", cert_thumbprint=peer_thumbprint(context))
            probe = screening_pb2.ScreenRequest(
                scenario=request.scenario, purpose=request.purpose, mode=request.mode
            )
            await self.screener.record_refusal(who, probe, err, batch_id="")
            raise  # the edge ends the stream with the mapped status
        deadline = time.monotonic() + (context.time_remaining() or 3600.0)
        queue: asyncio.Queue[screening_pb2.ScreenBatchItem] = asyncio.Queue()
        indices = iter(range(total))

        async def worker() -> None:
            for index in indices:  # shared iterator: each index is taken once
                single = screening_pb2.ScreenRequest(
                    request_id=batch_request_id(batch_id, index),
                    subject=request.subjects[index],
                    scenario=request.scenario,
                    purpose=request.purpose,
                    mode=request.mode,
                    case_reference=request.case_reference,
                    officer_id=request.officer_id,
                )
                left = deadline - time.monotonic()
                budget = max(left - min(0.2, left * 0.2), 0.001)
                item = screening_pb2.ScreenBatchItem(index=index, total=total)
                try:
                    item.result.CopyFrom(
                        await self.screener.screen(
                            caller, single, budget_s=budget, batch_id=batch_id
                        )
                    )
                except GatewayError as err:
                    item.error.CopyFrom(_error_item(err))
                except Exception:
                    log.exception("screen failed in a batch", extra={"index": index})
                    item.error.CopyFrom(_error_item(InternalError(_INTERNAL_MESSAGE)))
                await queue.put(item)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self._concurrency, total))]
        try:
            for done in range(1, total + 1):
                item = await queue.get()
                item.done = done
                yield item
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def ReportMeasure(
        self, request: screening_pb2.MeasureFeedback, context: grpc.aio.ServicerContext[Any, Any]
    ) -> screening_pb2.MeasureFeedbackAck:
        """Record which measure the agency applied after a screen (联合奖惩反馈).

        Raises InvalidArgumentError (ids not UUIDs, a list or measure not in the measures
        catalog, a measure of another list, free text holding an identifier),
        AuditUnavailableError; the refusal is recorded by the edge."""
        caller = self._caller(context)
        for name in ("request_id", "screen_request_id"):
            try:
                uuid.UUID(getattr(request, name))
            except ValueError:
                raise InvalidArgumentError(name, "must be a UUID") from None
        measures = self.screener.measures
        if request.list not in measures.lists:
            raise InvalidArgumentError("list", "not a list of the measures catalog")
        if measures.measure(request.list, request.measure) is None:
            raise InvalidArgumentError("measure", "not a measure of this list")
        texts = ("officer_id", "decision_reference", "note")
        for name in texts:
            text = getattr(request, name)
            if len(text) > _MAX_TEXT:
                raise InvalidArgumentError(name, f"longer than {_MAX_TEXT} characters")
            if holds_identifier(text):
                raise InvalidArgumentError(
                    name,
                    "must not contain a resident identity number or unified social credit "
                    "code (the text is not repeated)",
                )
        if joined_identifier([getattr(request, n) for n in texts]):
            raise InvalidArgumentError("+".join(texts), "together they make an identifier")
        ack = screening_pb2.MeasureFeedbackAck(request_id=str(uuid.UUID(request.request_id)))
        if self._audit is None:
            return ack
        if not self._audit.available:
            raise AuditUnavailableError("the audit log cannot be written")
        record = MeasureFeedbackRecord(
            request_id=ack.request_id,
            agency_id=caller.agency_id,
            officer_id=self._audit.free_text(request.officer_id),
            screen_request_id=str(uuid.UUID(request.screen_request_id)),
            list=request.list,
            measure=request.measure,
            applied=request.applied,
            decision_reference=self._audit.free_text(request.decision_reference),
            note=self._audit.free_text(request.note),
            measures_version=measures.version,
        ).to_json()
        kind = record.pop("kind")
        record.pop("time")
        record.pop("gateway")
        receipt = await self._audit.append_event(kind, record)
        ack.receipt.CopyFrom(
            query_pb2.AuditReceipt(
                origin=receipt.origin, log_index=receipt.index, leaf_hash=receipt.leaf_hash
            )
        )
        return ack
