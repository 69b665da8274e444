"""The objection desk against a department served by the real SDK on loopback (an in-memory
store): the mark set before routing, routing retried, answers read, the 20-day clock in
Beijing time, and every refusal for what a caller sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.sdk import StoredRecord, bound_port, serve
from adapters.testing import InMemoryStore
from gateway.auth.identity import Caller
from gateway.domain.catalog import load_catalog
from gateway.errors import GatewayError, InvalidArgumentError, PermissionDeniedError
from gateway.federation.client import DepartmentClient, DepartmentState
from gateway.objections import (
    BEIJING,
    Filing,
    ManualClock,
    ObjectionDesk,
    ObjectionStore,
    SQLiteObjectionStore,
    load_repair_policy,
)
from gateway.pipeline.freetext import WITHHELD
from gateway.runtime.metrics import Metrics
from protos.credit.v1 import common_pb2

ENTERPRISE = "91350200MA2YJ1XR9G"
OTHER = "913502000728319549"
PENALTIES = "administrative_penalties"
KIOSK = Caller("kiosk", "subject_self_service", subject_id=ENTERPRISE, subject_type="enterprise")


def _store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectionStore:
    """The desk's store on each backend (PostgreSQL: a fresh migrated database)."""
    if request.param == "sqlite":
        return SQLiteObjectionStore(tmp_path / "objections.sqlite")
    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.objections import PgObjectionStore
    from gateway.stores.postgres.url import PgTarget

    return PgObjectionStore(open_pool(PgTarget(request.getfixturevalue("pg_url")), max_size=2))


@dataclass
class Rig:
    desk: ObjectionDesk
    department: InMemoryStore
    client: DepartmentClient
    clock: ManualClock
    metrics: Metrics


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    catalog = load_catalog()
    department = InMemoryStore.from_catalog(
        catalog,
        "market",
        {
            ENTERPRISE: {
                PENALTIES: [
                    StoredRecord("17", {"decision_number": "厦市监罚〔2026〕17号"}),
                    StoredRecord("18", {"decision_number": "厦市监罚〔2026〕18号"}),
                ]
            }
        },
    )
    server = await serve(department, "127.0.0.1:0", server_credentials=None, allowed_clients=None)
    client = DepartmentClient("market", f"127.0.0.1:{bound_port(server)}", credentials=None)
    client.state = DepartmentState.SERVING
    # 23:30 in Beijing on 1 May 2026: the Beijing day counts, not the UTC one (30 April).
    clock = ManualClock(dt.datetime(2026, 5, 1, 23, 30, tzinfo=BEIJING))
    metrics = Metrics()
    desk = ObjectionDesk(
        _store(request, tmp_path),
        catalog=lambda: catalog,
        clients={"market": client},
        pseudonym=lambda t, i: f"pseudonym:{t}:{i}",
        repair=load_repair_policy(),
        clock=clock,
        metrics=metrics,
    )
    try:
        yield Rig(desk, department, client, clock, metrics)
    finally:
        await desk.stop()
        await client.close()
        await server.stop(0)


def _filing(record_id: str = "17", **kw: object) -> Filing:
    base: dict[str, object] = {
        "request_id": "6f1d2a52-3a8e-4c1e-9d61-0b8f3c2f4a10",
        "subject_type": "enterprise",
        "subject_id": ENTERPRISE,
        "department": "market",
        "dataset": PENALTIES,
        "record_id": record_id,
        "grounds": "处罚已撤销",
    }
    return Filing(**(base | kw))  # type: ignore[arg-type]


def _shown(rig: Rig, record_id: str = "17") -> common_pb2.Record:
    kept, dropped = rig.desk.mark(
        "market", PENALTIES, ("enterprise", ENTERPRISE), [common_pb2.Record(record_id=record_id)]
    )
    assert dropped == 0
    return kept[0]


def _overdue(rig: Rig) -> float:
    value = rig.metrics.registry.get_sample_value(
        "credit_gateway_objections_overdue", {"department": "market"}
    )
    return value or 0.0


