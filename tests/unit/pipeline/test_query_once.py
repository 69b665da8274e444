"""Per-query work done once (issue 13): the subject's keyed pseudonym is computed once per
query and is the one the limiter, the audit record and a later refusal's record take; a
refusal after validation is recorded without validating the request again; a response's
unknown fields never leave. The real QueryService, validator, decider and auditor; the
audit log is a capture (the auditor's own tests prove the bytes), departments are absent
(their sections come back unavailable)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.api.query import QueryService
from gateway.audit.auditor import QueryAuditor
from gateway.audit.records import encode_record
from gateway.auth.identity import Caller
from gateway.domain.catalog import load_catalog
from gateway.domain.purposes import load_purposes
from gateway.errors import AuthenticationError, RateLimitedError
from gateway.pipeline.decision import CatalogDecider
from gateway.pipeline.query import unkeyed_pseudonym
from gateway.pipeline.validation import Validator, ValidQuery
from gateway.runtime.metrics import Metrics
from protos.credit.v1 import common_pb2, query_pb2

KEY = b"k" * 32
SUBJECT = "91350200MA2YJ1XR9G"
CALLER = Caller("ndrc", "government", cert_thumbprint="ab" * 32)


class _Log:
    """Captures the records appended (the bytes the log would store, too)."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.available = True

    async def append(self, record: Any) -> Any:
        self.records.append(record)
        encode_record(record, seq=len(self.records) - 1)  # encodable, as the log needs
        return SimpleNamespace(origin="gw", index=len(self.records) - 1, leaf_hash=b"h")


class _Counting(Validator):
    calls = 0

    def validate(self, request: query_pb2.QueryRequest) -> ValidQuery:
        self.calls += 1
        return super().validate(request)


