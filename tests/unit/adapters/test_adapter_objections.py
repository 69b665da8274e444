"""The department side of objections: the SDK's ReceiveObjection and ObjectionAnswer over real
gRPC, the SQL store's objections table in the department's own database, and the department's
``credit-adapter objection`` commands."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.cli import main as credit_adapter
from adapters.sdk import Store, StoredRecord, bound_port, serve, shutdown
from adapters.sql import ObjectionTable, SqlStore, load_mapping, parse_mapping
from adapters.synth import generate, sample_mapping
from adapters.testing import InMemoryStore
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from protos.credit.v1 import adapter_pb2, adapter_pb2_grpc, common_pb2

ENTERPRISE = "91350200MA2YJ1XR9G"
OTHER = "913502000728319549"


async def _stub(store: Store) -> AsyncIterator[adapter_pb2_grpc.DepartmentAdapterAsyncStub]:
    server = await serve(store, "127.0.0.1:0", server_credentials=None, allowed_clients=None)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
        yield adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
    await shutdown(server, 0)


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore.from_catalog(
        load_catalog(),
        "market",
        {
            ENTERPRISE: {"administrative_penalties": [StoredRecord("17", {"fine_fen": 100})]},
            OTHER: {"administrative_penalties": [StoredRecord("18", {"fine_fen": 100})]},
        },
    )


@pytest.fixture
async def stub(store: InMemoryStore) -> AsyncIterator[adapter_pb2_grpc.DepartmentAdapterAsyncStub]:
    async for s in _stub(store):
        yield s


def _objection(**kw: Any) -> adapter_pb2.ReceiveObjectionRequest:
    req = adapter_pb2.ReceiveObjectionRequest(
        objection_id=str(uuid.uuid4()),
        kind=common_pb2.OBJECTION_KIND_OBJECTION,
        dataset="administrative_penalties",
        record_id="17",
        grounds="处罚已撤销",
        evidence_sha256=["ab" * 32],
        filed_on="2026-05-01",
        due_on="2026-05-21",
    )
    req.subject.type = common_pb2.SUBJECT_TYPE_ENTERPRISE
    req.subject.id = ENTERPRISE
    for k, v in kw.items():
        if k == "subject_id":
            req.subject.id = v
        else:
            setattr(req, k, v)
    return req


async def test_received_once_then_answered(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, store: InMemoryStore
) -> None:
    req = _objection()
    assert (await stub.ReceiveObjection(req)).newly
    assert not (await stub.ReceiveObjection(req)).newly  # a retry keeps the first
    got = store.objections[req.objection_id]
    assert got.record_id == "17" and got.evidence_sha256 == ("ab" * 32,)
    pending = await stub.ObjectionAnswer(
        adapter_pb2.ObjectionAnswerRequest(objection_id=req.objection_id)
    )
    assert pending.outcome == common_pb2.OBJECTION_OUTCOME_PENDING and not pending.answered_on
    store.answer(req.objection_id, "undetermined", note="both views")
    done = await stub.ObjectionAnswer(
        adapter_pb2.ObjectionAnswerRequest(objection_id=req.objection_id)
    )
    assert done.outcome == common_pb2.OBJECTION_OUTCOME_UNDETERMINED and done.note == "both views"
    assert done.answered_on


async def test_an_objection_never_lands_on_another_subjects_record(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, store: InMemoryStore
) -> None:
    # Record 18 is OTHER's: the SDK's own lookup refuses it for ENTERPRISE.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReceiveObjection(_objection(record_id="18"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert not store.objections


@pytest.mark.parametrize(
    "change",
    [
        {"objection_id": "x"},
        {"kind": common_pb2.OBJECTION_KIND_UNSPECIFIED},
        {"subject_id": "91350200MA2YJ1XR9H"},
        {"dataset": "secrets"},
        {"record_id": ""},
        {"record_id": "r" * 129},
        {"grounds": "g" * 1001},
        {"filed_on": "1 May"},
    ],
)
async def test_malformed_objections_are_refused(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub, change: dict[str, Any]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReceiveObjection(_objection(**change))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unknown_objection_has_no_answer(
    stub: adapter_pb2_grpc.DepartmentAdapterAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ObjectionAnswer(
            adapter_pb2.ObjectionAnswerRequest(objection_id=str(uuid.uuid4()))
        )
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


class _NoObjections(InMemoryStore):
    """A store that only answers lookups: the SDK's defaults."""

    receive_objection = Store.receive_objection  # type: ignore[assignment]
    objection_answer = Store.objection_answer  # type: ignore[assignment]