async def test_marked_before_routing_routed_once_the_department_is_back(rig: Rig) -> None:
    rig.client.state = DepartmentState.UNAVAILABLE
    row = await rig.desk.file(KIOSK, _filing())
    assert row.routed_at is None and row.subject_id == ENTERPRISE
    assert row.filed_on == "2026-05-01" and row.due_on == "2026-05-21"
    shown = _shown(rig)
    assert shown.disputed and shown.dispute.objection_id == row.objection_id
    # Another subject's record with the same id is not marked.
    kept, _ = rig.desk.mark(
        "market", PENALTIES, ("enterprise", OTHER), [common_pb2.Record(record_id="17")]
    )
    assert not kept[0].disputed

    rig.client.state = DepartmentState.SERVING
    await rig.desk.poll_once()
    got = await rig.desk.status(KIOSK, row.objection_id)
    assert got.routed_at is not None and got.subject_id == ""  # kept only until routed
    assert rig.department.objections[row.objection_id].record_id == "17"

    # An answer that does not fit an objection is ignored; the department's words are
    # screened before they are shown.
    rig.department.answer(row.objection_id, "repair_approved")
    await rig.desk.poll_once()
    assert (await rig.desk.status(KIOSK, row.objection_id)).outcome == "pending"
    rig.department.answer(row.objection_id, "undetermined", note=f"经查 {ENTERPRISE} 无法确认")
    await rig.desk.poll_once()
    got = await rig.desk.status(KIOSK, row.objection_id)
    assert got.outcome == "undetermined" and got.note == WITHHELD
    shown = _shown(rig)
    assert shown.disputed and shown.dispute.department_note == WITHHELD


async def test_a_record_the_department_does_not_hold_is_closed(rig: Rig) -> None:
    row = await rig.desk.file(KIOSK, _filing("999"))
    assert row.outcome == "no_such_record"
    assert not _shown(rig, "999").disputed


async def test_the_same_request_again_is_the_same_objection(rig: Rig) -> None:
    first = await rig.desk.file(KIOSK, _filing())
    again = await rig.desk.file(KIOSK, _filing())
    assert again.objection_id == first.objection_id
    assert len(rig.department.objections) == 1


async def test_the_twentieth_day_is_in_time_the_twenty_first_is_overdue(rig: Rig) -> None:
    row = await rig.desk.file(KIOSK, _filing())
    rig.clock.advance(days=20)  # 21 May, 23:30 in Beijing: the due day itself
    await rig.desk.poll_once()
    assert not rig.desk.is_overdue(await rig.desk.status(KIOSK, row.objection_id))
    assert _overdue(rig) == 0
    rig.clock.advance(minutes=31)  # 22 May, 00:01 in Beijing
    await rig.desk.poll_once()
    assert rig.desk.is_overdue(await rig.desk.status(KIOSK, row.objection_id))
    assert _overdue(rig) == 1
    rows, _ = await rig.desk.list(KIOSK, overdue_only=True)
    assert [r.objection_id for r in rows] == [row.objection_id]
    rig.department.answer(row.objection_id, "confirmed")
    await rig.desk.poll_once()
    assert _overdue(rig) == 0  # answered late: no longer counted


@pytest.mark.parametrize(
    ("caller", "filing", "error", "reason"),
    [
        (KIOSK, _filing(grounds=f"本企业 {ENTERPRISE}"), InvalidArgumentError, "HOLDS_IDENTIFIER"),
        # Neither alone, both together: grounds and statement are recorded side by side.
        (KIOSK, _filing(grounds=f"处罚已撤销 {ENTERPRISE[:9]}", statement=ENTERPRISE[9:]),
         InvalidArgumentError, "HOLDS_IDENTIFIER"),
        (KIOSK, _filing(statement="x" * 201), InvalidArgumentError, "INVALID_ARGUMENT"),
        (KIOSK, _filing(grounds=" "), InvalidArgumentError, "INVALID_ARGUMENT"),
        (KIOSK, _filing(request_id="not-a-uuid"), InvalidArgumentError, "INVALID_ARGUMENT"),
        (KIOSK, _filing(evidence_sha256=("AB" * 32,)), InvalidArgumentError, "INVALID_ARGUMENT"),
        (KIOSK, _filing(dataset="nothing"), InvalidArgumentError, "UNKNOWN_DATASET"),
        (KIOSK, _filing(record_id=""), InvalidArgumentError, "INVALID_ARGUMENT"),
        (KIOSK, _filing(subject_id="91110000600037341M"), InvalidArgumentError,
         "INVALID_IDENTIFIER"),
        (KIOSK, _filing(subject_id=OTHER), PermissionDeniedError, "OTHER_SUBJECT"),
        (Caller("bank", "financial_institution"), _filing(), PermissionDeniedError,
         "CONSENT_REQUIRED"),
    ],
)  # fmt: skip
async def test_what_a_caller_may_not_file(
    rig: Rig, caller: Caller, filing: Filing, error: type[GatewayError], reason: str
) -> None:
    with pytest.raises(error) as err:
        await rig.desk.file(caller, filing)
    assert err.value.reason == reason
    assert ENTERPRISE not in err.value.message and OTHER not in err.value.message
    assert not rig.department.objections


