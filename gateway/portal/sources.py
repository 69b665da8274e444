"""Where the public page gets its answers: the seams between the web application and the
gateway.

Two small abstract bases, each with one normalising method that turns every failure into
our own errors (as :mod:`gateway.federation.client` does for departments):

* :class:`CreditSource` ``lookup(code)``: the gateway's answer about one enterprise, asked
  as the portal agency (purpose ``public_lookup``, free mode, the public tier is all its
  policy grants);
* :class:`ReportSource` ``report(code, form)``: the signed credit report of that enterprise
  (issue 15 item 2, ``ReportService.Report``: :class:`GatewayReports`), as a PDF or its
  JSON form; :class:`NoReports` where none is to be offered (the page then shows no
  download link).

:class:`GatewayConnection` implements both over one mutual-TLS channel with the portal's own
certificate and a token read from a file (:class:`TokenFile`: re-read whenever the file
changes, so a token re-minted beside a running portal is used at the next lookup without a
restart). Tests of the web application use fakes of these bases
(``tests/unit/portal/conftest.py``); the integration tests use the real connection.

Errors: :class:`PortalUpstreamError` (the gateway could not be asked, refused the portal,
or is busy: ``busy`` and ``retry_after_s`` say when to come back) and
:class:`ReportsUnavailableError`. Their messages are for the operator's log, never for the
visitor, and never hold the code asked about.
"""

from __future__ import annotations

import abc
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from google.protobuf import message as pb_message

from gateway.cli.connect import open_channel
from gateway.errors import ConfigError, UpstreamError
from protos.credit.v1 import common_pb2, query_pb2, query_pb2_grpc, report_pb2, report_pb2_grpc

__all__ = [
    "PURPOSE",
    "CreditSource",
    "GatewayConnection",
    "GatewayReports",
    "NoReports",
    "PortalUpstreamError",
    "ReportFile",
    "ReportSource",
    "ReportsUnavailableError",
    "TokenFile",
]

#: The purpose every lookup of the page states (``policies/purposes.toml``).
PURPOSE: Final = "public_lookup"

_log = logging.getLogger(__name__)


class PortalUpstreamError(UpstreamError):
    """The gateway did not answer the page's question: unreachable, too slow, refused the
    portal agency (a token or certificate problem for the operator), or busy.

    ``busy``: the gateway limited the portal as a whole (RESOURCE_EXHAUSTED), so the page
    answers 503 with ``Retry-After`` of ``retry_after_s`` (seconds) where known.
    """

    reason = "PORTAL_UPSTREAM"

    def __init__(
        self, message: str, *, status: str, busy: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, metadata={"status": status})
        self.status = status
        self.busy = busy
        self.retry_after_s = retry_after_s


class ReportsUnavailableError(UpstreamError):
    """No credit report can be had from this gateway (no report service)."""

    reason = "REPORTS_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class ReportFile:
    """A downloadable report: its file name, media type and bytes."""

    filename: str
    media_type: str
    content: bytes


class CreditSource(abc.ABC):
    """Answers about enterprises, as the portal agency is allowed to see them."""

    @abc.abstractmethod
    async def lookup(self, code: str) -> query_pb2.QueryResponse:
        """The gateway's answer about the enterprise with the valid, upper-case unified
        social credit ``code``.

        Raises:
            PortalUpstreamError: the gateway could not be asked or refused.
        """


class ReportSource(abc.ABC):
    """Signed credit reports of enterprises."""

    #: Whether reports can be had at all (the page shows a download link only then).
    available: bool = True

    @abc.abstractmethod
    async def report(self, code: str, form: str) -> ReportFile:
        """The report about enterprise ``code`` as ``form`` (``"pdf"`` or ``"json"``).

        Raises:
            ReportsUnavailableError: this source has no reports.
            PortalUpstreamError: the gateway could not be asked or refused.
            ValueError: ``form`` is neither.
        """


class NoReports(ReportSource):
    """The report source of a gateway without a report service: never any report."""

    available = False

    async def report(self, code: str, form: str) -> ReportFile:
        """Always raises :class:`ReportsUnavailableError`."""
        raise ReportsUnavailableError("this gateway offers no credit reports")


class TokenFile:
    """A bearer token kept in a file, re-read whenever the file's modification time or size
    changes (a token re-minted beside the running portal is picked up).

    Raises (from :meth:`token`):
        ConfigError: the file cannot be read or holds no token.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def token(self) -> str:
        """The token now in the file (white space stripped)."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                token = self.path.read_text(encoding="utf-8").strip()
                if not token:
                    raise ConfigError(str(self.path), "holds no token")
                self._token, self._stamp = token, stamp
        except OSError as exc:
            raise ConfigError(
                str(self.path), f"cannot read the token file ({exc.strerror})"
            ) from None
        return self._token


#: gRPC codes that say the gateway turned the portal itself away: an operator must act.
_REFUSED: Final = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)


