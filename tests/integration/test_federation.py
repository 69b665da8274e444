"""The federated query path end to end: real department processes over
mutual TLS, the real gateway, real agency certificates and tokens."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters.sdk import StoredRecord
from adapters.testing import InMemoryStore
from gateway.dev.devstack import DevStack
from gateway.domain.catalog import load_catalog
from gateway.federation import DepartmentState
from protos.credit.v1 import query_pb2
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

OK = query_pb2.SECTION_STATUS_OK
NOT_FOUND = query_pb2.SECTION_STATUS_NOT_FOUND
UNAVAILABLE = query_pb2.SECTION_STATUS_UNAVAILABLE
TIMED_OUT = query_pb2.SECTION_STATUS_TIMED_OUT
WITHHELD = query_pb2.SECTION_STATUS_WITHHELD


def statuses(response: query_pb2.QueryResponse) -> dict[str, int]:
    return {s.department: s.status for s in response.sections}


def asked(response: query_pb2.QueryResponse) -> dict[str, int]:
    """Sections of the departments that were asked (not withheld by policy)."""
    return {d: s for d, s in statuses(response).items() if s != WITHHELD}


async def test_query_across_all_enterprise_departments(stack: DevStack) -> None:
    async with stack.client("ndrc") as client:
        response = await client.query(
            enterprise=subject(stack, "enterprise_all_departments"),
            purpose="supervision_inspection",
        )
    enterprise_depts = {
        ds.department for ds in load_catalog().datasets() if "enterprise" in ds.subject_types
    }
    # The credit reference center holds only consent-bound enterprise credit
    # data (Art. 40(3)): without consent it is not even asked.
    expected = dict.fromkeys(enterprise_depts - {"pbccrc"}, OK) | {"pbccrc": WITHHELD}
    assert statuses(response) == expected
    pbccrc = next(s for s in response.sections if s.department == "pbccrc")
    assert {w.reason for w in pbccrc.withheld} == {query_pb2.WITHHOLD_REASON_CONSENT_REQUIRED}
    market = next(s for s in response.sections if s.department == "market")
    registration = next(d for d in market.datasets if d.dataset == "registration")
    assert registration.records[0].fields["name"].text  # a typed value came through
    assert response.catalog_version == load_catalog().version
    # The state secret field never left its department.
    court = next(s for s in response.sections if s.department == "court")
    assert any(w.reason == query_pb2.WITHHOLD_REASON_STATE_SECRET for w in court.withheld)
    returned = {f for d in court.datasets for r in d.records for f in r.fields}
    assert "classified_particulars" not in returned


async def test_negative_records_age_out_and_disputes_are_marked(stack: DevStack) -> None:
    async with stack.client("ndrc") as client:
        response = await client.query(
            enterprise=subject(stack, "enterprise_all_departments"),
            purpose="supervision_inspection",
        )
    datasets = [d for s in response.sections for d in s.datasets]
    assert sum(d.aged_out for d in datasets) >= 1
    assert any(r.disputed for d in datasets for r in d.records)
    cutoff = f"{int(response.query_date[:4]) - 5}{response.query_date[4:]}"
    negative = {(ds.department, ds.name) for ds in load_catalog().datasets() if ds.negative}
    for section in response.sections:
        for d in section.datasets:
            if (section.department, d.dataset) in negative:
                for r in d.records:
                    assert not r.event_end_date or r.event_end_date > cutoff


async def test_subject_no_department_knows(stack: DevStack) -> None:
    async with stack.client("ndrc") as client:
        response = await client.query(
            person=subject(stack, "person_unknown"), purpose="supervision_inspection"
        )
    assert len(asked(response)) >= 3
    assert set(asked(response).values()) == {NOT_FOUND}


@pytest.mark.parametrize(
    ("kind", "identifier", "words"),
    [
        ("enterprise", "91110000600037341M", "wrong check character"),
        ("enterprise", "9111000060003734", "wrong length"),
        ("enterprise", "91110000600037I41L", "bad character at position 15"),
        ("person", "110105194912310021", "wrong check character"),
        ("person", "11010519490231002X", "impossible birth date"),
        ("person", "1101051949123100", "wrong length"),
        ("person", "1101051949123100A1", "bad character at position 17"),
    ],
)
async def test_malformed_identifiers(
    stack: DevStack, kind: str, identifier: str, words: str
) -> None:
    async with stack.client("ndrc") as client:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await client.query(**{kind: identifier}, purpose="supervision_inspection")
    err = exc.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in (err.details() or "")
    assert identifier not in (err.details() or "")  # personal data stays out of messages
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert bad.field_violations[0].field == "subject.id"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"purpose": "curiosity"}, "purpose"),
        ({"datasets": ["market/horoscope"]}, "datasets[0]"),
        ({"datasets": ["agriculture/household_ratings"]}, "datasets[0]"),  # persons only
        ({"case_reference": "file of 360426199101010071"}, "case_reference"),  # no identifiers
    ],
)
async def test_bad_requests_name_the_field(
    stack: DevStack, change: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {
        "enterprise": subject(stack, "enterprise_clean"),
        "purpose": "supervision_inspection",
    } | change
    async with stack.client("ndrc") as client:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await client.query(**args)
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (exc.value.details() or "").startswith(field)


async def test_only_named_datasets_are_asked(stack: DevStack) -> None:
    async with stack.client("ndrc") as client:
        response = await client.query(
            enterprise=subject(stack, "enterprise_all_departments"),
            purpose="supervision_inspection",
            datasets=["tax/credit_rating"],
        )
    assert [s.department for s in response.sections] == ["tax"]
    assert [d.dataset for d in response.sections[0].datasets] == ["credit_rating"]


# --- failing departments: each test builds its own federation ------------------


async def test_department_killed_mid_run(tmp_path: Path) -> None:
    async with await DevStack.create(tmp_path / "s", subjects=SUBJECTS) as stack:
        enterprise = subject(stack, "enterprise_all_departments")
        async with stack.client("ndrc") as client:
            before = await client.query(enterprise=enterprise, purpose="supervision_inspection")
            assert statuses(before)["tax"] == OK
            stack.departments["tax"].kill()
            await stack.departments["tax"].process.wait()  # type: ignore[union-attr]
            for _ in range(4):  # enough failures to open the circuit
                started = time.perf_counter()
                after = await client.query(
                    enterprise=enterprise, purpose="supervision_inspection", timeout=3
                )
                elapsed = time.perf_counter() - started
                assert statuses(after)["tax"] == UNAVAILABLE
                assert {d: s for d, s in statuses(after).items() if d != "tax"} == {
                    d: s for d, s in statuses(before).items() if d != "tax"
                }
                assert elapsed < 3
            tax = next(s for s in after.sections if s.department == "tax")
            assert "circuit open" in tax.detail
            open_cost = await _time(
                client.query(enterprise=enterprise, purpose="supervision_inspection")
            )
            assert open_cost < 1.0  # an open circuit costs nothing like a timeout
        breaker = stack.gateway.metrics.registry.get_sample_value(
            "credit_gateway_department_circuit_state", {"department": "tax"}
        )
        assert breaker == 1.0  # open


async def _time(coro: object) -> float:
    started = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - started


async def test_hanging_department_times_out_within_the_callers_deadline(tmp_path: Path) -> None:
    hung = InMemoryStore.from_catalog(load_catalog(), "food_drug", delay_s=30)
    async with (
        await DevStack.create(
            tmp_path / "s", subjects=SUBJECTS, fakes={"food_drug": hung}
        ) as stack,
        stack.client("ndrc") as client,
    ):
        started = time.perf_counter()
        response = await client.query(
            enterprise=subject(stack, "enterprise_all_departments"),
            purpose="supervision_inspection",
            timeout=1.5,
        )
        elapsed = time.perf_counter() - started
    assert elapsed < 1.5
    found = asked(response)
    assert found.pop("food_drug") == TIMED_OUT
    assert found and set(found.values()) == {OK}


async def test_department_returning_unasked_fields(tmp_path: Path) -> None:
    catalog = load_catalog()
    enterprise = "91350200MA2YJ1XR9G"
    record = StoredRecord(
        "r1", {f: None for f in catalog.departments["food_drug"].datasets["licences"].fields}
    )
    leaky = InMemoryStore.from_catalog(
        catalog,
        "food_drug",
        {enterprise: {"licences": [record]}},
        extra_fields={"owner_home_address": "厦门市某路1号", "religion": "x"},
    )
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, fakes={"food_drug": leaky}
    ) as stack:
        async with stack.client("ndrc") as client:
            response = await client.query(
                enterprise=enterprise,
                purpose="supervision_inspection",
                datasets=["food_drug/licences"],
            )
        dropped = stack.gateway.metrics.registry.get_sample_value(
            "credit_gateway_unrequested_fields_dropped_total", {"department": "food_drug"}
        )
    (section,) = response.sections
    assert section.status == OK
    fields = {f for d in section.datasets for r in d.records for f in r.fields}
    assert "owner_home_address" not in fields and "religion" not in fields
    assert dropped == 2
    # The gateway asked only for the catalog's licence fields.
    assert set(leaky.calls[0].wanted) == {"licences"}


async def test_catalog_mismatch_keeps_the_department_out_not_the_gateway(tmp_path: Path) -> None:
    catalog = load_catalog()
    store = InMemoryStore.from_catalog(catalog, "tax")
    del store._schema["arrears"]["amount_fen"]  # the department drifted from the catalog
    async with await DevStack.create(tmp_path / "s", subjects=50, fakes={"tax": store}) as stack:
        tax = stack.gateway.clients["tax"]
        assert tax.state is DepartmentState.REFUSED
        assert tax.detail == (
            "department tax is kept out: its Describe disagrees with the catalog "
            "(departments.tax.datasets.arrears.fields.amount_fen: the department does not "
            "serve this field)"
        )
        assert stack.gateway.clients["court"].state is DepartmentState.SERVING
        async with stack.client("ndrc") as client:
            response = await client.query(
                enterprise=subject(stack, "enterprise_all_departments"),
                purpose="joint_punishment_screen",
            )
        sections = {s.department: s for s in response.sections}
        assert sections["tax"].status == query_pb2.SECTION_STATUS_UNAVAILABLE
        assert sections["tax"].detail == tax.detail
        assert not store.calls  # never asked while kept out


async def test_shutdown_drains_queries_in_flight(tmp_path: Path) -> None:
    slow = InMemoryStore.from_catalog(load_catalog(), "food_drug", delay_s=0.8)
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, fakes={"food_drug": slow}
    ) as stack:
        client = stack.client("ndrc")
        query = asyncio.ensure_future(
            client.query(
                enterprise=subject(stack, "enterprise_clean"), purpose="supervision_inspection"
            )
        )
        async with asyncio.timeout(30):  # wait until the slow department is working on it
            while not slow.calls:
                await asyncio.sleep(0.01)
        await stack.gateway.stop(grace=5)
        response = await query
        await client.close()
    # The slow department's answer (it knows nobody) arrived after shutdown began.
    food_drug = next(s for s in response.sections if s.department == "food_drug")
    assert food_drug.status == NOT_FOUND
    assert food_drug.latency_ms >= 700
