"""Rate limits end to end over mutual TLS: the limits of the active policy version refuse an
agency with RESOURCE_EXHAUSTED, QuotaFailure and RetryInfo; the refusal is on the signed audit
record, nothing is booked and no department is asked; a policy activation that raises the
limit lets the agency through without a restart. The harvesting counters move on /metrics."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.audit.records import decode_record
from gateway.cli.policy import policy_main
from gateway.dev.devstack import DevStack
from gateway.errors import DOMAIN
from gateway.stores.sqlite.audit import SQLiteStore
from protos.credit.v1 import policy_admin_pb2 as pb
from protos.credit.v1 import policy_admin_pb2_grpc

from .conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

SHIPPED = (Path(__file__).resolve().parents[2] / "policies" / "limits.toml").read_text("utf-8")
#: Procurement: two at once, then one every 100 seconds.
STRICT = SHIPPED + "\n[agencies.procurement]\nrate_per_s = 0.01\nburst = 2\n"
#: Raised: a hundred a second.
RAISED = SHIPPED + "\n[agencies.procurement]\nrate_per_s = 100\nburst = 100\n"
PURPOSE = "government_procurement"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with await DevStack.create(tmp_path_factory.mktemp("stack"), subjects=SUBJECTS) as s:
        yield s


class Officer:
    def __init__(self, stack: DevStack, officer: str) -> None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=stack.pki.ca_cert.read_bytes(),
            private_key=stack.pki.officer_key(officer).read_bytes(),
            certificate_chain=stack.pki.officer_cert(officer).read_bytes(),
        )
        self.channel = grpc.aio.secure_channel(stack.gateway.address, creds)
        self.stub = policy_admin_pb2_grpc.PolicyAdminStub(self.channel)
        token = stack.officer_tokens[officer].read_text(encoding="utf-8").strip()
        self.kw: dict[str, Any] = {
            "metadata": (("authorization", f"Bearer {token}"),),
            "timeout": 30,
        }


async def activate_limits(stack: DevStack, limits: str, reason: str) -> int:
    """Draft ``limits`` as limits.toml (officer_a), approve (officer_b), activate."""
    a, b = Officer(stack, "officer_a"), Officer(stack, "officer_b")
    try:
        drafted = await a.stub.Draft(
            pb.DraftRequest(
                files=[pb.PolicyFile(name="limits.toml", content=limits)], reason=reason
            ),
            **a.kw,
        )
        number = drafted.version.number
        await b.stub.Approve(pb.ApproveRequest(version=number, reason="reviewed"), **b.kw)
        await a.stub.Activate(pb.ActivateRequest(version=number, reason=reason), **a.kw)
    finally:
        await a.channel.close()
        await b.channel.close()
    return number


def query_records(stack: DevStack) -> list[dict[str, Any]]:
    store = SQLiteStore(stack.audit["log"], read_only=True)
    try:
        records = [decode_record(e.leaf) for e in store.iter_entries()]
    finally:
        store.close()
    return [r for r in records if r["kind"] == "query"]


def metric(stack: DevStack, name: str, **labels: str) -> float:
    got = stack.gateway.metrics.registry.get_sample_value(name, labels)
    return got or 0.0


def department_requests(stack: DevStack) -> float:
    return sum(
        sample.value
        for family in stack.gateway.metrics.registry.collect()
        if family.name == "credit_gateway_department_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def test_a_rate_limited_agency_is_refused_audited_and_raised_hot(stack: DevStack) -> None:
    enterprise = subject(stack, "enterprise_all_departments")
    await activate_limits(stack, STRICT, "procurement: two at once")
    async with stack.client("procurement") as client:
        for _ in range(2):
            await client.query(enterprise=enterprise, purpose=PURPOSE)
        asked = department_requests(stack)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.query(enterprise=enterprise, purpose=PURPOSE)
        err = refused.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        status = rpc_status.from_call(err)
        assert status is not None, "no grpc-status-details-bin trailer"
        info = error_details_pb2.ErrorInfo()
        quota = error_details_pb2.QuotaFailure()
        retry = error_details_pb2.RetryInfo()
        kinds = [
            name
            for d in status.details
            for name, msg in (("info", info), ("quota", quota), ("retry", retry))
            if d.Is(msg.DESCRIPTOR) and d.Unpack(msg)
        ]
        assert kinds == ["info", "quota", "retry"]
        assert (info.reason, info.domain, info.metadata["limit"]) == (
            "RATE_LIMITED",
            DOMAIN,
            "rate",
        )
        [violation] = quota.violations
        assert violation.subject == "agency:procurement"
        assert "0.01 queries a second, 2 at once" in violation.description
        # The next token: 100 s after the first of the two (a little less has passed).
        assert 90_000 < retry.retry_delay.ToMilliseconds() <= 100_000
        assert enterprise not in json.dumps(list(info.metadata.items()))

        # On the record: the refusal, with its outcome, and no identifier.
        [last] = query_records(stack)[-1:]
        assert last["agency_id"] == "procurement" and last["outcome"] == "rate_limited"
        assert last["purpose"] == PURPOSE and enterprise not in json.dumps(last)
        assert not last.get("billing")
        assert department_requests(stack) == asked  # no department was asked
        assert (
            metric(
                stack,
                "credit_gateway_queries_total",
                agency="procurement",
                method="Query",
                outcome="rate_limited",
            )
            == 1
        )
        # Two admitted without a case reference, one subject.
        assert (
            metric(
                stack, "credit_gateway_queries_without_case_reference_total", agency="procurement"
            )
            == 2
        )
        assert (
            metric(
                stack, "credit_gateway_subjects_without_case_reference_total", agency="procurement"
            )
            == 1
        )

        # An activation raises the limit: the same client, the same process, no restart.
        await activate_limits(stack, RAISED, "procurement: raised")
        response = await client.query(
            enterprise=enterprise, purpose=PURPOSE, case_reference="case 7"
        )
        assert response.request_id
    assert query_records(stack)[-1]["outcome"] in ("ok", "partial")


async def _policy(stack: DevStack, officer: str, *args: str) -> tuple[int, str, str]:
    demo = stack.workdir / "demo.json"
    if not demo.exists():
        demo.write_text(json.dumps(stack.describe()), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    argv = ["--demo", str(demo), "--officer", officer, *args]
    code = await asyncio.to_thread(policy_main, argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_policy_draft_limits_flag_and_validation_naming_the_key(
    stack: DevStack, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(RAISED, encoding="utf-8")
    bad.write_text(SHIPPED + "\n[agencies.procurement]\nburst = 2.5\n", encoding="utf-8")
    code, out, err = await _policy(
        stack, "officer_a", "draft", "--limits", str(good), "--reason", "x"
    )
    assert code == 0, err
    number = int(out.split()[2])
    code, out, _ = await _policy(stack, "officer_a", "show", str(number), "--file", "limits.toml")
    assert code == 0 and out.strip() == RAISED.strip()
    code, out, _ = await _policy(stack, "officer_a", "validate", str(number))
    assert code == 0 and f"version {number}: valid" in out
    code, out, err = await _policy(
        stack, "officer_a", "draft", "--limits", str(bad), "--reason", "y"
    )
    assert code == 0, err
    number = int(out.split()[2])
    code, out, _ = await _policy(stack, "officer_a", "validate", str(number))
    assert code == 1
    assert "problem: limits.toml:agencies.procurement.burst: must be an integer" in out
