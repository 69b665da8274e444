"""A real gRPC client that is not ours: grpcurl, against the running gateway,
with the files demo.json names."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from gateway.dev.devstack import DevStack
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def _grpcurl(stack: DevStack, agency: str, *args: str) -> tuple[int, str, str]:
    demo = stack.describe()
    files = demo["agencies"][agency]
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-cacert", demo["ca_cert"],
        "-cert", files["cert"],
        "-key", files["key"],
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_reflection_lists_the_services(stack: DevStack) -> None:
    code, out, err = await _grpcurl(stack, "ndrc", stack.gateway.address, "list")
    assert code == 0, err
    services = set(out.split())
    assert {
        "credit.v1.QueryService",
        "credit.v1.AuditService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


async def test_health_check(stack: DevStack) -> None:
    code, out, err = await _grpcurl(
        stack, "ndrc", stack.gateway.address, "grpc.health.v1.Health/Check"
    )
    assert code == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_query_with_certificate_and_token(stack: DevStack) -> None:
    token = Path(stack.describe()["agencies"]["procurement"]["token_file"]).read_text().strip()
    body = {
        "requestId": str(uuid.uuid4()),
        "subject": {
            "type": "SUBJECT_TYPE_ENTERPRISE",
            "id": subject(stack, "enterprise_all_departments"),
        },
        "purpose": "government_procurement",
        "mode": "QUERY_MODE_FREE",
        "datasets": [{"department": "market", "dataset": "registration"}],
    }
    code, out, err = await _grpcurl(
        stack,
        "procurement",
        "-H", f"authorization: Bearer {token}",
        "-d", json.dumps(body),
        stack.gateway.address,
        "credit.v1.QueryService/Query",
    )  # fmt: skip
    assert code == 0, err
    answer = json.loads(out)
    (section,) = answer["sections"]
    assert section["department"] == "market" and section["status"] == "SECTION_STATUS_OK"
    assert section["datasets"][0]["records"][0]["fields"]["name"]["text"]
    assert answer["receipt"]["origin"] == "credit-gateway.dev/audit"


async def test_query_without_token_is_unauthenticated(stack: DevStack) -> None:
    body = {
        "requestId": str(uuid.uuid4()),
        "subject": {"type": 1, "id": "91350200MA2YJ1XR9G"},
        "purpose": "x",
    }
    code, _, err = await _grpcurl(
        stack,
        "procurement",
        "-d",
        json.dumps(body),
        stack.gateway.address,
        "credit.v1.QueryService/Query",
    )
    assert code != 0
    assert "Unauthenticated" in err and "token" in err.lower()
