"""The audit log behind a running gateway: receipts, refusals on the record,
proofs for auditors and agencies, fail-closed, and a SIGKILL under load."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import sys
from pathlib import Path

import grpc
import pytest

from adapters.testing import InMemoryStore
from gateway.audit import Ed25519Signer, verify_inclusion
from gateway.audit.auditor import QueryAuditor, response_digest
from gateway.audit.log import AuditLog
from gateway.audit.store import MemoryStore
from gateway.cli.billing import billing_main
from gateway.cli.connect import QueryClient
from gateway.dev.devstack import DevStack
from gateway.domain.catalog import load_catalog
from gateway.stores.sqlite.audit import SQLiteStore
from protos.credit.v1 import audit_pb2, audit_pb2_grpc, query_pb2
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _checkpointed(stack: DevStack, size: int, timeout_s: float = 30) -> None:
    """Wait until a signed checkpoint covers ``size`` entries (one comes within a
    second of traffic; polling keeps the test honest on a loaded machine)."""
    audit_log = stack.gateway._audit.log  # type: ignore[union-attr]
    async with asyncio.timeout(timeout_s):
        while audit_log.checkpoint_size < size:
            await asyncio.sleep(0.05)


def _leaves(path: Path) -> list[bytes]:
    store = SQLiteStore(path, read_only=True)
    try:
        return [e.leaf for e in store.iter_entries()]
    finally:
        store.close()


def _audit_stub(
    stack: DevStack, role_dir: str, principal: str
) -> tuple[grpc.aio.Channel, audit_pb2_grpc.AuditServiceStub, tuple[tuple[str, str], ...]]:
    channel, metadata = stack.channel(role_dir, principal)
    return channel, audit_pb2_grpc.AuditServiceStub(channel), metadata


async def test_receipts_records_and_proofs(stack: DevStack) -> None:
    enterprise = subject(stack, "enterprise_all_departments")
    async with stack.client("procurement") as client:
        response = await client.query(enterprise=enterprise, purpose="government_procurement")
        with pytest.raises(grpc.aio.AioRpcError):
            await client.query(enterprise=enterprise[:-1] + "0", purpose="government_procurement")
    receipt = response.receipt
    assert receipt.origin == "credit-gateway.dev/audit"
    assert receipt.response_digest == response_digest(response)
    # The record is in the log, under the receipt's leaf hash, without the identifier.
    await _checkpointed(stack, receipt.log_index + 2)  # the query and the refusal
    leaves = _leaves(stack.audit["log"])
    leaf = leaves[receipt.log_index]
    assert hashlib.sha256(b"\x00" + leaf).digest() == receipt.leaf_hash
    record = json.loads(leaf)
    assert record["kind"] == "query" and record["agency_id"] == "procurement"
    assert record["purpose"] == "government_procurement"
    assert record["response_sha256"] == receipt.response_digest.hex()
    assert record["departments"]["market"]["status"] == "ok"
    assert enterprise not in leaf.decode() and record["subject_pseudonym"]
    # The refusal right after it is on the record too, still without the identifier.
    refusal = json.loads(leaves[receipt.log_index + 1])
    assert refusal["outcome"] == "invalid_identifier" and refusal["subject_pseudonym"] == ""
    assert enterprise[:-1] not in leaves[receipt.log_index + 1].decode()

    # The agency proves its own entry; another agency may not; an auditor may.
    channel, stub, md = _audit_stub(stack, "agencies", "procurement")
    async with channel:
        proof = await stub.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(index=receipt.log_index), metadata=md
        )
        checkpoint = await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), metadata=md)
    assert proof.leaf == leaf and proof.tree_size == checkpoint.tree_size
    verify_inclusion(
        proof.leaf_hash, proof.index, proof.tree_size, list(proof.hashes), checkpoint.root_hash
    )
    channel, stub, md = _audit_stub(stack, "agencies", "bank")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(index=receipt.log_index), metadata=md
            )
    assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED
    channel, stub, md = _audit_stub(stack, "auditors", "auditor")
    async with channel:
        proof = await stub.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(index=receipt.log_index), metadata=md
        )
        consistency = await stub.GetConsistencyProof(
            audit_pb2.GetConsistencyProofRequest(old_size=1, new_size=proof.tree_size), metadata=md
        )
    assert proof.leaf == leaf and len(consistency.hashes) > 0


async def test_credit_audit_verifies_the_running_log(stack: DevStack) -> None:
    async with stack.client("ndrc") as client:
        for _ in range(5):
            await client.query(
                enterprise=subject(stack, "enterprise_clean"), purpose="supervision_inspection"
            )
    await _checkpointed(stack, stack.gateway._audit.log.size)  # type: ignore[union-attr]
    code, output = await _verify(stack)
    assert code == 0, output


async def test_no_audit_no_data(tmp_path: Path) -> None:
    """When the log cannot be written the query fails UNAVAILABLE and nothing is disclosed."""
    store = InMemoryStore.from_catalog(load_catalog(), "food_drug")
    async with await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, fakes={"food_drug": store}
    ) as stack:
        from gateway.runtime.assembly import build_authenticators
        from gateway.runtime.config import load_config
        from gateway.runtime.server import Gateway

        config = load_config(stack.config_path)
        assert config.auth is not None
        memory = MemoryStore()
        log = await AuditLog.open(None, Ed25519Signer.from_file(stack.audit["key"]), store=memory)
        agencies, auditors = build_authenticators(config.auth)
        gateway = Gateway(
            config,
            authenticator=agencies,
            audit_authenticator=auditors,
            audit=QueryAuditor(log, b"k" * 32, gateway_origin=log.origin),
        )
        await gateway.start()
        try:
            memory.fail_writes = True
            client = QueryClient.connect(
                gateway.address,
                ca=stack.pki.ca_cert.read_bytes(),
                cert=stack.pki.agency_cert("ndrc").read_bytes(),
                key=stack.pki.agency_key("ndrc").read_bytes(),
                token=stack.tokens["ndrc"].read_text().strip(),
            )
            async with client:
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await client.query(
                        enterprise=subject(stack, "enterprise_clean"),
                        purpose="supervision_inspection",
                    )
            assert exc.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "audit" in (exc.value.details() or "")
        finally:
            await gateway.stop(grace=1)


async def _verify(stack: DevStack) -> tuple[int, str]:
    """Run the auditors' real command line on the stack's log."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.audit.cli", "verify", str(stack.audit["log"]),
        "--key", str(stack.audit["verifier_key"]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _read_address(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while line := (await proc.stdout.readline()).decode():
            if "serving on" in line:
                return line.split()[-1]
    raise AssertionError("gateway did not start")


async def test_sigkill_under_load_loses_no_answered_query(tmp_path: Path) -> None:
    """Paid load, SIGKILL, restart: every answered query is on the record, and the
    ledger and the audit log tell the same story (``billing reconcile``)."""
    async with await DevStack.create(tmp_path / "s", subjects=SUBJECTS) as stack:
        await stack.gateway.stop(grace=1)  # the subprocess below owns the log from now on
        ledger = stack.audit["log"].parent.parent / "ledger.sqlite"
        # Enough for every paid query of the run, booked offline (recorded at start-up).
        assert (
            billing_main(
                ["--ledger", str(ledger), "top-up", "bank", "100000000", "--reference", "load"]
            )
            == 0
        )
        cmd = [
            sys.executable,
            "-m",
            "gateway.cli.gateway",
            "--log-level",
            "WARNING",
            "serve",
            "--config",
            str(stack.config_path),
        ]
        answered: list[tuple[int, bytes]] = []
        enterprise = subject(stack, "enterprise_clean")
        for _ in range(3):  # three kills: each restart recovers what the last one left
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
            client = QueryClient.connect(
                await _read_address(proc),
                ca=stack.pki.ca_cert.read_bytes(),
                cert=stack.pki.agency_cert("bank").read_bytes(),
                key=stack.pki.agency_key("bank").read_bytes(),
                token=stack.tokens["bank"].read_text().strip(),
            )
            goal = len(answered) + 60

            enough = asyncio.Event()

            async def worker(
                client: QueryClient = client, goal: int = goal, enough: asyncio.Event = enough
            ) -> None:
                while True:
                    try:
                        r = await client.query(
                            enterprise=enterprise, purpose="lending", mode="paid", timeout=5
                        )
                    except grpc.aio.AioRpcError:
                        return
                    assert r.charge.amount_fen > 0
                    answered.append((r.receipt.log_index, r.receipt.leaf_hash))
                    if len(answered) >= goal:
                        enough.set()

            workers = [asyncio.ensure_future(worker()) for _ in range(16)]
            await asyncio.wait_for(enough.wait(), 60)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await asyncio.gather(*workers)
            await client.close()

        # Restart on the same log: it opens (tree checked against the last checkpoint)...
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
        await _read_address(proc)
        # Start-up recovery put the last kill's bookings on the record; wait for
        # a signed checkpoint over them (reconcile --key reads signed records only).
        async with asyncio.timeout(30):
            while True:
                store = SQLiteStore(stack.audit["log"], read_only=True)
                try:
                    if store.checkpoints()[-1].size == store.size():
                        break
                finally:
                    store.close()
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        # ...verifies...
        code, output = await _verify(stack)
        assert code == 0, output
        # ...and holds every answered query's record at its receipt's index.
        leaves = _leaves(stack.audit["log"])
        assert len(answered) >= 180
        for index, leaf_hash in answered:
            assert hashlib.sha256(b"\x00" + leaves[index]).digest() == leaf_hash
        # Every charge, release and refund (those recovery made at the restart
        # included) and every top-up is on the record, and nothing is charged twice.
        script = Path(sys.executable).parent / "credit-gateway"
        proc = await asyncio.create_subprocess_exec(
            str(script), "billing", "reconcile", "--ledger", str(ledger),
            "--audit-log", str(stack.audit["log"]), "--key", str(stack.audit["verifier_key"]),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode()
        assert "0 differences" in out.decode()


async def test_the_consent_id_is_on_the_record(stack: DevStack) -> None:
    person = subject(stack, "person_with_loans")
    consent = stack.consent(
        subject_type="person",
        subject_id=person,
        grantee="bank",
        purpose="lending",
        scope=["pbccrc/*"],
    )
    async with stack.client("bank") as client:
        response = await client.query(
            person=person, purpose="lending", mode="paid", consent_token=consent
        )
    pbccrc = next(s for s in response.sections if s.department == "pbccrc")
    assert pbccrc.status == query_pb2.SECTION_STATUS_OK  # the consent opened it
    await _checkpointed(stack, response.receipt.log_index + 1)
    record = json.loads(_leaves(stack.audit["log"])[response.receipt.log_index])
    claims = json.loads(base64.urlsafe_b64decode(consent.split(".")[1] + "=="))
    assert record["consent_id"] == claims["cid"] != ""
    assert record["billing"]["charged_fen"] == response.charge.amount_fen > 0
    assert consent not in json.dumps(record)  # the token itself is never logged