class _Limiter:
    """A rate limiter seam: records what it was given, refuses when told to."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.keys: list[str | None] = []

    def admit(
        self, agency: str, purpose: str, *, subject_key: str | None, case_reference: bool
    ) -> None:
        self.keys.append(subject_key)
        if self.refuse:
            raise RateLimitedError(
                agency, "rate", "at most 1 query a second", retry_after_s=1, quota=1
            )


class _Context:
    """The little of a ServicerContext the query path reads."""

    def time_remaining(self) -> float:
        return 5.0

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort_with_status(self, status: Any) -> None:
        raise _Aborted(status.code)


class _Aborted(Exception):
    pass


class _Auth:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse

    def authenticate(self, context: object) -> Caller:
        if self.refuse:
            raise AuthenticationError("token expired", reason="TOKEN_EXPIRED")
        return CALLER


def _service(
    *, refuse: bool, keyed: bool = True, refuse_caller: bool = False
) -> tuple[QueryService, QueryAuditor, _Log, _Counting, _Limiter, list[int]]:
    """The real service; ``keyed=False`` builds it without ``pseudonym=`` (as a pipeline
    without the audit log's key is built), ``refuse_caller`` refuses every caller."""
    catalog = load_catalog()
    log = _Log()
    purposes = load_purposes()
    # As the gateway builds it: purposes on its list are recorded in clear.
    auditor = QueryAuditor(log, KEY, gateway_origin="gw", purposes=purposes)  # type: ignore[arg-type]
    calls: list[int] = []

    def pseudonym(subject_type: str, subject_id: str) -> str:
        calls.append(1)
        return auditor.pseudonym(subject_type, subject_id)

    validator = _Counting(catalog, purposes)
    limiter = _Limiter(refuse)
    service = QueryService(
        catalog=catalog,
        validator=validator,
        decider=CatalogDecider(catalog),
        authenticator=_Auth(refuse_caller),
        clients={},
        metrics=Metrics(),
        audit=auditor,
        pseudonym=pseudonym if keyed else None,
        limiter=limiter,  # type: ignore[arg-type]
    )
    return service, auditor, log, validator, limiter, calls


def _request() -> query_pb2.QueryRequest:
    request = query_pb2.QueryRequest(
        request_id=str(uuid.uuid4()), purpose="administrative_licensing", mode=1
    )
    request.subject.type = common_pb2.SUBJECT_TYPE_ENTERPRISE
    request.subject.id = SUBJECT
    request.datasets.add(department="market", dataset="registration")
    return request


async def test_an_answered_query_pseudonymises_its_subject_once() -> None:
    service, auditor, log, validator, limiter, calls = _service(refuse=False)
    _, response = await service.answer(_request(), _Context())  # type: ignore[arg-type]
    expected = auditor.pseudonym("enterprise", SUBJECT)
    assert len(calls) == 1 and validator.calls == 1
    assert limiter.keys == [expected]
    (record,) = log.records
    assert record["subject_pseudonym"] == expected and record["outcome"] == "partial"
    assert response.receipt.log_index == 0


async def test_a_refusal_after_validation_is_recorded_without_validating_again() -> None:
    service, auditor, log, validator, _, calls = _service(refuse=True)
    request = _request()
    with pytest.raises(_Aborted):
        await service.answer(request, _Context())  # type: ignore[arg-type]
    assert validator.calls == 1 and len(calls) == 1
    (record,) = log.records
    assert record["outcome"] == "rate_limited"
    assert record["subject_pseudonym"] == auditor.pseudonym("enterprise", SUBJECT)
    assert record["request_id"] == request.request_id and record["purpose"] == request.purpose


async def test_a_refusal_by_validation_is_recorded_without_the_subject() -> None:
    service, _, log, validator, _, calls = _service(refuse=False)
    request = _request()
    request.subject.id = "91350200MA2YJ1XR9H"  # a wrong check character
    with pytest.raises(_Aborted):
        await service.answer(request, _Context())  # type: ignore[arg-type]
    assert calls == []  # nothing valid to pseudonymise
    (record,) = log.records
    assert record["outcome"] == "invalid_identifier" and record["subject_pseudonym"] == ""
    assert validator.calls == 1  # the record takes what the first validation found
    assert record["subject_type"] == "enterprise" and record["error_field"] == "subject.id"
    assert record["request_id"] == request.request_id and record["purpose"] == request.purpose
    assert SUBJECT[:-1].encode() not in encode_record(record, seq=0)


async def test_a_refusal_for_an_identifier_in_free_text_is_screened_and_validated_once() -> None:
    """Validation refuses a free text holding an identifier; its record keeps every field
    it had: the texts under the free-text rule (keyed pseudonyms, never as written)."""
    service, auditor, log, validator, _, calls = _service(refuse=False)
    request = _request()
    request.case_reference = f"case of {SUBJECT}"
    request.officer_id = "officer 7"
    with pytest.raises(_Aborted):
        await service.answer(request, _Context())  # type: ignore[arg-type]
    assert validator.calls == 1 and calls == []
    (record,) = log.records
    assert record["outcome"] == "invalid_argument" and record["error_field"] == "case_reference"
    assert record["case_reference"] == auditor.free_text(request.case_reference)
    assert record["case_reference"].startswith("hmac:")
    assert record["officer_id"] == "officer 7" and record["subject_pseudonym"] == ""
    assert SUBJECT.encode() not in encode_record(record, seq=0)


async def test_a_refusal_before_validation_validates_once_for_its_record() -> None:
    """A caller refused at authentication: the record validates the request (the first
    and only time) and takes its subject's keyed pseudonym."""
    service, auditor, log, validator, _, _ = _service(refuse=False, refuse_caller=True)
    with pytest.raises(_Aborted):
        await service.answer(_request(), _Context())  # type: ignore[arg-type]
    assert validator.calls == 1
    (record,) = log.records
    assert record["outcome"] == "token_expired" and record["agency_id"] == ""
    assert record["subject_pseudonym"] == auditor.pseudonym("enterprise", SUBJECT)


async def test_the_record_takes_the_keyed_pseudonym_only() -> None:
    """A pipeline built without the audit log's key (development) hashes without a key:
    that value stays out of the record, which the auditor then keys itself."""
    service, auditor, log, _, limiter, calls = _service(refuse=False, keyed=False)
    await service.answer(_request(), _Context())  # type: ignore[arg-type]
    assert calls == []  # the keyed function was never given to the pipeline
    assert limiter.keys == [unkeyed_pseudonym("enterprise", SUBJECT)]
    keyed = auditor.pseudonym("enterprise", SUBJECT)
    assert keyed != limiter.keys[0]
    assert log.records[0]["subject_pseudonym"] == keyed
