"""The gRPC edge: one server interceptor that every call to the gateway passes.

    server = grpc.aio.server(interceptors=[Edge(audit=auditor)])

For every unary method it wraps (and every server-streaming one, alike), the edge

1. **decodes the request itself.** grpc deserializes a request before any
   servicer code runs and answers UNKNOWN, naming protobuf's ``DecodeError``, if
   that fails. The edge's deserializer never raises: bytes that are not a valid
   message of the method's type are refused with INVALID_ARGUMENT
   ``request: not a valid credit.v1.QueryRequest message`` (``MALFORMED_REQUEST``);
2. **maps every failure.** A servicer raises a
   :class:`~gateway.errors.GatewayError`; the edge answers with
   :func:`~gateway.errors.to_rpc_status`. Anything else is a bug: logged with its
   traceback, answered INTERNAL ``internal error``. A servicer that ended the
   call itself (:func:`gateway.errors.abort`) is passed through untouched;
3. **puts every refusal on the audit record**, as a record of kind ``refusal``,
   unless the servicer already recorded it (:attr:`GatewayError.audited`). The
   record holds the service, the method, the ErrorInfo reason, the status, the
   verified principal (if a servicer reported one with :func:`identified`) and
   the RFC 8705 thumbprint of the client certificate: never a request field, a
   message or any other text the caller chose. Not recorded: a failure of the
   audit log itself (it cannot be), and ``NOT_YET_INTEGRATED`` (a retry hint that
   a poller meets often, not a refusal).

:func:`authenticate` runs a servicer's authenticator so that no failure inside it
(a token claim the verifier did not foresee, say) can become anything but
UNAUTHENTICATED.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar, cast

import grpc
from google.protobuf import descriptor_pool

from gateway.audit.schema import RefusalRecord
from gateway.auth.certs import cert_thumbprint_pem
from gateway.auth.reasons import AuthReason
from gateway.errors import (
    AuditUnavailableError,
    AuthenticationError,
    GatewayError,
    InternalError,
    InvalidArgumentError,
    NotYetIntegratedError,
    abort,
)

__all__ = ["REFUSAL_KIND", "Edge", "EventSink", "authenticate", "identified", "peer_thumbprint"]

log = logging.getLogger("credit_gateway.edge")

#: The ``kind`` of the audit record of a refused call.
REFUSAL_KIND = RefusalRecord.KIND

_T = TypeVar("_T")
_C = TypeVar("_C")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_FIELD = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class EventSink(Protocol):
    """Where refusals are recorded (:class:`gateway.audit.auditor.QueryAuditor`).
    ``append_event`` returns once the record is durable, or raises."""

    async def append_event(self, kind: str, fields: Mapping[str, Any]) -> object:
        """Append one audit event of ``kind`` (for example ``refusal``) with ``fields``."""


@dataclass(slots=True)
class _Call:
    service: str
    method: str
    principal: str = ""


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """Stands for a request whose bytes did not decode (the servicer never sees it)."""

    type_name: str


@dataclass(slots=True)
class _Wrapped:
    original: _Handler
    handler: _Handler = field(repr=False)


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("edge_call", default=None)


def identified(principal_id: str) -> None:
    """Name the verified principal of the current call for its refusal record.
    Call it only with an identity that authentication has established."""
    call = _CALL.get()
    if call is not None:
        call.principal = principal_id


def authenticate(authenticator: Callable[[_C], _T], context: _C) -> _T:
    """``authenticator(context)``, where any failure that is not a GatewayError
    (an ``exp`` of 1e999 overflowing ``int``, say) is refused as UNAUTHENTICATED
    ``TOKEN_MALFORMED`` and its traceback goes to the gateway's log only.

    Raises:
        GatewayError: what the authenticator raised, or AuthenticationError.
    """
    try:
        return authenticator(context)
    except GatewayError:
        raise
    except Exception:
        log.exception("authentication failed unexpectedly; refused as a malformed token")
        raise AuthenticationError("token is malformed", reason=AuthReason.MALFORMED.value) from None


def peer_thumbprint(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """RFC 8705 thumbprint of the call's client certificate (verified by TLS
    against the federation CA), or "" without one."""
    try:
        pems = list(context.auth_context().get("x509_pem_cert", ()))
        return cert_thumbprint_pem(pems[0]) if pems else ""
    except Exception:  # an unreadable certificate is simply not named
        return ""


def _input_type(method: str) -> str:
    """``/credit.v1.QueryService/Query`` -> ``credit.v1.QueryRequest``."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        desc = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    except KeyError:
        return "request"
    return str(desc.input_type.full_name)


