"""A small SDK to serve the department adapter API over any store.

A department implements :class:`Store` (or uses :class:`adapters.sql.SqlStore`)
and calls :func:`serve`::

    server = await serve(store, "0.0.0.0:7443", server_credentials=creds,
                         allowed_clients=frozenset({FEDERATION_IDENTITY}))
    print(bound_port(server))
    await server.wait_for_termination()

The SDK does the parts every department must get right, so that no department
gets them wrong:

* it validates each request: the subject identifier (GB 32100 / GB 11643 check
  characters), and every dataset and field against the store's schema; anything
  unknown is refused with ``INVALID_ARGUMENT`` naming it;
* it returns only the fields asked for: data minimisation is enforced on the
  department's side too, not only by the gateway;
* it converts the store's Python values to typed ``FieldValue`` messages and
  refuses values that do not fit the declared type (money is integer fen,
  never a float);
* with TLS it requires a client certificate from the configured CA *and* that
  it carries the gateway's federation identity, the URI SAN
  ``urn:credit-gateway:federation`` (:data:`gateway.pki.FEDERATION_IDENTITY`),
  never judged by its common name, which any holder of a certificate from the
  CA may choose; anyone else gets ``PERMISSION_DENIED`` (``NOT_THE_GATEWAY``);
* it serves standard gRPC health checking and server reflection;
* objections (Decree 631 Art. 25) and credit-repair applications routed by the gateway
  (``ReceiveObjection``, ``ObjectionAnswer``): it validates them, checks through the
  store's own ``lookup`` that the subject has the record named (``NOT_FOUND``
  ``NO_SUCH_RECORD`` otherwise), and hands them to :meth:`Store.receive_objection`; the
  gateway polls :meth:`Store.objection_answer` until the department has answered. A store
  that takes no objections answers ``UNIMPLEMENTED``.

Why one module (some 800 lines): it is the one file a department's engineers read and import;
the store interface, the servicer that validates against it, the mutual-TLS gate and the
serving helpers are one contract, and keeping them together keeps it readable in one sitting.
"""

from __future__ import annotations

import abc
import datetime as dt
import inspect
import logging
import re
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, cast

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from gateway.auth.certs import FEDERATION_IDENTITY
from gateway.errors import (
    ConfigError,
    DepartmentError,
    GatewayError,
    InternalError,
    InvalidArgumentError,
    InvalidIdentifierError,
    NotFoundError,
    PermissionDeniedError,
    abort,
)
from gateway.identifiers import IdentifierError, validate_resident_id, validate_uscc
from protos.credit.v1 import adapter_pb2, adapter_pb2_grpc, common_pb2

__all__ = [
    "FEDERATION_IDENTITY",
    "OUTCOMES",
    "SERVICE_NAME",
    "AdapterServicer",
    "FieldTypeValue",
    "LookupResult",
    "ObjectionAnswer",
    "ReceivedObjection",
    "Store",
    "StoreFailure",
    "StoredRecord",
    "SubjectType",
    "Value",
    "bound_port",
    "field_value",
    "mtls_server_credentials",
    "serve",
    "shutdown",
]

log = logging.getLogger(__name__)

# Client certificates remembered by the allow-list check (the gateway has one; the bound
# only protects memory from a flood of certificates the CA signed).
_CERT_CACHE_SIZE = 256

#: The full name of the adapter service, as health checking knows it.
SERVICE_NAME: Final = adapter_pb2.DESCRIPTOR.services_by_name["DepartmentAdapter"].full_name

SubjectType: TypeAlias = Literal["enterprise", "person"]
#: What a store may put in a record's field. ``None`` means "no value" (SQL
#: NULL): the field is left out of the record rather than sent empty.
Value: TypeAlias = str | int | bool | dt.date | None
FieldTypeValue: TypeAlias = common_pb2.FieldType.ValueType

