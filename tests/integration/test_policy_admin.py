"""Policy administration end to end: the ``PolicyAdmin`` service of a real gateway over mutual
TLS, officers' certificates and tokens from the development PKI, the ``credit-gateway policy``
command, the version store and the signed audit log.

One federation serves the module; each test drafts its own versions, so the tests share the
store's history but none depends on another's outcome.
"""

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

from gateway.audit.records import decode_record
from gateway.cli.policy import policy_main
from gateway.dev.devstack import DevStack
from gateway.policyadmin.loading import version_number
from gateway.stores.sqlite.audit import SQLiteStore
from protos.credit.v1 import policy_admin_pb2 as pb
from protos.credit.v1 import policy_admin_pb2_grpc, query_pb2

from .conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Procurement may now screen for joint punishment: passes the test matrix, visible in queries.
WIDER = (
    "p, role:procurement_center, *, public, joint_punishment_screen, free, allow\n"
    "p, role:procurement_center, *, government_shared, joint_punishment_screen, free, allow\n"
)
LENDER_LINE = "p, role:lender, *, public, lending, paid, allow\n"
PURPOSE = "joint_punishment_screen"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    async with await DevStack.create(tmp_path_factory.mktemp("stack"), subjects=SUBJECTS) as s:
        demo = s.workdir / "demo.json"
        demo.write_text(json.dumps(s.describe()), encoding="utf-8")
        yield s


def channel(stack: DevStack, cert: Path, key: Path) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=stack.pki.ca_cert.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    return grpc.aio.secure_channel(stack.gateway.address, creds)


class Officer:
    def __init__(self, stack: DevStack, officer: str) -> None:
        self.channel = channel(
            stack, stack.pki.officer_cert(officer), stack.pki.officer_key(officer)
        )
        self.stub = policy_admin_pb2_grpc.PolicyAdminStub(self.channel)
        token = stack.officer_tokens[officer].read_text(encoding="utf-8").strip()
        self.kw: dict[str, Any] = {
            "metadata": (("authorization", f"Bearer {token}"),),
            "timeout": 30,
        }

    async def draft(self, policy: str, reason: str = "test") -> int:
        r = await self.stub.Draft(
            pb.DraftRequest(
                files=[pb.PolicyFile(name="policy.csv", content=policy)], reason=reason
            ),
            **self.kw,
        )
        return r.version.number

    async def approve(self, version: int) -> None:
        await self.stub.Approve(pb.ApproveRequest(version=version, reason="reviewed"), **self.kw)

    async def activate(self, version: int) -> pb.ActivateResponse:
        return await self.stub.Activate(pb.ActivateRequest(version=version, reason="go"), **self.kw)


@pytest_asyncio.fixture(loop_scope="module")
async def officers(stack: DevStack) -> AsyncIterator[tuple[Officer, Officer]]:
    a, b = Officer(stack, "officer_a"), Officer(stack, "officer_b")
    yield a, b
    await a.channel.close()
    await b.channel.close()


async def active_policy(a: Officer) -> str:
    """The policy.csv of the active version."""
    listed = await a.stub.ListVersions(pb.ListVersionsRequest(), **a.kw)
    [active] = [v for v in listed.versions if v.active]
    got = await a.stub.GetVersion(pb.VersionRequest(version=active.number), **a.kw)
    return next(f.content for f in got.files if f.name == "policy.csv")


def base_policy() -> str:
    return (Path(__file__).resolve().parents[2] / "policies" / "policy.csv").read_text("utf-8")


def admin_records(stack: DevStack) -> list[dict[str, Any]]:
    store = SQLiteStore(stack.audit["log"], read_only=True)
    try:
        records = [decode_record(e.leaf) for e in store.iter_entries()]
    finally:
        store.close()
    return [r for r in records if r["kind"] == "policy_admin"]


