"""The gRPC entry point of ``QueryService``: authenticate, run the pipeline, answer.

The steps themselves live in :mod:`gateway.pipeline` (:class:`QueryPipeline`); this module
is where the query meets gRPC. A refusal is recorded (with the client certificate's
thumbprint when the caller was never identified) and mapped by :func:`gateway.errors.abort`;
an unexpected failure becomes INTERNAL "internal error", never a path or a trace.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from gateway.api.edge import authenticate, peer_thumbprint
from gateway.auth.identity import Caller
from gateway.errors import GatewayError, InternalError, abort
from gateway.pipeline.query import QueryPipeline, Validated, safe_request_id
from protos.credit.v1 import query_pb2, query_pb2_grpc

__all__ = ["QueryService"]

log = logging.getLogger("credit_gateway.query")  # the same logger as the pipeline


class QueryService(QueryPipeline, query_pb2_grpc.QueryServiceServicer):
    """The ``QueryService`` servicer: the query pipeline behind one gRPC method."""

    async def Query(
        self, request: query_pb2.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> query_pb2.QueryResponse:
        """Answer one query: authenticate, validate, decide, reserve, fan out, disclose, record."""
        return (await self.answer(request, context))[1]

    async def answer(
        self, request: query_pb2.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Caller, query_pb2.QueryResponse]:
        """What ``Query`` does, also returning the authenticated caller (the ``Report`` RPC
        runs its query through here). A refusal is recorded and ends the call
        (:func:`gateway.errors.abort` raises)."""
        started = time.perf_counter()
        caller: Caller | None = None
        error: GatewayError
        seen = Validated()
        try:
            caller = authenticate(self._auth.authenticate, context)
            response, outcome = await self._run(caller, request, context, seen)
        except GatewayError as exc:
            error = exc
        except Exception:
            log.exception("query failed", extra={"request_id": safe_request_id(request)})
            error = InternalError("internal error")
        else:
            self._finish(caller, outcome, started, response.request_id)
            return caller, response
        # Refused before it was known who called: the record still names the
        # (CA-verified) client certificate.
        anonymous = Caller("", "unauthenticated", cert_thumbprint=peer_thumbprint(context))
        # Refused by or after validation (an authenticated caller's query is validated
        # first): the record takes what validation found, not validating again.
        await self._audit_refusal(
            caller or anonymous, request, error, seen if caller is not None else None
        )
        self._finish(caller, error.reason.lower(), started, safe_request_id(request))
        return await abort(context, error)
