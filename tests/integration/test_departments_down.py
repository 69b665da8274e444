"""Start and serve with departments down (issue 11, point 5): real department processes over
mutual TLS, the real gateway; two of seven departments down at start-up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.sdk import FEDERATION_IDENTITY, mtls_server_credentials, serve
from adapters.testing import InMemoryStore
from gateway.dev.devstack import DevStack
from gateway.domain.catalog import default_catalog_path, parse_catalog
from gateway.domain.files import parse_toml
from gateway.federation import DepartmentState
from gateway.runtime.server import DEPARTMENT_HEALTH_PREFIX, QUERY_SERVICE
from protos.credit.v1 import query_pb2
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DOWN = ("court", "hrss")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    """Seven departments configured, court and hrss not started."""
    async with await DevStack.create(
        tmp_path_factory.mktemp("down"), subjects=SUBJECTS, down=DOWN, describe_timeout_ms=1000
    ) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def health(stack: DevStack) -> AsyncIterator[health_pb2_grpc.HealthStub]:
    creds = grpc.ssl_channel_credentials(
        stack.pki.ca_cert.read_bytes(),
        stack.pki.agency_key("bank").read_bytes(),
        stack.pki.agency_cert("bank").read_bytes(),
    )
    async with grpc.aio.secure_channel(stack.gateway.address, creds) as channel:
        yield health_pb2_grpc.HealthStub(channel)


async def status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    r = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(r.status)


def state(stack: DevStack, dept: str, name: str) -> float | None:
    return stack.gateway.metrics.registry.get_sample_value(
        "credit_gateway_department_state", {"department": dept, "state": name}
    )


async def paid_query(stack: DevStack) -> query_pb2.QueryResponse:
    async with stack.client("bank") as client:
        return await client.query(
            enterprise=subject(stack, "enterprise_all_departments"),
            purpose="lending",
            mode="paid",
        )


def sections(response: query_pb2.QueryResponse) -> dict[str, query_pb2.DepartmentSection]:
    return {s.department: s for s in response.sections}


async def test_starts_with_two_of_seven_down_and_answers_them_unavailable_free_of_charge(
    stack: DevStack, health: health_pb2_grpc.HealthStub
) -> None:
    assert await status(health, "") == SERVING
    assert await status(health, QUERY_SERVICE) == SERVING
    for dept in stack.gateway.catalog.departments:
        want = NOT_SERVING if dept in DOWN else SERVING
        assert await status(health, DEPARTMENT_HEALTH_PREFIX + dept) == want, dept
        assert state(stack, dept, "unavailable") == (1 if dept in DOWN else 0)
        assert state(stack, dept, "serving") == (0 if dept in DOWN else 1)

    before = await stack.balance_fen("bank")
    response = await paid_query(stack)
    by_dept = sections(response)
    for dept in DOWN:
        assert by_dept[dept].status == query_pb2.SECTION_STATUS_UNAVAILABLE
        assert by_dept[dept].detail == (
            f"department {dept} is unavailable: not reached; checked again in the background"
        )
        assert not by_dept[dept].datasets
    assert by_dept["tax"].status == query_pb2.SECTION_STATUS_OK
    charged = {line.department for line in response.charge.lines}
    assert charged and not charged & set(DOWN)
    assert response.charge.amount_fen == sum(x.amount_fen for x in response.charge.lines) > 0
    assert before - await stack.balance_fen("bank") == response.charge.amount_fen


async def test_a_department_that_starts_is_served_without_a_restart(
    stack: DevStack, health: health_pb2_grpc.HealthStub
) -> None:
    gateway = stack.gateway
    started = time.monotonic()
    await stack.start_down("court")
    async with asyncio.timeout(40):  # at most one 30 s backoff step plus a check
        while await status(health, DEPARTMENT_HEALTH_PREFIX + "court") != SERVING:
            await asyncio.sleep(0.05)
    took = time.monotonic() - started
    print(f"court served {took:.2f} s after its process listened")
    assert gateway is stack.gateway  # the same process, never restarted
    assert state(stack, "court", "serving") == 1 and state(stack, "court", "unavailable") == 0
    response = await paid_query(stack)
    by_dept = sections(response)
    assert by_dept["court"].status in (
        query_pb2.SECTION_STATUS_OK,
        query_pb2.SECTION_STATUS_NOT_FOUND,
    )
    assert "court" in {line.department for line in response.charge.lines}
    assert by_dept["hrss"].status == query_pb2.SECTION_STATUS_UNAVAILABLE


async def test_a_department_whose_describe_disagrees_stays_out(
    stack: DevStack, health: health_pb2_grpc.HealthStub, caplog: pytest.LogCaptureFixture
) -> None:
    """hrss comes back without its ``income`` dataset: kept out, logged, in the metric."""
    text = default_catalog_path().read_text(encoding="utf-8")
    doc = parse_toml(text, "catalog.toml")
    del doc["departments"]["hrss"]["datasets"]["income"]
    store = InMemoryStore.from_catalog(parse_catalog(doc), "hrss")
    pki = stack.pki
    server = await serve(
        store,
        stack.down["hrss"],
        server_credentials=mtls_server_credentials(
            pki.department_cert("hrss").read_bytes(),
            pki.department_key("hrss").read_bytes(),
            pki.ca_cert.read_bytes(),
        ),
        allowed_clients=frozenset({FEDERATION_IDENTITY}),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.federation.departments"):
            stack.gateway.monitor.add("hrss")  # check now, not at the next backoff step
            async with asyncio.timeout(20):
                while state(stack, "hrss", "refused") != 1:
                    await asyncio.sleep(0.05)
        assert state(stack, "hrss", "unavailable") == 0
        assert stack.gateway.clients["hrss"].state is DepartmentState.REFUSED
        assert await status(health, DEPARTMENT_HEALTH_PREFIX + "hrss") == NOT_SERVING
        assert await status(health, "") == SERVING  # the gateway still answers
        [line] = [r for r in caplog.records if "hrss" in r.getMessage()]
        assert line.getMessage() == (
            "department hrss is kept out: its Describe disagrees with the catalog "
            "(departments.hrss.datasets.income: the department does not serve this "
            "catalog dataset)"
        )
        by_dept = sections(await paid_query(stack))
        assert by_dept["hrss"].status == query_pb2.SECTION_STATUS_UNAVAILABLE
        assert "kept out" in by_dept["hrss"].detail
        assert by_dept["tax"].status == query_pb2.SECTION_STATUS_OK
    finally:
        await server.stop(0)
