"""The adapter SDK over the in-memory fake, served on loopback with real gRPC:
validation, minimisation, typing, and the fake's misbehaviour knobs."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from adapters.sdk import (
    SERVICE_NAME,
    LookupResult,
    StoredRecord,
    bound_port,
    field_value,
    serve,
    shutdown,
)
from adapters.testing import InMemoryStore
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from protos.credit.v1 import adapter_pb2, adapter_pb2_grpc, common_pb2

ENTERPRISE = "91350200MA2YJ1XR9G"
PERSON = "360426199101010071"
UNKNOWN = "91110000600037341L"


def _store() -> InMemoryStore:
    return InMemoryStore.from_catalog(
        load_catalog(),
        "market",
        {
            ENTERPRISE: {
                "registration": [
                    StoredRecord(
                        ENTERPRISE,
                        {
                            "name": "厦门鑫源科技有限公司",
                            "registered_capital_fen": 500_000_000,
                            "established_on": dt.date(2015, 6, 1),
                            "legal_representative": "王伟",
                        },
                    )
                ],
                "administrative_penalties": [
                    StoredRecord(
                        "17",
                        {"decision_number": "厦市监罚〔2020〕17号", "fine_fen": 5_000_000},
                        event_end_date="2021-11-01",
                        disputed=True,
                    ),
                    StoredRecord(
                        "18", {"decision_number": "厦市监罚〔2024〕3号", "fine_fen": None}
                    ),
                ],
            }
        },
    )


@pytest.fixture
def store() -> InMemoryStore:
    return _store()


@pytest.fixture
async def stub(store: InMemoryStore) -> AsyncIterator[adapter_pb2_grpc.DepartmentAdapterAsyncStub]:
    server = await serve(store, "127.0.0.1:0", server_credentials=None, allowed_clients=None)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
        yield adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
    await shutdown(server, 0)


def _request(
    subject_id: str = ENTERPRISE,
    wanted: dict[str, list[str]] | None = None,
    subject_type: common_pb2.SubjectType.ValueType = common_pb2.SUBJECT_TYPE_ENTERPRISE,
) -> adapter_pb2.LookupRequest:
    wanted = {"registration": ["name"]} if wanted is None else wanted
    return adapter_pb2.LookupRequest(
        subject=common_pb2.Subject(type=subject_type, id=subject_id),
        wanted=[adapter_pb2.DatasetFields(dataset=d, fields=f) for d, f in wanted.items()],
        request_id="req-1",
        agency_id="agency-xm-procurement",
        purpose="government_procurement",
    )


def _bad_request_field(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return str(bad.field_violations[0].field)
    raise AssertionError("no BadRequest detail")


async def test_describe_serves_the_schema(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub,
) -> None:
    response = await stub.Describe(adapter_pb2.DescribeRequest())
    assert response.department == "market"
    datasets = {d.name: {f.name: f.type for f in d.fields} for d in response.datasets}
    assert datasets["registration"]["registered_capital_fen"] == common_pb2.FIELD_TYPE_MONEY_FEN
    assert set(datasets) == {
        "registration",
        "administrative_penalties",
        "abnormal_operations",
        "annual_report_financials",
    }


async def test_only_the_fields_asked_for_come_back(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, store: InMemoryStore
) -> None:
    response = await stub.Lookup(
        _request(
            wanted={
                "registration": ["name", "established_on"],
                "administrative_penalties": ["fine_fen"],
            }
        )
    )
    assert response.subject_known
    reg, pen = response.results
    assert reg.dataset == "registration"
    (rec,) = reg.records
    assert rec.record_id == ENTERPRISE
    assert dict(rec.fields) == {
        "name": common_pb2.FieldValue(text="厦门鑫源科技有限公司"),
        "established_on": common_pb2.FieldValue(date="2015-06-01"),
    }
    first, second = pen.records
    assert dict(first.fields) == {"fine_fen": common_pb2.FieldValue(money_fen=5_000_000)}
    assert first.event_end_date == "2021-11-01" and first.disputed
    # NULL is left out, not sent empty.
    assert dict(second.fields) == {} and not second.disputed and second.event_end_date == ""
    assert store.calls[-1].wanted == {
        "registration": ("name", "established_on"),
        "administrative_penalties": ("fine_fen",),
    }


async def test_unknown_subject_is_not_known(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub,
) -> None:
    response = await stub.Lookup(_request(UNKNOWN))
    assert not response.subject_known
    assert [r.dataset for r in response.results] == ["registration"]
    assert not response.results[0].records


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        (_request(wanted={"loans": ["x"]}), "wanted[0].dataset", "unknown dataset 'loans'"),
        (
            _request(wanted={"registration": ["name", "religion"]}),
            "wanted[0].fields[1]",
            "'religion'",
        ),
        (_request(wanted={"registration": []}), "wanted[0].fields", "no fields"),
        (_request("91350200MA2YJ1XR9H"), "subject.id", "check character"),
        (
            _request(ENTERPRISE, subject_type=common_pb2.SUBJECT_TYPE_PERSON),
            "subject.id",
            "not a digit",
        ),
        (
            _request("360426199102300071", subject_type=common_pb2.SUBJECT_TYPE_PERSON),
            "subject.id",
            "birth date",
        ),
        (_request(subject_type=common_pb2.SUBJECT_TYPE_UNSPECIFIED), "subject.type", "must be"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub,
    request_: adapter_pb2.LookupRequest,
    field: str,
    words: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Lookup(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (info.value.details() or "")
    assert _bad_request_field(info.value) == field


async def test_extra_fields_knob_leaks_on_the_wire(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, store: InMemoryStore
) -> None:
    store.extra_fields = {"legal_representative": "王伟", "medical_history": "高血压"}
    response = await stub.Lookup(_request())
    fields = dict(response.results[0].records[0].fields)
    assert set(fields) == {"name", "legal_representative", "medical_history"}
    store.extra_fields = {}
    response = await stub.Lookup(_request())
    assert set(response.results[0].records[0].fields) == {"name"}


async def test_fail_with_knob_fails_with_that_status(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, store: InMemoryStore
) -> None:
    store.fail_with = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Lookup(_request())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Describe still answers: the department is up, its store is not.
    assert (await stub.Describe(adapter_pb2.DescribeRequest())).department == "market"


async def test_delay_knob_hangs_past_the_deadline(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, store: InMemoryStore
) -> None:
    store.delay_s = 5
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Lookup(_request(), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_bad_data_in_the_store_is_internal_without_details(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, store: InMemoryStore
) -> None:
    store.data[ENTERPRISE]["registration"][0] = StoredRecord(
        ENTERPRISE, {"registered_capital_fen": 5e8}
    )  # type: ignore[dict-item]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Lookup(_request(wanted={"registration": ["registered_capital_fen"]}))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error"


async def test_health_reports_serving(store: InMemoryStore) -> None:
    server = await serve(store, "127.0.0.1:0", server_credentials=None, allowed_clients=None)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await shutdown(server, 0)


async def test_allow_list_needs_tls(store: InMemoryStore) -> None:
    with pytest.raises(ConfigError):
        await serve(
            store, "127.0.0.1:0", server_credentials=None, allowed_clients=frozenset({"gateway"})
        )


def test_field_value_refuses_what_does_not_fit() -> None:
    assert field_value(1, common_pb2.FIELD_TYPE_BOOLEAN) == common_pb2.FieldValue(boolean=True)
    assert field_value("2026-02-28", common_pb2.FIELD_TYPE_DATE).date == "2026-02-28"
    for value, ftype in [
        (12.5, common_pb2.FIELD_TYPE_MONEY_FEN),
        (True, common_pb2.FIELD_TYPE_MONEY_FEN),
        ("12", common_pb2.FIELD_TYPE_INTEGER),
        (2, common_pb2.FIELD_TYPE_BOOLEAN),
        ("2026-02-30", common_pb2.FIELD_TYPE_DATE),
        ("2026-2-3", common_pb2.FIELD_TYPE_DATE),
        (dt.datetime(2026, 1, 1), common_pb2.FIELD_TYPE_DATE),
        (3, common_pb2.FIELD_TYPE_TEXT),
    ]:
        with pytest.raises(ValueError):
            field_value(value, ftype)  # type: ignore[arg-type]


def test_lookup_result_defaults_to_unknown() -> None:
    assert LookupResult() == LookupResult(records={}, subject_known=False)
