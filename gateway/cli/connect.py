"""The one way a client connects to a gateway, and a small client for the query service.

* :func:`open_channel`: a mutual-TLS channel and the metadata carrying a bearer token, or a
  plaintext channel with a development identity header;
* :func:`read_demo` and :func:`demo_member`: what ``credit-gateway demo --serve`` wrote to
  ``demo.json`` for one agency or officer (``credit-query --demo``, ``credit-gateway
  policy --demo``);
* :class:`QueryClient`: ``credit-query``, the demo, the tests and the benchmarks use it::

    async with QueryClient.connect(
        "127.0.0.1:8443", ca=ca_pem, cert=cert_pem, key=key_pem, token=jwt
    ) as client:
        response = await client.query(
            enterprise="91350200MA2YJ1XR9G", purpose="lending", mode="paid"
        )
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from gateway.cli.console import path_arg
from protos.credit.v1 import (
    common_pb2,
    query_pb2,
    query_pb2_grpc,
    report_pb2,
    report_pb2_grpc,
    subject_pb2,
    subject_pb2_grpc,
)

__all__ = [
    "Metadata",
    "QueryClient",
    "UsageError",
    "add_connection_options",
    "agency_connection",
    "build_request",
    "connect_as",
    "demo_member",
    "open_channel",
    "read_demo",
]

#: gRPC call metadata: (key, value) pairs sent on every call.
Metadata = tuple[tuple[str, str], ...]


class UsageError(Exception):
    """A command line that names too little or contradicts itself: one line, exit status 2."""


def read_demo(path: Path) -> dict[str, Any]:
    """The ``demo.json`` that ``credit-gateway demo --serve`` wrote.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON.
    """
    demo: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return demo


def demo_member(
    demo: Mapping[str, Any], table: str, name: str | None, flag: str
) -> dict[str, Path]:
    """The files of principal ``name`` of ``demo[table]`` (``agencies``, ``officers``): the
    CA certificate, its certificate, key and token file (keys ``ca``, ``cert``, ``key``,
    ``token_file``).

    Raises:
        UsageError: ``name`` is not in the table (the message names ``--flag`` and the choices).
        KeyError: the demo file lacks a field.
    """
    members: Mapping[str, Any] = demo.get(table, {})
    member = members.get(name or "")
    if member is None:
        raise UsageError(f"--{flag} must be one of {', '.join(sorted(members)) or '(none)'}")
    return {
        "ca": Path(demo["ca_cert"]),
        "cert": Path(member["cert"]),
        "key": Path(member["key"]),
        "token_file": Path(member["token_file"]),
    }


def open_channel(
    address: str,
    *,
    ca: bytes | None = None,
    cert: bytes | None = None,
    key: bytes | None = None,
    token: str | None = None,
    dev_header: tuple[str, str] | None = None,
) -> tuple[grpc.aio.Channel, Metadata]:
    """A channel to ``address`` and the metadata every call on it sends.

    Mutual TLS (PEM ``ca``, ``cert``, ``key``) when ``ca`` is given, with ``token`` as a
    bearer token (RFC 6750); plaintext otherwise, with ``dev_header`` naming the caller
    (only a gateway started with ``insecure_dev_plaintext`` accepts that).

    Raises:
        ValueError: a token without TLS (it would travel in clear).
    """
    if token and ca is None:
        raise ValueError("a bearer token is only sent over TLS: give ca, cert and key")
    metadata: list[tuple[str, str]] = []
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    if dev_header:
        metadata.append(dev_header)
    if ca is not None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        return grpc.aio.secure_channel(address, creds), tuple(metadata)
    return grpc.aio.insecure_channel(address), tuple(metadata)


def add_connection_options(
    p: argparse.ArgumentParser, default: Any, *, members: Mapping[str, str]
) -> None:
    """The connection flags of an admin command (``credit-gateway policy``,
    ``controls``), accepted before or after its subcommand: call it on the parser
    with ``default=None`` and on every subparser with ``argparse.SUPPRESS``.
    ``members`` maps each ``--<flag>`` that picks a demo.json member (``officer``,
    ``agency``) to its help text."""
    conn = p.add_argument_group("connection (before or after the command)")
    conn.add_argument(
        "--demo", type=path_arg, default=default, help="demo.json written by 'demo --serve'"
    )
    for flag, text in members.items():
        conn.add_argument(f"--{flag}", default=default, help=text)
    conn.add_argument("--gateway", default=default, help="gateway address HOST:PORT")
    conn.add_argument("--ca", type=path_arg, default=default, help="CA certificate (PEM)")
    conn.add_argument("--cert", type=path_arg, default=default, help="client certificate (PEM)")
    conn.add_argument("--key", type=path_arg, default=default, help="private key (PEM)")
    conn.add_argument("--token-file", type=path_arg, default=default, help="file holding a JWT")
    conn.add_argument(
        "--dev-officer", default=default, help="insecure development gateway: officer id header"
    )
    conn.add_argument(
        "--timeout",
        type=float,
        default=60.0 if default is None else default,
        help="deadline in seconds (default 60)",
    )


def connect_as(
    args: argparse.Namespace, *, group: str, flag: str, dev_header: str
) -> tuple[grpc.aio.Channel, Metadata]:
    """A channel for the flags of :func:`add_connection_options`: with ``--demo``,
    the member of demo.json's ``group`` (``"officers"``) that ``--<flag>``
    (``officer``) names fills in the flags not given (a flag given always wins);
    without it, ``--gateway`` with
    ``--ca --cert --key --token-file``, or ``--dev-officer`` sent as ``dev_header``
    to an insecure development gateway.

    Raises UsageError (flags missing), OSError (a file unreadable), KeyError (demo.json).
    """
    address, ca, cert, key, token_file = (
        args.gateway,
        args.ca,
        args.cert,
        args.key,
        args.token_file,
    )
    if args.demo:
        demo = read_demo(args.demo)
        found = demo_member(demo, group, getattr(args, flag), flag)
        address = address or demo["gateway_address"]
        ca = ca or found["ca"]
        cert = cert or found["cert"]
        key = key or found["key"]
        token_file = token_file or found["token_file"]
    elif not address:
        raise UsageError("name --gateway (or --demo)")
    elif args.dev_officer:
        return open_channel(address, dev_header=(dev_header, args.dev_officer))
    if not (ca and cert and key and token_file):
        raise UsageError("--gateway needs --ca, --cert, --key and --token-file")
    return open_channel(
        address,
        ca=ca.read_bytes(),
        cert=cert.read_bytes(),
        key=key.read_bytes(),
        token=token_file.read_text(encoding="utf-8").strip(),
    )


_MODES = {"free": query_pb2.QUERY_MODE_FREE, "paid": query_pb2.QUERY_MODE_PAID}


def build_request(
    *,
    enterprise: str | None = None,
    person: str | None = None,
    purpose: str,
    mode: str = "free",
    datasets: Sequence[str] = (),
    consent_token: str = "",
    case_reference: str = "",
    officer_id: str = "",
    represented_party: str = "",
    request_id: str | None = None,
    legal_basis: str = "",
) -> query_pb2.QueryRequest:
    """A ``QueryRequest``; ``datasets`` as ``"department/dataset"`` strings."""
    if (enterprise is None) == (person is None):
        raise ValueError("name exactly one of enterprise or person")
    req = query_pb2.QueryRequest(
        request_id=request_id or str(uuid.uuid4()),
        purpose=purpose,
        mode=_MODES[mode],
        consent_token=consent_token,
        case_reference=case_reference,
        officer_id=officer_id,
        represented_party=represented_party,
        legal_basis=legal_basis,
    )
    if enterprise is not None:
        req.subject.type, req.subject.id = common_pb2.SUBJECT_TYPE_ENTERPRISE, enterprise
    else:
        req.subject.type, req.subject.id = common_pb2.SUBJECT_TYPE_PERSON, person or ""
    for ref in datasets:
        dept, _, ds = ref.partition("/")
        req.datasets.add(department=dept, dataset=ds)
    return req


class QueryClient:
    """An agency's client of ``QueryService`` over one channel, sending the same metadata on every
    call.
    """

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self._channel = channel
        self._metadata = metadata
        self.stub = query_pb2_grpc.QueryServiceStub(channel)
        #: ``SubjectService`` on the same channel (a self-service kiosk's own query records).
        self.subject_stub = subject_pb2_grpc.SubjectServiceStub(channel)

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        ca: bytes | None = None,
        cert: bytes | None = None,
        key: bytes | None = None,
        token: str | None = None,
        dev_agency: str | None = None,
    ) -> QueryClient:
        """Mutual TLS when ``ca`` is given; plaintext with a development
        identity header otherwise (only a gateway started with
        ``insecure_dev_plaintext`` accepts that)."""
        dev_header = ("x-dev-agency-id", dev_agency) if dev_agency else None
        channel, metadata = open_channel(
            address, ca=ca, cert=cert, key=key, token=token, dev_header=dev_header
        )
        return cls(channel, metadata)

    async def query(self, *, timeout: float = 10.0, **kwargs: object) -> query_pb2.QueryResponse:
        """Build and send a query (see :func:`build_request`). Raises ``grpc.aio.AioRpcError``."""
        return await self.send(build_request(**kwargs), timeout=timeout)  # type: ignore[arg-type]

    async def send(
        self, request: query_pb2.QueryRequest, *, timeout: float = 10.0
    ) -> query_pb2.QueryResponse:
        """Send one ``QueryRequest`` (``timeout`` in seconds) and return the response."""
        response: query_pb2.QueryResponse = await self.stub.Query(
            request, timeout=timeout, metadata=self._metadata
        )
        return response

    async def report(
        self, request: query_pb2.QueryRequest, *, timeout: float = 20.0
    ) -> report_pb2.ReportResponse:
        """Ask ``ReportService.Report`` for a signed report of ``request`` (``timeout`` in
        seconds; the gateway waits up to a second for a checkpoint). Raises
        ``grpc.aio.AioRpcError``."""
        response: report_pb2.ReportResponse = await report_pb2_grpc.ReportServiceStub(
            self._channel
        ).Report(report_pb2.ReportRequest(query=request), timeout=timeout, metadata=self._metadata)
        return response

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel, for other services' stubs."""
        return self._channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every call sends (the bearer token)."""
        return self._metadata

    async def query_records(
        self, *, page_size: int = 0, page_token: str = "", timeout: float = 10.0
    ) -> subject_pb2.ListQueryRecordsResponse:
        """One page of the caller's own subject's query records (``SubjectService``).
        Raises ``grpc.aio.AioRpcError``."""
        response: subject_pb2.ListQueryRecordsResponse = await self.subject_stub.ListQueryRecords(
            subject_pb2.ListQueryRecordsRequest(page_size=page_size, page_token=page_token),
            timeout=timeout,
            metadata=self._metadata,
        )
        return response

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> QueryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


_TLS_FLAGS = ("ca", "cert", "key", "token_file")


def agency_connection(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how an agency command (``credit-query``, ``credit-query screen``) connects:
    explicit flags, then ``--demo``'s values for the rest (``args``: ``demo``, ``agency``,
    ``gateway``, ``ca``, ``cert``, ``key``, ``token_file``, ``insecure_dev_plaintext``).

    Raises:
        UsageError: a usage problem (one line naming it).
        OSError, KeyError, ValueError: a file named cannot be read or the demo file is bad.
    """
    given: dict[str, Any] = {"gateway": args.gateway} | {f: getattr(args, f) for f in _TLS_FLAGS}
    if args.demo:
        demo = read_demo(args.demo)
        from_demo: dict[str, Any] = {"gateway": demo["gateway_address"]}
        if "ca_cert" in demo:
            from_demo |= demo_member(demo, "agencies", args.agency, "agency")
        given = {k: v if v is not None else from_demo.get(k) for k, v in given.items()}
    if not given["gateway"]:
        raise UsageError("name --gateway (or --demo)")
    conn: dict[str, Any] = {"address": given["gateway"]}
    tls = [f for f in _TLS_FLAGS if given[f] is not None]
    if args.insecure_dev_plaintext:
        if tls:
            flags = ", ".join("--" + f.replace("_", "-") for f in tls)
            raise UsageError(f"--insecure-dev-plaintext excludes {flags}")
        conn["dev_agency"] = args.agency or "development"
        return conn
    if len(tls) < len(_TLS_FLAGS):
        # Never a silent fall-back to plaintext: a token or an identity in clear is a leak.
        missing = [f for f in _TLS_FLAGS if given[f] is None]
        raise UsageError(
            "mutual TLS needs "
            + ", ".join("--" + f.replace("_", "-") for f in missing)
            + " (or --demo); --insecure-dev-plaintext only for a development gateway"
        )
    return conn | {
        "ca": given["ca"].read_bytes(),
        "cert": given["cert"].read_bytes(),
        "key": given["key"].read_bytes(),
        "token": given["token_file"].read_text(encoding="utf-8").strip(),
    }