async def test_objections_are_visible_to_their_filer_and_subject_only(rig: Rig) -> None:
    row = await rig.desk.file(KIOSK, _filing())
    with pytest.raises(GatewayError) as err:
        await rig.desk.status(Caller("bank", "financial_institution"), row.objection_id)
    assert err.value.reason == "NOT_FOUND"
    other_kiosk = Caller("kiosk", "subject_self_service", subject_id=OTHER,
                         subject_type="enterprise")  # fmt: skip
    with pytest.raises(GatewayError):
        await rig.desk.add_statement(other_kiosk, row.objection_id, "不是我的")
    rows, _ = await rig.desk.list(other_kiosk)
    assert rows == []
    with pytest.raises(PermissionDeniedError):
        await rig.desk.list(other_kiosk, subject=("enterprise", ENTERPRISE))
    # The kiosk's own certificate without a subject in its token sees nothing either.
    with pytest.raises(PermissionDeniedError):
        await rig.desk.list(Caller("kiosk", "subject_self_service"))
    with pytest.raises(GatewayError):
        await rig.desk.status(Caller("kiosk", "subject_self_service"), row.objection_id)


async def test_list_pages_through_every_objection(rig: Rig) -> None:
    ids = set()
    for i, rid in enumerate(["17", "18"]):
        row = await rig.desk.file(
            KIOSK, _filing(rid, request_id=f"6f1d2a52-3a8e-4c1e-9d61-0b8f3c2f4a1{i}")
        )
        ids.add(row.objection_id)
        rig.clock.advance(seconds=1)
    first, token = await rig.desk.list(KIOSK, page_size=1)
    assert len(first) == 1 and token
    second, token2 = await rig.desk.list(KIOSK, page_size=1, page_token=token)
    assert {first[0].objection_id, second[0].objection_id} == ids
    third, _ = await rig.desk.list(KIOSK, page_size=1, page_token=token2)
    assert third == []
    with pytest.raises(InvalidArgumentError):
        await rig.desk.list(KIOSK, page_token="garbage")


async def test_repair_outside_public_credit_information_is_refused(rig: Rig) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        await rig.desk.apply_repair(KIOSK, _filing(dataset="registration", record_id=ENTERPRISE))
    assert err.value.reason == "NOT_REPAIRABLE"


async def test_a_departments_own_mark_stays_and_its_spoofed_fields_go(rig: Rig) -> None:
    # The department flags record 18 disputed itself and tries to set gateway-only fields.
    rec = common_pb2.Record(record_id="18", disputed=True, statement="伪造的声明")
    rec.dispute.objection_id = "spoofed"
    kept, _ = rig.desk.mark("market", PENALTIES, ("enterprise", ENTERPRISE), [rec])
    assert kept[0].disputed  # its own Art. 25 mark is never stripped
    assert kept[0].statement == "" and not kept[0].HasField("dispute")


async def test_a_request_id_reused_for_another_subject_is_refused(rig: Rig) -> None:
    await rig.desk.file(KIOSK, _filing())
    other_kiosk = Caller("kiosk", "subject_self_service", subject_id=OTHER,
                         subject_type="enterprise")  # fmt: skip
    with pytest.raises(InvalidArgumentError) as err:
        await rig.desk.file(other_kiosk, _filing(subject_id=OTHER))
    assert err.value.reason == "REQUEST_ID_REUSED"
    with pytest.raises(InvalidArgumentError):
        await rig.desk.file(KIOSK, _filing("18"))
