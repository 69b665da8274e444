"""A policy version that adds or retires a department activates hot (issue 11, point 5):
the gateway starts on a catalog without food_drug (its adapter runs, the config names its
address); version 2 adds it, a rollback to version 1 retires it, without a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.dev.devstack import DevStack
from gateway.domain.catalog import default_catalog_path
from gateway.federation import DepartmentState
from gateway.policyadmin import PolicyAdministrator, PolicyWorkflowError
from gateway.runtime.assembly import build_gateway
from gateway.runtime.config import load_config
from gateway.runtime.server import DEPARTMENT_HEALTH_PREFIX
from protos.credit.v1 import query_pb2
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

PACKAGED_PRICES = default_catalog_path().with_name("prices.toml")


def without(text: str, table: str, next_table: str) -> str:
    """``text`` without the TOML tables from ``[table]`` up to ``[next_table]``."""
    start = text.index(f"[{table}]")
    return text[:start] + text[text.index(f"[{next_table}]") :]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    folder = tmp_path_factory.mktemp("hot")
    catalog = folder / "catalog.toml"
    catalog.write_text(
        without(
            default_catalog_path().read_text("utf-8"),
            "departments.food_drug",
            "departments.agriculture",
        ),
        encoding="utf-8",
    )
    prices = folder / "prices.toml"
    prices.write_text(
        without(PACKAGED_PRICES.read_text("utf-8"), "prices.food_drug", "prices.agriculture"),
        encoding="utf-8",
    )
    async with await DevStack.create(
        folder / "stack", subjects=SUBJECTS, catalog_file=catalog, prices_file=prices
    ) as s:
        yield s


def admin(stack: DevStack) -> PolicyAdministrator:
    assert stack.gateway.policy_admin is not None
    return stack.gateway.policy_admin.admin


async def health_of(stack: DevStack, dept: str) -> int | None:
    """The department's health status; None when the service name is unknown."""
    creds = grpc.ssl_channel_credentials(
        stack.pki.ca_cert.read_bytes(),
        stack.pki.agency_key("bank").read_bytes(),
        stack.pki.agency_cert("bank").read_bytes(),
    )
    async with grpc.aio.secure_channel(stack.gateway.address, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=DEPARTMENT_HEALTH_PREFIX + dept)
        try:
            status = (await stub.Check(request, timeout=5)).status
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:  # a name never set
                return None
            raise
    return None if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN else int(status)


async def query(stack: DevStack) -> dict[str, query_pb2.DepartmentSection]:
    async with stack.client("ndrc") as client:
        response = await client.query(
            enterprise=subject(stack, "enterprise_all_departments"),
            purpose="joint_punishment_screen",
        )
    return {s.department: s for s in response.sections}


async def test_a_version_adding_then_one_retiring_a_department_activates_hot(
    stack: DevStack,
) -> None:
    gateway = stack.gateway
    assert "food_drug" not in gateway.clients and "food_drug" not in await query(stack)
    a = admin(stack)
    files = {
        "catalog.toml": default_catalog_path().read_text("utf-8"),
        "prices.toml": PACKAGED_PRICES.read_text("utf-8"),
    }
    view = await a.draft("officer_a", files, "food and drug administration joins")
    number = view.version.number
    await a.approve("officer_b", number, "reviewed")
    started = time.monotonic()
    await a.activate("officer_a", number, "food_drug joins the federation")
    assert "food_drug" in gateway.clients
    async with asyncio.timeout(30):
        while await health_of(stack, "food_drug") != health_pb2.HealthCheckResponse.SERVING:
            await asyncio.sleep(0.02)
    print(f"food_drug served {time.monotonic() - started:.3f} s after activation")
    sections = await query(stack)
    assert sections["food_drug"].status in (
        query_pb2.SECTION_STATUS_OK,
        query_pb2.SECTION_STATUS_NOT_FOUND,
    )
    assert sections["tax"].status == query_pb2.SECTION_STATUS_OK
    sample = gateway.metrics.registry.get_sample_value(
        "credit_gateway_department_state", {"department": "food_drug", "state": "serving"}
    )
    assert sample == 1

    # Back to version 1 (an emergency rollback): food_drug retired, hot.
    await a.activate("officer_a", 1, "food_drug leaves again", rollback=True)
    assert "food_drug" not in gateway.clients
    assert "food_drug" not in await query(stack)
    async with asyncio.timeout(10):
        while await health_of(stack, "food_drug") is not None:
            await asyncio.sleep(0.02)
    for state in ("serving", "unavailable", "refused"):
        sample = gateway.metrics.registry.get_sample_value(
            "credit_gateway_department_state", {"department": "food_drug", "state": state}
        )
        assert sample == 0
    assert (await query(stack))["tax"].status == query_pb2.SECTION_STATUS_OK


async def test_a_catalog_naming_a_department_the_config_cannot_reach_is_refused(
    stack: DevStack,
) -> None:
    """The gateway's view of its config without food_drug's address (as if the config had
    none): a version adding food_drug again is refused, naming it, and nothing changes."""
    a = admin(stack)
    served = a._serving
    a._serving = dataclasses.replace(
        served,
        departments=frozenset(d for d in stack.gateway.config.departments if d != "food_drug"),
    )
    try:
        files = {
            "catalog.toml": default_catalog_path().read_text("utf-8"),
            "prices.toml": PACKAGED_PRICES.read_text("utf-8"),
        }
        view = await a.draft("officer_a", files, "food_drug once more")
        await a.approve("officer_b", view.version.number, "reviewed")
        with pytest.raises(PolicyWorkflowError) as exc:
            await a.activate("officer_a", view.version.number, "again")
        assert exc.value.reason == "DEPARTMENT_NOT_CONFIGURED"
        assert re.search(r"department\(s\) food_drug that the gateway config", exc.value.message)
        assert "food_drug" not in stack.gateway.clients
    finally:
        a._serving = served


async def test_a_catalog_activated_hot_survives_a_restart(stack: DevStack) -> None:
    """The config's catalog file lacks food_drug; the active version has it: a restarted
    gateway serves the version's catalog (and prices), not the file's."""
    a = admin(stack)
    listed = await asyncio.to_thread(a.store.versions)
    [number] = [
        v.number
        for v in listed
        if v.files["catalog.toml"] == default_catalog_path().read_text("utf-8")
        and a.store.approval(v.number) is not None
    ][:1]
    await a.activate("officer_a", number, "food_drug joins for good")
    await stack.gateway.stop(grace=2)
    stack.gateway = await build_gateway(load_config(stack.config_path))
    await stack.gateway.start()
    assert "food_drug" in stack.gateway.catalog.departments
    assert stack.gateway.clients["food_drug"].state is DepartmentState.SERVING
    sections = await query(stack)
    assert sections["food_drug"].status in (
        query_pb2.SECTION_STATUS_OK,
        query_pb2.SECTION_STATUS_NOT_FOUND,
    )
