"""The gateway's client for one department adapter.

:meth:`DepartmentClient.lookup` is the one normalising seam (python-tuf's
fetcher pattern): whatever goes wrong on the wire comes out as one of our own
errors, :class:`~gateway.errors.DepartmentTimeoutError`,
:class:`~gateway.errors.DepartmentUnavailableError` or
:class:`~gateway.errors.DepartmentError`, never as ``grpc.aio.AioRpcError``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

import grpc

from gateway.errors import (
    DepartmentError,
    DepartmentTimeoutError,
    DepartmentUnavailableError,
    UpstreamError,
)
from gateway.federation.breaker import BreakerState, CircuitBreaker
from protos.credit.v1 import adapter_pb2, adapter_pb2_grpc

# Keep the channel warm and notice a dead peer between queries rather than
# during one; reconnect quickly after a department restarts.
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]

_UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class DepartmentState(enum.Enum):
    """Whether a department is asked (``SERVING``) or kept out, and why; kept up to date
    by :class:`~gateway.federation.departments.DepartmentMonitor`."""

    SERVING = "serving"
    #: Not reached (down, unreachable, or not checked yet).
    UNAVAILABLE = "unavailable"
    #: Reached but kept out: not the department's own certificate, another department's
    #: name, or a ``Describe`` that disagrees with the catalog.
    REFUSED = "refused"


# What gRPC says when the server's certificate does not name the department we dial
# (another department's key from the same CA): an impostor, not an outage.
# (grpcio 1.6x: "Custom verification check failed ... Hostname Verification Check failed";
# older: "Peer name tax.department is not in peer certificate").
_PEER_NAME_MARKERS = ("Hostname Verification Check failed", "is not in peer certificate")


class DepartmentClient:
    """One reused channel to one department, guarded by a circuit breaker.

    :attr:`state` says whether the department may be asked: a client starts
    ``UNAVAILABLE`` (not checked yet) and only a ``SERVING`` one is called by
    :func:`~gateway.federation.fanout.fan_out`; :attr:`detail` is the reason shown in
    the section of a department kept out.
    """

    def __init__(
        self,
        department: str,
        address: str,
        *,
        credentials: grpc.ChannelCredentials | None,
        timeout_s: float = 2.0,
        breaker: CircuitBreaker | None = None,
        server_name: str | None = None,
    ) -> None:
        self.department = department
        self.address = address
        self.timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker()
        options = list(_CHANNEL_OPTIONS)
        if server_name:
            # Departments' certificates name the department, not the address we dial.
            options.append(("grpc.ssl_target_name_override", server_name))
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        self._stub = adapter_pb2_grpc.DepartmentAdapterStub(self._channel)
        self.state = DepartmentState.UNAVAILABLE
        self.detail = f"department {department} is unavailable: not checked yet"
        #: Whether a check has set :attr:`state` at least once.
        self.checked = False
        #: Called when unreachability opens the circuit (the monitor checks it again).
        self.on_outage: Callable[[], None] | None = None

    async def describe(self, timeout_s: float | None = None) -> adapter_pb2.DescribeResponse:
        """The department's datasets and fields, waiting up to ``timeout_s`` for it to
        come up. Raises an :class:`UpstreamError`: a :class:`DepartmentUnavailableError`
        with reason ``PEER_NOT_DEPARTMENT`` when the server at the address does not
        present the department's own certificate."""
        try:
            return await self._stub.Describe(
                adapter_pb2.DescribeRequest(),
                timeout=timeout_s or self.timeout_s,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                # Waiting for the channel hides why it never became ready; one
                # call that does not wait says (an impostor's certificate, a refused port).
                details = await self._connect_error()
            if any(m in details for m in _PEER_NAME_MARKERS):
                raise DepartmentUnavailableError(
                    f"department {self.department}: the server did not present the "
                    "department's own certificate",
                    reason="PEER_NOT_DEPARTMENT",
                ) from None
            raise self._translate(exc) from None

    async def _connect_error(self) -> str:
        """The channel's last connection error, as gRPC words it ("" if it connects now)."""
        try:
            await self._stub.Describe(adapter_pb2.DescribeRequest(), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            return exc.details() or ""
        return ""

    async def lookup(
        self, request: adapter_pb2.LookupRequest, timeout_s: float
    ) -> adapter_pb2.LookupResponse:
        """Ask the department; raises an :class:`UpstreamError` on any failure.

        An open circuit fails at once with :class:`DepartmentUnavailableError`.
        """
        breaker = self.breaker
        if not breaker.allow():
            raise DepartmentUnavailableError(
                f"department {self.department} is failing; circuit open, "
                f"next trial in {breaker.retry_in_s():.1f}s",
                reason="CIRCUIT_OPEN",
            )
        try:
            response: adapter_pb2.LookupResponse = await self._stub.Lookup(
                request, timeout=timeout_s
            )
        except asyncio.CancelledError:
            # The caller went away; the department said nothing either way.
            breaker.abandon()
            raise
        except grpc.aio.AioRpcError as exc:
            err = self._translate(exc)
            # A department that refuses a well-formed request is not down; only
            # outages and timeouts trip the breaker.
            if isinstance(err, DepartmentUnavailableError | DepartmentTimeoutError):
                breaker.record_failure()
                # Unreachable (not merely slow) until the circuit opened: it may come
                # back another program, so its Describe is compared again first.
                unreachable = isinstance(err, DepartmentUnavailableError)
                if unreachable and breaker.state is BreakerState.OPEN and self.on_outage:
                    self.on_outage()
            else:
                breaker.record_success()
            raise err from None
        breaker.record_success()
        return response

    async def receive_objection(
        self, request: adapter_pb2.ReceiveObjectionRequest, timeout_s: float | None = None
    ) -> adapter_pb2.ReceiveObjectionResponse:
        """Route an objection to the department (Art. 25). Raises an :class:`UpstreamError`;
        a department refusal keeps its code in ``metadata["department_code"]`` (NOT_FOUND:
        no such record of the subject)."""
        try:
            response: adapter_pb2.ReceiveObjectionResponse = await self._stub.ReceiveObjection(
                request, timeout=timeout_s or self.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc) from None
        return response

    async def objection_answer(
        self, objection_id: str, timeout_s: float | None = None
    ) -> adapter_pb2.ObjectionAnswerResponse:
        """The department's answer to an objection so far. Raises an :class:`UpstreamError`."""
        try:
            response: adapter_pb2.ObjectionAnswerResponse = await self._stub.ObjectionAnswer(
                adapter_pb2.ObjectionAnswerRequest(objection_id=objection_id),
                timeout=timeout_s or self.timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise self._translate(exc) from None
        return response

    def _translate(self, exc: grpc.aio.AioRpcError) -> UpstreamError:
        code = exc.code()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DepartmentTimeoutError(f"department {self.department} did not answer in time")
        if code in _UNAVAILABLE_CODES:
            return DepartmentUnavailableError(f"department {self.department} is unavailable")
        # The department's own words stay in our log, not in the agency's answer.
        return DepartmentError(
            f"department {self.department} failed with {code.name}",
            metadata={"department_code": code.name},
        )

    async def close(self) -> None:
        """Close the channel to the department; calls still in flight are cancelled."""
        await self._channel.close()