async def run_cli(stack: DevStack, officer: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    demo = str(stack.workdir / "demo.json")
    argv = ["--demo", demo, "--officer", officer, *args]
    code = await asyncio.to_thread(policy_main, argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_the_gateway_starts_from_a_seeded_version_1(stack: DevStack) -> None:
    views = stack.gateway.policy_admin
    assert views is not None
    first = await views.admin.view(1)
    assert first.version.author == "bootstrap" and first.version.parent is None
    async with stack.client("procurement") as client:
        response = await client.query(
            enterprise=subject(stack, "enterprise_clean"), purpose="government_procurement"
        )
    assert version_number(response.policy_version) is not None


async def test_only_security_officers_are_served(stack: DevStack) -> None:
    for cert, key, token in (
        (
            stack.pki.agency_cert("bank"),
            stack.pki.agency_key("bank"),
            stack.tokens["bank"],
        ),
    ):
        ch = channel(stack, cert, key)
        stub = policy_admin_pb2_grpc.PolicyAdminStub(ch)
        md = (("authorization", f"Bearer {token.read_text(encoding='utf-8').strip()}"),)
        try:
            for call in (
                stub.ListVersions(pb.ListVersionsRequest(), metadata=md, timeout=10),
                stub.Draft(pb.DraftRequest(reason="x"), metadata=md, timeout=10),
                stub.Activate(pb.ActivateRequest(version=1, reason="x"), metadata=md, timeout=10),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await ch.close()
    # The attempts are on the record, refused, with no officer to name.
    refused_actions = [
        r["action"]
        for r in admin_records(stack)
        if r["outcome"] == "refused" and r["officer"] == "" and r.get("error") == "ROLE_NOT_ALLOWED"
    ]
    assert {"list", "draft", "activate"} <= set(refused_actions)


async def test_four_eyes(stack: DevStack, officers: tuple[Officer, Officer]) -> None:
    a, b = officers
    version = await a.draft(base_policy() + "# four eyes\n", reason="four eyes")
    with pytest.raises(grpc.aio.AioRpcError) as own:
        await a.approve(version)
    assert own.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot approve" in (own.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as unapproved:
        await a.activate(version)
    assert unapproved.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not approved" in (unapproved.value.details() or "")
    code, _, err = await run_cli(stack, "officer_a", "approve", str(version), "--reason", "mine")
    assert code == 1 and "PERMISSION_DENIED" in err
    await b.approve(version)
    refused = [
        r for r in admin_records(stack) if r.get("version") == version and r["outcome"] == "refused"
    ]
    assert {(r["action"], r["officer"]) for r in refused} == {
        ("approve", "officer_a"),
        ("activate", "officer_a"),
    }


async def test_hot_switch_under_load_then_rollback(
    stack: DevStack, officers: tuple[Officer, Officer]
) -> None:
    a, b = officers
    before = await active_policy(a)
    previous = stack.gateway.policy_admin.admin.installed  # type: ignore[union-attr]
    version = await a.draft(before + WIDER, reason="procurement screens for joint punishment")

    # What would change, and how recent queries would have been decided: through the CLI.
    code, out, _ = await run_cli(stack, "officer_b", "diff", str(version))
    assert code == 0 and "procurement / joint_punishment_screen / free / enterprise:" in out
    assert "  + court/dishonest_debtors/case_number" in out
    enterprise = subject(stack, "enterprise_all_departments")
    async with stack.client("procurement") as client:
        await client.query(enterprise=enterprise, purpose=PURPOSE)
    code, out, _ = await run_cli(stack, "officer_b", "replay", str(version), "--last", "20")
    assert code == 0 and "procurement joint_punishment_screen free enterprise" in out
    code, out, _ = await run_cli(stack, "officer_b", "test", str(version))
    assert code == 0 and " 0 failures" in out
    await b.approve(version)

    stop = asyncio.Event()
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    async def load(n: int) -> None:
        async with stack.client("procurement") as client:
            while not stop.is_set():
                try:
                    r = await client.query(enterprise=enterprise, purpose=PURPOSE)
                except Exception as exc:  # any failure is a dropped query
                    errors.append(exc)
                    return
                visible = any(s.status == query_pb2.SECTION_STATUS_OK for s in r.sections)
                results.append((r.policy_version, visible))

    workers = [asyncio.create_task(load(n)) for n in range(8)]
    while len(results) < 40 and not errors:
        await asyncio.sleep(0.02)
    mark = len(results)
    activated = await a.activate(version)
    switched = len(results)
    while len(results) < switched + 40 and not errors:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*workers)

    assert errors == []
    assert version_number(activated.policy_version) == version
    assert activated.previous == previous
    old = {v for v, _ in results[:mark]}
    assert len(old) == 1 and version_number(old.pop()) == previous
    assert {version_number(v) for v, _ in results} == {previous, version}
    # Queries in flight at the switch may finish under the old version; later ones carry
    # the new one, and see what it grants.
    tail = results[-20:]
    assert all(v == activated.policy_version and visible for v, visible in tail)
    assert not any(visible for v, visible in results if v != activated.policy_version)

    # Rollback: the earlier version serves again, hot.
    back = await b.stub.Rollback(pb.ActivateRequest(version=previous, reason="undo"), **b.kw)
    assert version_number(back.policy_version) == previous
    async with stack.client("procurement") as client:
        r = await client.query(enterprise=enterprise, purpose=PURPOSE)
    assert r.policy_version == back.policy_version
    assert not any(s.status == query_pb2.SECTION_STATUS_OK for s in r.sections)

    actions = [(r["action"], r["officer"], r.get("version")) for r in admin_records(stack)]
    assert ("draft", "officer_a", version) in actions
    assert ("approve", "officer_b", version) in actions
    assert ("activate", "officer_a", version) in actions
    assert ("rollback", "officer_b", previous) in actions
    assert ("diff", "officer_b", version) in actions
    assert ("replay", "officer_b", version) in actions


async def test_a_broken_draft_never_activates(
    stack: DevStack, officers: tuple[Officer, Officer]
) -> None:
    a, b = officers
    serving = stack.gateway.decider.version  # type: ignore[union-attr]
    current = await active_policy(a)
    failing = await a.draft(current.replace(LENDER_LINE, ""), reason="tests fail")
    invalid = await a.draft(current + "p, role:lender, nosuch/*, public, lending, paid, allow\n")
    code, out, _ = await run_cli(stack, "officer_a", "validate", str(invalid))
    assert code == 1 and "unknown department 'nosuch'" in out
    for version, reason in ((failing, "TESTS_FAILED"), (invalid, "VALIDATION_FAILED")):
        await b.approve(version)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await a.activate(version)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "keeps serving" in (refused.value.details() or "")
        assert stack.gateway.decider.version == serving  # type: ignore[union-attr]
        [record] = [
            r
            for r in admin_records(stack)
            if r["action"] == "activate" and r.get("version") == version
        ]
        assert record["outcome"] == "refused" and record["error"] == reason
    code, out, _ = await run_cli(stack, "officer_a", "list")
    assert code == 0 and out.count("FAIL") >= 2