_SUBJECT_TYPES: Final[Mapping[int, SubjectType]] = {
    common_pb2.SUBJECT_TYPE_ENTERPRISE: "enterprise",
    common_pb2.SUBJECT_TYPE_PERSON: "person",
}


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as a store holds it, before the SDK types and trims it."""

    #: Department-local, stable across queries (objections refer to it).
    record_id: str
    fields: Mapping[str, Value]
    #: Negative information: when the bad act or event ended; ``None`` while
    #: it is ongoing or for datasets that are not negative.
    event_end_date: dt.date | str | None = None
    #: An objection is pending against the record (Art. 25).
    disputed: bool = False


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a store found about one subject."""

    #: dataset -> records. Datasets with nothing may be left out.
    records: Mapping[str, Sequence[StoredRecord]] = field(default_factory=dict)
    #: False only when the department holds nothing at all about the subject,
    #: in any dataset, asked for or not.
    subject_known: bool = False


#: Outcome names as stores and mapping files write them -> the wire enum.
OUTCOMES: Final[Mapping[str, int]] = {
    "pending": common_pb2.OBJECTION_OUTCOME_PENDING,
    "corrected": common_pb2.OBJECTION_OUTCOME_CORRECTED,
    "confirmed": common_pb2.OBJECTION_OUTCOME_CONFIRMED,
    "undetermined": common_pb2.OBJECTION_OUTCOME_UNDETERMINED,
    "repair_approved": common_pb2.OBJECTION_OUTCOME_REPAIR_APPROVED,
    "repair_refused": common_pb2.OBJECTION_OUTCOME_REPAIR_REFUSED,
}
_KINDS: Final[Mapping[int, str]] = {
    common_pb2.OBJECTION_KIND_OBJECTION: "objection",
    common_pb2.OBJECTION_KIND_REPAIR: "repair",
}
_HEX64: Final = re.compile(r"[0-9a-f]{64}\Z")
_MAX_RECORD_ID = 128
_MAX_GROUNDS = 1000
_MAX_EVIDENCE = 16


@dataclass(frozen=True, slots=True)
class ReceivedObjection:
    """An objection (``kind`` ``"objection"``) or a credit-repair application (``"repair"``)
    the gateway routed to this department, validated by the SDK. Dates are ISO
    ``YYYY-MM-DD`` (Beijing time); ``due_on`` is ``filed_on`` + 20 days (Art. 25)."""

    objection_id: str
    kind: str
    subject_type: SubjectType
    subject_id: str = field(repr=False)
    dataset: str
    record_id: str
    grounds: str
    evidence_sha256: tuple[str, ...]
    filed_on: str
    due_on: str


@dataclass(frozen=True, slots=True)
class ObjectionAnswer:
    """How a department answered: ``outcome`` is a key of :data:`OUTCOMES` (``"pending"``
    until answered), ``answered_on`` the day it answered, ``note`` its account."""

    outcome: str = "pending"
    answered_on: dt.date | str | None = None
    note: str = ""


class StoreFailure(DepartmentError):
    """A store could not answer; the RPC fails with ``code``.

    Stores raise it for failures they understand (database locked, a backend
    down: ``UNAVAILABLE``). Any other exception is a bug and becomes
    ``INTERNAL`` with a generic message.
    """

    def __init__(
        self, message: str, *, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    ) -> None:
        super().__init__(message, reason="STORE_FAILURE")
        # An instance attribute shadows the class default, so one exception
        # type can carry whichever status the store needs.
        self.code = code


class Store(abc.ABC):
    """Where a department's credit data lives. Implement two methods.

    ``lookup`` may return more than was asked (a whole row, say): the SDK
    trims every record to the wanted fields before anything leaves the
    process. It must not block the event loop: run blocking I/O in a thread.
    """

    #: The department id, as in the catalog (``market``, ``tax``...).
    department: str

    #: Whether the SDK trims records to the fields asked for. Always true in
    #: production; only the test fake (:class:`adapters.testing.InMemoryStore`
    #: with ``extra_fields``) turns it off, to prove that the gateway drops
    #: what it did not ask for.
    sdk_minimises: bool = True

    @abc.abstractmethod
    def schema(self) -> Mapping[str, Mapping[str, FieldTypeValue]]:
        """dataset -> field -> ``common_pb2.FieldType``. Must not change while serving."""

    @abc.abstractmethod
    async def lookup(
        self, subject_type: SubjectType, subject_id: str, wanted: Mapping[str, Sequence[str]]
    ) -> LookupResult:
        """Records of one subject in the ``wanted`` datasets (dataset -> fields).

        ``subject_id`` has been validated and normalised; ``wanted`` names only
        datasets and fields of :meth:`schema`, each with at least one field.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release resources (connections, threads). Default: nothing to do."""

    async def receive_objection(self, objection: ReceivedObjection) -> bool:
        """Keep an objection the gateway routed; True if it is new, False if this
        ``objection_id`` was received before (a retry: keep the first).

        The SDK has checked that the subject has the record. Default: this department
        takes no objections (``UNIMPLEMENTED``).

        Raises:
            StoreFailure: the objection could not be kept.
        """
        raise StoreFailure(
            f"department {self.department} takes no objections through this adapter",
            code=grpc.StatusCode.UNIMPLEMENTED,
        )

    async def objection_answer(self, objection_id: str) -> ObjectionAnswer:
        """How the department has answered objection ``objection_id`` so far.

        Raises:
            NotFoundError: no objection with this id was received.
            StoreFailure: the store cannot be read (default: ``UNIMPLEMENTED``).
        """
        raise StoreFailure(
            f"department {self.department} takes no objections through this adapter",
            code=grpc.StatusCode.UNIMPLEMENTED,
        )


