"""Fakes of the department side, shipped with the package for tests and demos.

:class:`InMemoryStore` implements the real :class:`~adapters.sdk.Store`
interface, so it is served by the real SDK over real gRPC::

    store = InMemoryStore.from_catalog(catalog, "tax", {
        "91350200MA2YJ1XR9G": {"arrears": [StoredRecord("7", {"amount_fen": 120_000},
                                                        event_end_date=None)]},
    })
    server = await serve(store, "127.0.0.1:0", server_credentials=None, allowed_clients=None)

Its knobs make a department misbehave on purpose, so the gateway's tests can
show what the gateway does about it. Each knob is a plain attribute and may be
changed between calls:

``delay_s``
    Sleep this long before answering: a slow or hung department. The gateway
    must cut it off at its deadline and answer for the other departments.
``extra_fields``
    Add these fields (name -> value) to every record returned, whether asked
    for or not, and switch off the SDK's own minimisation
    (:attr:`~adapters.sdk.Store.sdk_minimises`) so they really go on the wire:
    a department that over-shares. The gateway must drop them.
``fail_with``
    Fail every lookup with this gRPC status code (``UNAVAILABLE``,
    ``INTERNAL``...): a broken department. ``Describe`` still answers.

:attr:`InMemoryStore.calls` records every lookup the store was asked, so a
test can check what the gateway asked for (minimisation on the gateway side).

Objections routed by the gateway land in :attr:`InMemoryStore.objections` (id ->
:class:`~adapters.sdk.ReceivedObjection`); :meth:`InMemoryStore.answer` is the department
answering one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from gateway.catalog import Catalog
from gateway.errors import NotFoundError

from .sdk import (
    OUTCOMES,
    FieldTypeValue,
    LookupResult,
    ObjectionAnswer,
    ReceivedObjection,
    Store,
    StoredRecord,
    StoreFailure,
    SubjectType,
    Value,
)
from .sql import FIELD_TYPES

__all__ = ["InMemoryStore", "LookupCall"]


@dataclass(frozen=True, slots=True)
class LookupCall:
    """One lookup the fake was asked: what the gateway wanted."""

    subject_type: SubjectType
    subject_id: str
    wanted: Mapping[str, tuple[str, ...]]


class InMemoryStore(Store):
    """A store built from a dict: subject id -> dataset -> records.

    ``schema`` is dataset -> field -> type, the type either a
    ``common_pb2.FieldType`` value or its catalog name (``"money_fen"``).
    Records may hold any fields; only the wanted ones are returned (unless
    ``extra_fields`` says otherwise). A subject is known when it has an entry
    in ``data``, even an empty one.
    """

    def __init__(
        self,
        department: str,
        schema: Mapping[str, Mapping[str, FieldTypeValue | str]],
        data: Mapping[str, Mapping[str, Sequence[StoredRecord]]] | None = None,
        *,
        delay_s: float = 0.0,
        extra_fields: Mapping[str, Value] | None = None,
        fail_with: grpc.StatusCode | None = None,
    ) -> None:
        self.department = department
        self._schema: dict[str, dict[str, FieldTypeValue]] = {
            ds: {f: FIELD_TYPES[t] if isinstance(t, str) else t for f, t in fields.items()}
            for ds, fields in schema.items()
        }
        self.data: dict[str, dict[str, list[StoredRecord]]] = {
            sid: {ds: list(recs) for ds, recs in by_ds.items()}
            for sid, by_ds in (data or {}).items()
        }
        #: Seconds to wait before answering (a slow or hung department).
        self.delay_s = delay_s
        #: Fields added to every record, asked for or not (an over-sharing department).
        self.extra_fields: dict[str, Value] = dict(extra_fields or {})
        #: A gRPC status every lookup fails with (a broken department).
        self.fail_with = fail_with
        #: Every lookup asked, oldest first.
        self.calls: list[LookupCall] = []
        #: Objections received, by id, and the answers given so far.
        self.objections: dict[str, ReceivedObjection] = {}
        self.answers: dict[str, ObjectionAnswer] = {}

    @classmethod
    def from_catalog(
        cls,
        catalog: Catalog,
        department: str,
        data: Mapping[str, Mapping[str, Sequence[StoredRecord]]] | None = None,
        **knobs: object,
    ) -> InMemoryStore:
        """A store serving exactly the catalog's datasets and fields of ``department``."""
        dept = catalog.departments[department]
        schema = {
            ds.name: {f.name: FieldTypeValue(f.type) for f in ds.fields.values()}
            for ds in dept.datasets.values()
        }
        return cls(department, schema, data, **knobs)  # type: ignore[arg-type]

    @property
    def sdk_minimises(self) -> bool:  # type: ignore[override]
        """False only while ``extra_fields`` is set: the leak must reach the wire."""
        return not self.extra_fields

    def schema(self) -> Mapping[str, Mapping[str, FieldTypeValue]]:
        """As given."""
        return self._schema

    async def lookup(
        self, subject_type: SubjectType, subject_id: str, wanted: Mapping[str, Sequence[str]]
    ) -> LookupResult:
        """Answer from ``data``, after the knobs have had their way."""
        self.calls.append(
            LookupCall(subject_type, subject_id, {ds: tuple(f) for ds, f in wanted.items()})
        )
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise StoreFailure(f"injected failure: {self.fail_with.name}", code=self.fail_with)
        held = self.data.get(subject_id)
        if held is None:
            return LookupResult(records={}, subject_known=False)
        records: dict[str, list[StoredRecord]] = {}
        for ds, fields in wanted.items():
            records[ds] = [
                StoredRecord(
                    record_id=rec.record_id,
                    # Trimmed here as well: with extra_fields the SDK does not
                    # trim, and the leak should be exactly the extra fields.
                    fields={
                        **{f: rec.fields[f] for f in fields if f in rec.fields},
                        **self.extra_fields,
                    },
                    event_end_date=rec.event_end_date,
                    disputed=rec.disputed,
                )
                for rec in held.get(ds, ())
            ]
        return LookupResult(records=records, subject_known=True)

    async def receive_objection(self, objection: ReceivedObjection) -> bool:
        """Keep it in :attr:`objections` (a retry keeps the first)."""
        if self.fail_with is not None:
            raise StoreFailure(f"injected failure: {self.fail_with.name}", code=self.fail_with)
        if objection.objection_id in self.objections:
            return False
        self.objections[objection.objection_id] = objection
        return True

    async def objection_answer(self, objection_id: str) -> ObjectionAnswer:
        """The answer given by :meth:`answer`, else pending. Raises NotFoundError."""
        if self.fail_with is not None:
            raise StoreFailure(f"injected failure: {self.fail_with.name}", code=self.fail_with)
        if objection_id not in self.objections:
            raise NotFoundError("no objection with this id was received")
        return self.answers.get(objection_id, ObjectionAnswer())

    def answer(
        self, objection_id: str, outcome: str, *, note: str = "", on: dt.date | None = None
    ) -> None:
        """The department answers objection ``objection_id`` (KeyError if never received;
        ValueError for an outcome not in :data:`~adapters.sdk.OUTCOMES`)."""
        if outcome not in OUTCOMES:
            raise ValueError(outcome)
        self.objections[objection_id]
        self.answers[objection_id] = ObjectionAnswer(outcome, on or dt.date.today(), note)
