"""Two gateways over one PostgreSQL share the stores issue 14 added (issue 12 follow-up):
an objection filed through gateway 1 marks the answer of gateway 2 (Decree 631 Art. 25), a
subject listing on gateway 2 lists the query gateway 1 answered (Art. 22), and a consent
archived by gateway 2 is read back by an auditor through gateway 1 (Art. 18).

Gateway 1 is the development stack's own (in this process); gateway 2 is a ``credit-gateway
serve`` process started from the same configuration, only the listen address differs.
Every store is on PostgreSQL (``[storage] url``), the audit log included, and the schema is
applied by ``credit-gateway db migrate`` as an operator would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest

from gateway.cli.connect import QueryClient
from gateway.dev.devstack import DevStack
from protos.credit.v1 import (
    common_pb2,
    objections_pb2,
    objections_pb2_grpc,
    subject_pb2,
    subject_pb2_grpc,
)
from tests.integration.conftest import SUBJECTS, subject
from tests.integration.test_live_postgres import _free_port, start_gateway, stop_gateway
from tests.integration.test_objections import PENALTIES, _consent, _publish_penalty

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="function")]

BIN = Path(sys.executable).parent
#: How long a mark filed on one gateway may take to reach another: the live listener's
#: poll (1 s, the backstop of NOTIFY) and a query's own time.
MARK_BOUND_S = 2.0


def _second_config(stack: DevStack, port: int) -> Path:
    text = stack.config_path.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^listen = ".*"$', f'listen = "127.0.0.1:{port}"', text)
    text = re.sub(r'(?m)^metrics_listen = ".*"\n', "", text)
    path = stack.workdir / f"gateway-{port}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _client(stack: DevStack, address: str, agency: str) -> QueryClient:
    return QueryClient.connect(
        address,
        ca=stack.pki.ca_cert.read_bytes(),
        cert=stack.pki.agency_cert(agency).read_bytes(),
        key=stack.pki.agency_key(agency).read_bytes(),
        token=stack.tokens[agency].read_text(encoding="utf-8").strip(),
    )


def _cid(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["cid"])


async def _penalty(client: QueryClient, uscc: str, rid: str) -> common_pb2.Record:
    response = await client.query(
        enterprise=uscc, purpose="government_procurement", datasets=[f"market/{PENALTIES}"]
    )
    (section,) = [s for s in response.sections if s.department == "market"]
    return next(r for ds in section.datasets for r in ds.records if r.record_id == rid)


async def test_two_gateways_share_objections_subject_index_and_consents(
    tmp_path: Path, pg_url: str
) -> None:
    stack = await DevStack.create(
        tmp_path / "s", subjects=SUBJECTS, storage_url=pg_url, sqlite_stores=()
    )
    second = None
    try:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "credit-gateway"), "db", "migrate", "--config", str(stack.config_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode()
        port = _free_port()
        second = await start_gateway(_second_config(stack, port), port)
        one, two = stack.gateway.address, second.address
        # Nothing of these stores is a file of either host.
        assert not list(stack.workdir.rglob("objections.sqlite"))
        assert not list(stack.workdir.rglob("*.consents.sqlite"))
        assert not list(stack.workdir.rglob("*.subjects.sqlite"))

        # 1. An objection filed through gateway 1 marks the answer of gateway 2.
        uscc = subject(stack, "enterprise_all_departments")
        enterprise = common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=uscc)
        assert stack.gateway.objections is not None
        today = stack.gateway.objections.today()
        rid = _publish_penalty(
            stack, uscc, decided_on=today - dt.timedelta(days=10), fine_fen=300_000
        )
        async with _client(stack, two, "procurement") as at_two:
            before = await _penalty(at_two, uscc, rid)
            assert not before.disputed
            async with _client(stack, one, "procurement") as at_one:
                stub = objections_pb2_grpc.ObjectionServiceStub(at_one.channel)
                filed = await stub.File(
                    objections_pb2.FileObjectionRequest(
                        request_id=str(uuid.uuid4()),
                        subject=enterprise,
                        department="market", dataset=PENALTIES, record_id=rid,
                        grounds="处罚决定已撤销，记录未更新", consent_token=_consent(stack, uscc),
                        statement="本企业已提出异议",
                    ),
                    metadata=at_one._metadata, timeout=10,
                )  # fmt: skip
            filed_at = time.monotonic()
            while not (marked := await _penalty(at_two, uscc, rid)).disputed:
                assert time.monotonic() - filed_at < MARK_BOUND_S, "gateway 2 answered unmarked"
                await asyncio.sleep(0.02)
            delay = time.monotonic() - filed_at
            assert marked.dispute.objection_id == filed.objection_id
            assert marked.dispute.outcome == common_pb2.OBJECTION_OUTCOME_PENDING
            assert marked.statement == "本企业已提出异议"
            print(f"mark filed on gateway 1 shown by gateway 2 after {delay * 1000:.0f} ms")
            # Filing the same record again through gateway 2: the open one is found.
            stub2 = objections_pb2_grpc.ObjectionServiceStub(at_two.channel)
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await stub2.File(
                    objections_pb2.FileObjectionRequest(
                        request_id=str(uuid.uuid4()),
                        subject=enterprise,
                        department="market", dataset=PENALTIES, record_id=rid, grounds="再次",
                        consent_token=_consent(stack, uscc),
                    ),
                    metadata=at_two._metadata, timeout=10,
                )  # fmt: skip
            assert again.value.code() is grpc.StatusCode.ALREADY_EXISTS

        # 2. A query answered by gateway 1 is listed to its subject by gateway 2.
        assert stack.self_service_subject is not None
        me = stack.self_service_subject["id"]
        async with _client(stack, one, "ndrc") as ndrc:
            asked = await ndrc.query(person=me, purpose="supervision_inspection")
        async with _client(stack, two, "self_service") as kiosk:
            listed = await kiosk.query_records(page_size=50)
        assert asked.receipt.log_index in {r.log_index for r in listed.records}
        assert (
            next(r for r in listed.records if r.log_index == asked.receipt.log_index).agency_id
            == "ndrc"
        )

        # 3. A consent archived by gateway 2 is read back through gateway 1.
        token = stack.consent(
            subject_type="person", subject_id=me, grantee="bank", purpose="lending",
            scope=["pbccrc/personal_loans"],
        )  # fmt: skip
        async with _client(stack, two, "bank") as bank:
            await bank.query(
                person=me, purpose="lending", mode="paid", datasets=["pbccrc/personal_loans"],
                consent_token=token,
            )  # fmt: skip
        channel, md = stack.channel("auditors", "auditor")
        try:
            archived = await subject_pb2_grpc.LegalBasisAdminStub(channel).GetArchivedConsent(
                subject_pb2.GetArchivedConsentRequest(consent_id=_cid(token)), metadata=md
            )
            assert archived.compact_jws == token
        finally:
            await channel.close()
        # In the shared table, encrypted, the subject only by pseudonym.
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute("SELECT subject, sealed FROM consent_archive").fetchall()
        assert rows and all(me not in str(s) and me.encode() not in bytes(b) for s, b in rows)
    finally:
        if second is not None:
            err = await stop_gateway(second)
            assert second.proc.returncode == 0, err[-3000:]
        await stack.close()