def _lenient(deserialize: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception:  # DecodeError, and whatever else a parser may raise on garbage
            return _Undecodable(type_name)

    return decode


class Edge(grpc.aio.ServerInterceptor):
    """The interceptor described in the module docstring. ``audit`` receives
    refusal records; without it (development, tests) refusals are only logged."""

    def __init__(self, audit: EventSink | None = None) -> None:
        self._audit = audit
        self._handlers: dict[str, _Wrapped] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the handler of ``handler_call_details.method`` with decoding, error mapping and
        refusal records.
        """
        handler = await continuation(handler_call_details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler  # unknown method (UNIMPLEMENTED) or a client stream: untouched
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None or wrapped.original is not handler:
            wrap = self._wrap if handler.unary_unary is not None else self._wrap_stream
            wrapped = _Wrapped(handler, wrap(method, handler))
            self._handlers[method] = wrapped
        return cast("grpc.RpcMethodHandler[_Req, _Resp]", wrapped.handler)

    def _wrap(self, method: str, handler: _Handler) -> _Handler:
        inner = handler.unary_unary
        if not inspect.iscoroutinefunction(inner):
            return handler  # a synchronous servicer: not ours
        type_name = _input_type(method)
        service, _, name = method.lstrip("/").rpartition("/")

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(service, name)
            token = _CALL.set(call)
            try:
                if isinstance(request, _Undecodable):
                    err: GatewayError = InvalidArgumentError(
                        "request",
                        f"not a valid {request.type_name} message",
                        reason="MALFORMED_REQUEST",
                    )
                else:
                    try:
                        return await inner(request, context)
                    except GatewayError as exc:
                        err = exc
                    except grpc.aio.AbortError:
                        raise  # the servicer answered (and recorded) on its own
                    except Exception:
                        log.exception("unexpected failure in %s", method)
                        err = InternalError("internal error")
                await self._refused(call, err, context)
                return await abort(context, err)
            finally:
                _CALL.reset(token)

        deserializer = handler.request_deserializer
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=_lenient(deserializer, type_name) if deserializer else None,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(self, method: str, handler: _Handler) -> _Handler:
        """As :meth:`_wrap`, for a server-streaming method (``ScreenBatch``): the request is
        decoded leniently, and a failure before or between items ends the stream with the
        mapped status (and a refusal record) instead of UNKNOWN."""
        inner = handler.unary_stream
        if not inspect.isasyncgenfunction(inner):
            return handler  # not an async generator servicer: not ours
        type_name = _input_type(method)
        service, _, name = method.lstrip("/").rpartition("/")

        async def behavior(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(service, name)
            token = _CALL.set(call)
            try:
                if isinstance(request, _Undecodable):
                    err: GatewayError = InvalidArgumentError(
                        "request",
                        f"not a valid {request.type_name} message",
                        reason="MALFORMED_REQUEST",
                    )
                else:
                    try:
                        async for item in inner(request, context):
                            yield item
                        return
                    except GatewayError as exc:
                        err = exc
                    except grpc.aio.AbortError:
                        raise
                    except Exception:
                        log.exception("unexpected failure in %s", method)
                        err = InternalError("internal error")
                await self._refused(call, err, context)
                await abort(context, err)
            finally:
                # A generator may be finalised in another context; the call is over anyway.
                with contextlib.suppress(ValueError):
                    _CALL.reset(token)

        deserializer = handler.request_deserializer
        return grpc.unary_stream_rpc_method_handler(
            behavior,
            request_deserializer=_lenient(deserializer, type_name) if deserializer else None,
            response_serializer=handler.response_serializer,
        )

    async def _refused(
        self, call: _Call, err: GatewayError, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        reason = err.reason if _REASON.fullmatch(err.reason) else "INVALID_REASON"
        if not err.disclosed:
            # A local failure's message is for the operator; it names no caller data.
            log.error("%s/%s failed: %s (%s)", call.service, call.method, reason, err.message)
        else:
            log.info("%s/%s refused: %s", call.service, call.method, reason)
        if (
            self._audit is None
            or err.audited
            or isinstance(err, AuditUnavailableError | NotYetIntegratedError)
        ):
            return
        error_field = None
        if isinstance(err, InvalidArgumentError) and _FIELD.fullmatch(err.field):
            error_field = err.field  # our own field names only
        fields = RefusalRecord(
            service=call.service,
            method=call.method,
            outcome=reason.lower(),
            status=err.code.name,
            principal=call.principal,
            cert_thumbprint=peer_thumbprint(context),
            error_field=error_field,
        ).to_json()
        kind = fields.pop("kind")  # the sink writes kind, time and gateway
        try:
            await self._audit.append_event(kind, fields)
        except Exception:
            # Nothing was disclosed by a refusal: the caller still gets its error.
            log.exception("could not audit a refusal of %s/%s", call.service, call.method)
            return
        err.audited = True