async def test_a_store_without_objections_answers_unimplemented(store: InMemoryStore) -> None:
    bare = _NoObjections("market", store.schema(), store.data)
    async for stub in _stub(bare):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ReceiveObjection(_objection())
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("objections-sql")
    generate(out, seed=7, subjects=120)
    return out


async def test_the_sql_store_keeps_objections_in_its_own_table(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subjects = json.loads((data / "subjects.json").read_text(encoding="utf-8"))["subjects"]
    ent = subjects["enterprise_all_departments"]
    rec = next(r for r in ent["records"] if r["dataset"] == "administrative_penalties")
    mapping_path = sample_mapping("market")
    store = SqlStore(load_mapping(mapping_path), data / "market.sqlite", workers=1)
    try:
        async for stub in _stub(store):
            req = _objection(subject_id=ent["id"], record_id=rec["record_id"])
            assert (await stub.ReceiveObjection(req)).newly
            # The department answers with its own command.
            assert credit_adapter(
                ["objection", "list", "--mapping", str(mapping_path),
                 "--db", str(data / "market.sqlite")]
            ) == 0  # fmt: skip
            assert req.objection_id in capsys.readouterr().out
            assert credit_adapter(
                ["objection", "answer", "--mapping", str(mapping_path),
                 "--db", str(data / "market.sqlite"), "--id", req.objection_id,
                 "--outcome", "confirmed", "--note", "经核查无误"]
            ) == 0  # fmt: skip
            answer = await stub.ObjectionAnswer(
                adapter_pb2.ObjectionAnswerRequest(objection_id=req.objection_id)
            )
            assert answer.outcome == common_pb2.OBJECTION_OUTCOME_CONFIRMED
            assert answer.note == "经核查无误"
    finally:
        await store.close()
    # Lookups still cannot write the department's records.
    with sqlite3.connect(data / "market.sqlite") as db:
        assert db.execute("SELECT count(*) FROM gateway_objections").fetchone() == (1,)


def test_the_answer_command_refuses_an_unknown_id(data: Path) -> None:
    args = ["objection", "answer", "--mapping", str(sample_mapping("market")),
            "--db", str(data / "market.sqlite"), "--id", str(uuid.uuid4()),
            "--outcome", "corrected"]  # fmt: skip
    assert credit_adapter(args) == 1


def test_an_objections_table_may_not_be_a_data_table() -> None:
    doc = {
        "department": "market",
        "objections": {"table": "penalty"},
        "datasets": {
            "administrative_penalties": {
                "subject_types": ["enterprise"],
                "sql": "SELECT * FROM penalty WHERE uscc = :subject_id",
                "record_id": "id",
                "fields": {"fine_fen": "money_fen"},
            }
        },
    }
    with pytest.raises(ConfigError) as err:
        parse_mapping(doc)
    assert err.value.key == "objections.table"
    doc["objections"] = {"table": "gateway_objections", "extra": 1}
    with pytest.raises(ConfigError):
        parse_mapping(doc)


def test_the_table_refuses_an_outcome_it_does_not_know(tmp_path: Path) -> None:
    table = ObjectionTable(tmp_path / "d.sqlite", "gateway_objections")
    try:
        with pytest.raises(ValueError, match="outcome"):
            table.answer(str(uuid.uuid4()), "maybe")
    finally:
        table.close()