def field_value(value: str | int | bool | dt.date, ftype: FieldTypeValue) -> common_pb2.FieldValue:
    """Convert a Python value to a ``FieldValue`` of the declared type.

    Raises ``ValueError`` when the value does not fit: it is the department's
    data that is wrong, and sending it anyway would mislead the gateway.
    """
    if ftype == common_pb2.FIELD_TYPE_TEXT:
        if isinstance(value, str):
            return common_pb2.FieldValue(text=value)
    elif ftype == common_pb2.FIELD_TYPE_INTEGER:
        if isinstance(value, int) and not isinstance(value, bool):
            return common_pb2.FieldValue(integer=value)
    elif ftype == common_pb2.FIELD_TYPE_BOOLEAN:
        # SQLite has no boolean type: 0 and 1 are how it stores one.
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return common_pb2.FieldValue(boolean=bool(value))
    elif ftype == common_pb2.FIELD_TYPE_DATE:
        return common_pb2.FieldValue(date=_iso_date(value))
    elif ftype == common_pb2.FIELD_TYPE_MONEY_FEN:
        if isinstance(value, float):
            raise ValueError("money must be integer fen, never a float")
        if isinstance(value, int) and not isinstance(value, bool):
            return common_pb2.FieldValue(money_fen=value)
    else:
        raise ValueError(f"unknown field type {ftype}")
    raise ValueError(
        f"a {type(value).__name__} does not fit type {common_pb2.FieldType.Name(ftype)}"
    )


def _iso_date(value: object) -> str:
    if isinstance(value, dt.datetime):
        raise ValueError("a date field needs a date, not a timestamp")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise ValueError("a date must be YYYY-MM-DD")


def _infer_type(value: str | int | bool | dt.date) -> FieldTypeValue:
    # Only for fields outside the schema, which only the leaky test fake sends.
    if isinstance(value, bool):
        return common_pb2.FIELD_TYPE_BOOLEAN
    if isinstance(value, int):
        return common_pb2.FIELD_TYPE_INTEGER
    if isinstance(value, dt.date):
        return common_pb2.FIELD_TYPE_DATE
    return common_pb2.FIELD_TYPE_TEXT


def _shown(name: str) -> str:
    # Names in error messages come from the caller: bounded and repr()-quoted
    # so that a message never carries control characters or a novel.
    return repr(name[:64] + ("..." if len(name) > 64 else ""))


@dataclass(frozen=True, slots=True)
class _Request:
    subject_type: SubjectType
    subject_id: str
    wanted: dict[str, tuple[str, ...]]


