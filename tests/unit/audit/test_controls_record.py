"""The ``controls`` record and the query record's ``consent_uses``: written, read back."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.records import canonical_json
from gateway.audit.schema import ControlsRecord, QueryRecord

_TEXT = st.text(min_size=0, max_size=20)
_OPT_TEXT = st.none() | _TEXT
_OPT_INT = st.none() | st.integers(min_value=0, max_value=10**6)


@given(
    action=st.sampled_from(
        ["suspend", "reinstate_request", "reinstate_approve", "revoke_certificate"]
    ),
    actor=_TEXT,
    outcome=st.sampled_from(["ok", "refused"]),
    error=_OPT_TEXT,
    agency=_OPT_TEXT,
    consent_id=_OPT_TEXT,
    serial=_OPT_TEXT,
    count=_OPT_INT,
    newly=st.none() | st.booleans(),
    reason=_OPT_TEXT,
)
def test_a_controls_record_reads_back_as_written(**fields: Any) -> None:
    record = ControlsRecord(**fields)
    obj = record.to_json()
    assert obj["kind"] == ControlsRecord.KIND == "controls"
    assert None not in obj.values()
    assert ControlsRecord.from_json(obj) == record
    assert canonical_json(ControlsRecord.from_json(obj).to_json()) == canonical_json(obj)


def test_consent_uses_is_absent_unless_counted() -> None:
    assert "consent_uses" not in QueryRecord().to_json()
    obj = QueryRecord(consent_id="c", consent_uses=2).to_json()
    assert obj["consent_uses"] == 2
    assert QueryRecord.from_json(obj).consent_uses == 2
    assert QueryRecord.from_json({"consent_uses": "2"}).consent_uses is None


def test_an_objection_record_reads_back_what_was_written() -> None:
    from gateway.audit.schema import ObjectionRecord

    rec = ObjectionRecord(
        action="answered",
        actor="gateway",
        outcome="ok",
        objection_id="6f1d2a52-3a8e-4c1e-9d61-0b8f3c2f4a10",
        objection_kind="objection",
        subject="hmac:ab",
        department="market",
        dataset="administrative_penalties",
        record="17",
        evidence_sha256=("ab" * 32,),
        answer="undetermined",
        note="both views",
    )
    doc = rec.to_json()
    assert doc["kind"] == "objection" and "statement" not in doc  # None fields are absent
    assert ObjectionRecord.from_json(doc) == rec
    assert ObjectionRecord.from_json({"action": 3}).action == ""