def _retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """google.rpc.RetryInfo's delay in seconds from a failed call's trailers, if any."""
    from google.rpc import error_details_pb2, status_pb2

    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except pb_message.DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def upstream_error(exc: grpc.aio.AioRpcError, what: str) -> PortalUpstreamError:
    """Our error for a failed call to the gateway (``what``: ``"lookup"``, ``"report"``),
    logged for the operator (status code only: the details may name the subject)."""
    code = exc.code()
    busy = code == grpc.StatusCode.RESOURCE_EXHAUSTED
    if code in _REFUSED:
        _log.error("the gateway refused the portal's %s: %s", what, code.name)
    else:
        _log.warning("the portal's %s failed: %s", what, code.name)
    return PortalUpstreamError(
        f"{what}: the gateway answered {code.name}",
        status=code.name,
        busy=busy,
        retry_after_s=_retry_after(exc) if busy else None,
    )


class GatewayConnection(CreditSource):
    """The portal agency's connection to the gateway: one mutual-TLS channel (PEM ``ca``,
    ``cert``, ``key``), the token from ``token_file``, ``timeout_s`` per call (seconds).
    It is the page's :class:`CreditSource`; :meth:`reports` gives the :class:`ReportSource`
    over the same channel."""

    def __init__(
        self,
        address: str,
        *,
        ca: bytes,
        cert: bytes,
        key: bytes,
        token_file: TokenFile,
        timeout_s: float = 10.0,
    ) -> None:
        # The token goes into each call's metadata (it may change), not the channel's.
        self._channel, _ = open_channel(address, ca=ca, cert=cert, key=key)
        self._tokens = token_file
        self._timeout_s = timeout_s
        self._query = query_pb2_grpc.QueryServiceStub(self._channel)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata: the bearer token now in the token file (RFC 6750).

        Raises:
            PortalUpstreamError: the token file cannot be read.
        """
        try:
            token = self._tokens.token()
        except ConfigError as exc:
            _log.error("portal token: %s", exc.message)
            raise PortalUpstreamError(exc.message, status="NO_TOKEN") from None
        return (("authorization", f"Bearer {token}"),)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to the gateway (for further services over the same connection)."""
        return self._channel

    @property
    def timeout_s(self) -> float:
        """The deadline of each call, in seconds."""
        return self._timeout_s

    async def lookup(self, code: str) -> query_pb2.QueryResponse:
        """See :meth:`CreditSource.lookup`; one query of the portal agency, a fresh request
        id each time."""
        request = _request(code)
        try:
            response: query_pb2.QueryResponse = await self._query.Query(
                request, timeout=self._timeout_s, metadata=self.metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise upstream_error(exc, "lookup") from None
        return response

    def reports(self) -> ReportSource:
        """The report source over this connection (``ReportService.Report``)."""
        return GatewayReports(self)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _request(code: str) -> query_pb2.QueryRequest:
    """The portal's query about enterprise ``code``: purpose ``public_lookup``, free mode,
    every dataset its policy grants, a fresh request id."""
    return query_pb2.QueryRequest(
        request_id=str(uuid.uuid4()),
        purpose=PURPOSE,
        mode=query_pb2.QUERY_MODE_FREE,
        subject=common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=code),
    )


#: A report waits for the audit log's next signed checkpoint (about a second) and is
#: rendered and checked by the gateway before it leaves: it gets longer than a lookup.
REPORT_TIMEOUT_S: Final = 30.0
_FORMS: Final = {"pdf": "application/pdf", "json": "application/json"}


class GatewayReports(ReportSource):
    """Signed credit reports from the gateway's ``ReportService.Report`` (issue 15 item 2),
    over a :class:`GatewayConnection`. Each download runs one query of the portal agency,
    decided, counted and audited like a lookup; the report carries its receipt and an
    inclusion proof, so whoever receives it checks it with ``credit-audit check-report``."""

    available = True

    def __init__(self, connection: GatewayConnection) -> None:
        self._connection = connection
        self._stub = report_pb2_grpc.ReportServiceStub(connection.channel)

    async def report(self, code: str, form: str) -> ReportFile:
        """See :meth:`ReportSource.report`. A gateway without the report service
        (UNIMPLEMENTED) raises :class:`ReportsUnavailableError`."""
        media_type = _FORMS.get(form)
        if media_type is None:
            raise ValueError(f"no report form {form!r}: pdf or json")
        try:
            answer: report_pb2.ReportResponse = await self._stub.Report(
                report_pb2.ReportRequest(query=_request(code)),
                timeout=max(REPORT_TIMEOUT_S, self._connection.timeout_s),
                metadata=self._connection.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise ReportsUnavailableError("the gateway has no report service") from None
            raise upstream_error(exc, "report") from None
        content = answer.pdf if form == "pdf" else answer.json
        return ReportFile(f"credit-report-{code}.{form}", media_type, content)