class AdapterServicer(adapter_pb2_grpc.DepartmentAdapterServicer):
    """The ``DepartmentAdapter`` service over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # A snapshot: the schema is fixed while serving, and copying it once
        # keeps validation a pair of dict look-ups per field.
        self._schema: dict[str, dict[str, FieldTypeValue]] = {
            ds: dict(fields) for ds, fields in store.schema().items()
        }
        self._describe = adapter_pb2.DescribeResponse(
            department=store.department,
            datasets=[
                adapter_pb2.DatasetSchema(
                    name=ds,
                    fields=[adapter_pb2.FieldSchema(name=f, type=t) for f, t in fields.items()],
                )
                for ds, fields in self._schema.items()
            ],
        )

    async def Describe(
        self,
        request: adapter_pb2.DescribeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> adapter_pb2.DescribeResponse:
        """RPC ``Describe``: the datasets and fields this department serves.

        Never fails itself; with mutual TLS a client without the gateway's federation
        identity is refused PERMISSION_DENIED before it runs.
        """
        return self._describe

    async def Lookup(
        self,
        request: adapter_pb2.LookupRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> adapter_pb2.LookupResponse:
        """RPC ``Lookup``: validate, ask the store, return only the fields asked for.

        Statuses: INVALID_ARGUMENT for an unknown subject type, an identifier that fails
        GB 32100-2015 (enterprise) or GB 11643-1999 (person), an unknown dataset
        (``UNKNOWN_DATASET``) or field (``UNKNOWN_FIELD``), a dataset named twice or with no
        fields; the status of any GatewayError the store raises; INTERNAL, with no detail,
        for any other failure of the store (logged here with the request id). With mutual
        TLS, PERMISSION_DENIED for a client without the gateway's federation identity.
        """
        try:
            req = self._validate(request)
            result = await self._store.lookup(req.subject_type, req.subject_id, req.wanted)
            response = self._response(result, req.wanted)
        except InternalError as err:
            log.error("lookup failed (request_id=%r): %s", request.request_id, err.message)
            await abort(context, err)
        except GatewayError as err:
            await abort(context, err)
        except Exception:
            # A bug in the store or bad data in it: the traceback stays in the
            # department's log, the gateway sees a generic INTERNAL.
            log.exception("lookup failed (request_id=%r)", request.request_id)
            await abort(context, InternalError("the department's store failed"))
        # Joinable with the gateway's audit log by request id (as X-Road does);
        # the subject's identifier is personal data and is not logged.
        log.info(
            "lookup request_id=%r agency=%r purpose=%r datasets=%s known=%s",
            request.request_id,
            request.agency_id,
            request.purpose,
            ",".join(req.wanted),
            result.subject_known,
        )
        return response

    async def ReceiveObjection(
        self,
        request: adapter_pb2.ReceiveObjectionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> adapter_pb2.ReceiveObjectionResponse:
        """RPC ``ReceiveObjection``: validate, check the subject has the record, keep it.

        Statuses: INVALID_ARGUMENT for a malformed id, kind, subject, dataset, record id,
        grounds (over 1000 characters), evidence digest (not 64 lower-case hex; over 16) or
        date; NOT_FOUND ``NO_SUCH_RECORD`` when the subject has no record ``record_id`` in
        the dataset; UNIMPLEMENTED when the store takes no objections; INTERNAL for a bug.
        """
        try:
            objection = self._objection(request)
            # The store's own lookup proves the record is the subject's: an objection
            # never lands on a record of someone else.
            fields = next(iter(self._schema[objection.dataset]))
            found = await self._store.lookup(
                objection.subject_type, objection.subject_id, {objection.dataset: (fields,)}
            )
            if not any(
                r.record_id == objection.record_id for r in found.records.get(objection.dataset, ())
            ):
                raise NotFoundError(
                    "the subject has no such record in this dataset", reason="NO_SUCH_RECORD"
                )
            newly = await self._store.receive_objection(objection)
        except InternalError as err:
            log.error("objection failed (id=%r): %s", request.objection_id, err.message)
            await abort(context, err)
        except GatewayError as err:
            await abort(context, err)
        except Exception:
            log.exception("objection failed (id=%r)", request.objection_id)
            await abort(context, InternalError("the department's store failed"))
        log.info(
            "objection received id=%s kind=%s dataset=%s newly=%s",
            objection.objection_id,
            objection.kind,
            objection.dataset,
            newly,
        )
        return adapter_pb2.ReceiveObjectionResponse(newly=newly)

    async def ObjectionAnswer(
        self,
        request: adapter_pb2.ObjectionAnswerRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> adapter_pb2.ObjectionAnswerResponse:
        """RPC ``ObjectionAnswer``: the department's answer so far (PENDING until it answers).

        Statuses: INVALID_ARGUMENT for an id that is not a UUID; NOT_FOUND for an objection
        never received; UNIMPLEMENTED when the store takes no objections; INTERNAL when the
        store holds an outcome that is not one of :data:`OUTCOMES`.
        """
        try:
            objection_id = _objection_id(request.objection_id)
            answer = await self._store.objection_answer(objection_id)
            outcome = OUTCOMES.get(answer.outcome)
            if outcome is None:
                raise InternalError(f"unknown outcome {answer.outcome!r} in the store")
            response = adapter_pb2.ObjectionAnswerResponse(
                outcome=cast("common_pb2.ObjectionOutcome.ValueType", outcome),
                note=answer.note,
            )
            if answer.answered_on is not None:
                response.answered_on = _iso_date(answer.answered_on)
        except InternalError as err:
            log.error("objection answer failed (id=%r): %s", request.objection_id, err.message)
            await abort(context, err)
        except GatewayError as err:
            await abort(context, err)
        except Exception:
            log.exception("objection answer failed (id=%r)", request.objection_id)
            await abort(context, InternalError("the department's store failed"))
        return response

    def _objection(self, request: adapter_pb2.ReceiveObjectionRequest) -> ReceivedObjection:
        objection_id = _objection_id(request.objection_id)
        kind = _KINDS.get(request.kind)
        if kind is None:
            raise InvalidArgumentError("kind", "must be OBJECTION_KIND_OBJECTION or _REPAIR")
        subject_type, subject_id = self._subject(request.subject)
        if request.dataset not in self._schema:
            raise InvalidArgumentError(
                "dataset", f"unknown dataset {_shown(request.dataset)}", reason="UNKNOWN_DATASET"
            )
        if not request.record_id or len(request.record_id) > _MAX_RECORD_ID:
            raise InvalidArgumentError("record_id", f"1 to {_MAX_RECORD_ID} characters")
        if len(request.grounds) > _MAX_GROUNDS:
            raise InvalidArgumentError("grounds", f"at most {_MAX_GROUNDS} characters")
        if len(request.evidence_sha256) > _MAX_EVIDENCE or not all(
            _HEX64.match(d) for d in request.evidence_sha256
        ):
            raise InvalidArgumentError(
                "evidence_sha256", f"at most {_MAX_EVIDENCE} SHA-256 digests, 64 lower-case hex"
            )
        for name in ("filed_on", "due_on"):
            try:
                _iso_date(getattr(request, name))
            except ValueError:
                raise InvalidArgumentError(name, "must be YYYY-MM-DD") from None
        return ReceivedObjection(
            objection_id=objection_id,
            kind=kind,
            subject_type=subject_type,
            subject_id=subject_id,
            dataset=request.dataset,
            record_id=request.record_id,
            grounds=request.grounds,
            evidence_sha256=tuple(request.evidence_sha256),
            filed_on=request.filed_on,
            due_on=request.due_on,
        )

    @staticmethod
    def _subject(subject: common_pb2.Subject) -> tuple[SubjectType, str]:
        subject_type = _SUBJECT_TYPES.get(subject.type)
        if subject_type is None:
            raise InvalidArgumentError(
                "subject.type", "must be SUBJECT_TYPE_ENTERPRISE or SUBJECT_TYPE_PERSON"
            )
        check = validate_uscc if subject_type == "enterprise" else validate_resident_id
        try:
            return subject_type, check(subject.id)
        except IdentifierError as exc:
            raise InvalidIdentifierError(exc.field, exc.problem) from None

    def _validate(self, request: adapter_pb2.LookupRequest) -> _Request:
        subject_type, subject_id = self._subject(request.subject)
        wanted: dict[str, tuple[str, ...]] = {}
        for i, item in enumerate(request.wanted):
            fields = self._schema.get(item.dataset)
            if fields is None:
                raise InvalidArgumentError(
                    f"wanted[{i}].dataset",
                    f"unknown dataset {_shown(item.dataset)}: department "
                    f"{self._store.department} serves {', '.join(self._schema)}",
                    reason="UNKNOWN_DATASET",
                )
            if item.dataset in wanted:
                raise InvalidArgumentError(
                    f"wanted[{i}].dataset", f"dataset {_shown(item.dataset)} is named twice"
                )
            if not item.fields:
                raise InvalidArgumentError(
                    f"wanted[{i}].fields",
                    f"no fields for dataset {_shown(item.dataset)}: ask only for what is granted",
                )
            for j, name in enumerate(item.fields):
                if name not in fields:
                    raise InvalidArgumentError(
                        f"wanted[{i}].fields[{j}]",
                        f"unknown field {_shown(name)} in dataset {_shown(item.dataset)}",
                        reason="UNKNOWN_FIELD",
                    )
            # dict.fromkeys: de-duplicated, order kept.
            wanted[item.dataset] = tuple(dict.fromkeys(item.fields))
        return _Request(subject_type, subject_id, wanted)

    def _response(
        self, result: LookupResult, wanted: Mapping[str, Sequence[str]]
    ) -> adapter_pb2.LookupResponse:
        minimise = self._store.sdk_minimises
        response = adapter_pb2.LookupResponse(subject_known=result.subject_known)
        # Only the datasets asked for, in the order asked for.
        datasets = list(wanted) if minimise else list(dict.fromkeys([*wanted, *result.records]))
        for ds in datasets:
            out = response.results.add(dataset=ds)
            types = self._schema.get(ds, {})
            for stored in result.records.get(ds, ()):
                rec = out.records.add(record_id=stored.record_id, disputed=stored.disputed)
                if stored.event_end_date is not None:
                    rec.event_end_date = _iso_date(stored.event_end_date)
                names = wanted.get(ds, ()) if minimise else stored.fields
                for name in names:
                    value = stored.fields.get(name)
                    if value is None:
                        continue
                    ftype = types.get(name)
                    try:
                        rec.fields[name].CopyFrom(
                            field_value(value, ftype if ftype is not None else _infer_type(value))
                        )
                    except ValueError as exc:
                        # Names only: the value may be personal data.
                        raise InternalError(f"{ds}.{name}: {exc}") from exc
        return response


def _objection_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidArgumentError("objection_id", "must be a UUID") from None


# --- mutual TLS: only the gateway's federation identity --------------------------


def _uri_identities(cert_pem: bytes) -> frozenset[str]:
    """The URI subject alternative names of a PEM certificate (empty if none or unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension):
        # Unreadable or ambiguous (two SAN extensions): no identity, so refused.
        return frozenset()
    return frozenset(san.get_values_for_type(x509.UniformResourceIdentifier))


def _check_identities(allowed: frozenset[str]) -> frozenset[str]:
    for identity in allowed:
        # A URI has a scheme; a bare word is a common name, which anyone holding a
        # certificate from the CA can choose (an agency registered as "credit-gateway").
        scheme, sep, rest = identity.partition(":")
        if not sep or not rest or not scheme.isascii() or not scheme.isalpha():
            raise ConfigError(
                "allowed_clients",
                f"{identity!r} is not a URI: name the gateway's federation identity (the URI"
                f" SAN of its client certificate, {FEDERATION_IDENTITY}), never a common name",
            )
    return allowed


class _AllowedClients(grpc.aio.ServerInterceptor):
    """Refuse every RPC whose client certificate does not carry an allowed identity.

    The TLS handshake already proved the client holds a certificate from the configured CA;
    this narrows it to the gateway's federation identity: a URI subject alternative name
    (:data:`gateway.pki.FEDERATION_IDENTITY`) that only the federation certificate carries,
    so that another holder of a certificate from the same CA (an agency, even one whose CN is
    ``credit-gateway``; a sibling department) cannot ask a department directly. The subject
    CN is never consulted. Applies to every service, health and reflection included.
    """

    def __init__(self, allowed: frozenset[str]) -> None:
        self._allowed = allowed
        # A connection re-presents its certificate on every call: parse each one once.
        self._seen: dict[bytes, bool] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        # grpc's handlers are namedtuples: swap in guarded behaviours.
        replaced: dict[str, Any] = {}
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, kind, None)
            if behaviour is not None:
                replaced[kind] = self._guard(behaviour)
        return cast("grpc.RpcMethodHandler[Any, Any]", cast(Any, handler)._replace(**replaced))

    def _guard(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        check = self._check
        if inspect.isasyncgenfunction(behaviour):

            async def guarded_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await check(context)
                async for item in behaviour(request, context):
                    yield item

            return guarded_stream

        async def guarded(request: Any, context: Any) -> Any:
            await check(context)
            return await behaviour(request, context)

        return guarded

    def _allows(self, cert_pem: bytes) -> bool:
        verdict = self._seen.get(cert_pem)
        if verdict is None:
            verdict = bool(_uri_identities(cert_pem) & self._allowed)
            if len(self._seen) >= _CERT_CACHE_SIZE:
                self._seen.clear()  # a bound on memory, not a policy
            self._seen[cert_pem] = verdict
        return verdict

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        pems = list(context.auth_context().get("x509_pem_cert", ()))
        if not pems or not self._allows(pems[0]):
            # Nothing from the certificate is logged: its names are the holder's choice.
            log.warning("refused a client certificate without the gateway's federation identity")
            await abort(
                context,
                PermissionDeniedError(
                    "this department adapter accepts only the gateway's certificate"
                    " (its federation identity)",
                    reason="NOT_THE_GATEWAY",
                ),
            )


# --- serving ------------------------------------------------------------------

# Per-server facts that grpc.aio.Server has no place for; weak, so a stopped
# and dropped server takes its entry with it.
_PORTS: weakref.WeakKeyDictionary[grpc.aio.Server, int] = weakref.WeakKeyDictionary()
_HEALTH: weakref.WeakKeyDictionary[grpc.aio.Server, Any] = weakref.WeakKeyDictionary()


async def serve(
    store: Store,
    listen: str,
    *,
    server_credentials: grpc.ServerCredentials | None,
    allowed_clients: frozenset[str] | None,
) -> grpc.aio.Server:
    """Start serving ``store`` on ``listen`` (``HOST:PORT``; port 0 picks one).

    ``server_credentials`` must require client certificates (see
    :func:`mtls_server_credentials`); ``allowed_clients`` names the client
    identities let in: URI subject alternative names, normally just
    ``{FEDERATION_IDENTITY}`` (common names are refused: anyone with a
    certificate from the CA may choose one). ``server_credentials=None`` serves
    plaintext, for development only, and then ``allowed_clients`` must be
    ``None``: without TLS there is no certificate to check.

    Returns the started server; :func:`bound_port` tells the port. Stop it
    with :func:`shutdown` (health turns NOT_SERVING first, then a drain).
    Raises :class:`ConfigError` for a bad combination or an address in use.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if server_credentials is not None:
        if not allowed_clients:
            raise ConfigError(
                "allowed_clients",
                f"with TLS, name the client identities to accept ({FEDERATION_IDENTITY})",
            )
        interceptors.append(_AllowedClients(_check_identities(allowed_clients)))
    elif allowed_clients:
        raise ConfigError("allowed_clients", "a client allow-list needs TLS")

    server = grpc.aio.server(
        interceptors=interceptors,
        # Two adapters on one port would split the traffic silently.
        options=[("grpc.so_reuseport", 0)],
    )
    adapter_pb2_grpc.add_DepartmentAdapterServicer_to_server(AdapterServicer(store), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server
    )
    try:
        if server_credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, server_credentials)
    except RuntimeError as exc:  # grpc raises this when the bind fails
        raise ConfigError("listen", f"cannot listen on {listen}: {exc}") from None
    if port == 0:
        raise ConfigError("listen", f"cannot listen on {listen}")
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    _PORTS[server] = port
    _HEALTH[server] = health
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The port a server returned by :func:`serve` listens on."""
    return _PORTS[server]


async def shutdown(server: grpc.aio.Server, grace: float = 5.0) -> None:
    """Stop gracefully: report NOT_SERVING (load balancers stop sending), let
    in-flight RPCs finish within ``grace`` seconds, then stop."""
    health = _HEALTH.get(server)
    if health is not None:
        await health.enter_graceful_shutdown()
    await server.stop(grace)


def mtls_server_credentials(
    cert_chain_pem: bytes, private_key_pem: bytes, client_ca_pem: bytes
) -> grpc.ServerCredentials:
    """Server credentials that *require* a client certificate issued by ``client_ca_pem``."""
    return grpc.ssl_server_credentials(
        [(private_key_pem, cert_chain_pem)],
        root_certificates=client_ca_pem,
        require_client_auth=True,
    )
