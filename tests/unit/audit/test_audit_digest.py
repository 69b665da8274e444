"""The receipt's response_digest is over a canonical,
language-neutral encoding (gateway.audit.digest), the same whatever serialiser
wrote the bytes; the gateway's fast path equals the stdlib reference."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.auditor import response_digest as gateway_digest
from gateway.audit.cli import main as credit_audit
from gateway.audit.digest import (
    RECEIPT_FIELD,
    SCHEMA,
    DigestError,
    canonical_response,
    message_digest,
    response_digest,
)
from protos.credit.v1 import common_pb2, query_pb2

REPO = Path(__file__).resolve().parents[3]

_KINDS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_MESSAGE: "message",
}


def _descriptor(name: str):  # type: ignore[no-untyped-def]
    for module in (query_pb2, common_pb2):
        if name in module.DESCRIPTOR.message_types_by_name:
            return module.DESCRIPTOR.message_types_by_name[name]
    raise AssertionError(name)


@pytest.mark.parametrize("message", sorted(SCHEMA))
def test_the_schema_is_the_proto(message: str) -> None:
    """The stdlib table cannot drift from query.proto / common.proto."""
    descriptor = _descriptor(message)
    expected = {f.number for f in descriptor.fields}
    if message == "QueryResponse":
        assert descriptor.fields_by_number[RECEIPT_FIELD].name == "receipt"
        expected.discard(RECEIPT_FIELD)
    assert set(SCHEMA[message]) == expected
    for number, spec in SCHEMA[message].items():
        field = descriptor.fields_by_number[number]
        assert spec.name == field.name
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            assert spec.kind == "map"
            assert field.message_type.fields_by_number[1].type == FieldDescriptor.TYPE_STRING
            assert spec.ref == field.message_type.fields_by_number[2].message_type.name
            continue
        assert spec.kind == _KINDS[field.type]
        assert spec.repeated == (field.is_repeated)
        assert spec.ref == (field.message_type.name if field.message_type else "")
        oneof = field.containing_oneof
        assert spec.oneof == (oneof.name if oneof is not None else "")


def _response_with_map(keys: list[str]) -> query_pb2.QueryResponse:
    r = query_pb2.QueryResponse(request_id="req-1", policy_version="v1", query_date="2025-03-01")
    section = r.sections.add(department="market", status=query_pb2.SECTION_STATUS_OK)
    record = section.datasets.add(dataset="registration").records.add(record_id="r1")
    for i, key in enumerate(keys):
        record.fields[key].integer = 2 * i - 1  # -1, 1, 3...: a negative sint64 first
    return r


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128 and number < 16
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_map_order_on_the_wire_does_not_matter() -> None:
    """What a Go or JavaScript serialiser does: map entries in insertion order."""
    b = _field(1, b"b") + _field(2, bytes([0x10, 0x02]))  # "b": integer 1 (zigzag 2)
    a = _field(1, b"a") + _field(2, bytes([0x10, 0x01]))  # "a": integer -1 (zigzag 1)
    for order in ((a, b), (b, a)):
        record = _field(1, b"r1") + b"".join(_field(2, entry) for entry in order)
        dataset = _field(1, b"registration") + _field(2, record)
        section = _field(1, b"market") + bytes([0x10, 0x01]) + _field(4, dataset)
        wire = _field(1, b"req-1") + _field(2, section)
        expected = _response_with_map(["a", "b"])
        expected.ClearField("policy_version")
        expected.ClearField("query_date")
        assert response_digest(wire) == message_digest(expected) == gateway_digest(expected)


def test_keys_sort_by_utf8_bytes_not_utf16_units() -> None:
    # UTF-16 puts U+10000 (D800 DC00) before U+FFFF; UTF-8 bytes put U+FFFF first.
    r = _response_with_map(["\U00010000", "\uffff", "z"])
    canonical = canonical_response(r.SerializeToString())
    assert canonical.index("\uffff".encode()) < canonical.index("\U00010000".encode())
    assert canonical == r.SerializeToString(deterministic=True)


def test_a_key_comes_before_the_keys_it_is_a_prefix_of() -> None:
    # Go, C++ and Java order "" < "a" < "ab"; Python's upb writes "ab", "a", "".
    r = _response_with_map(["ab", "a", ""])
    canonical = canonical_response(r.SerializeToString())
    entries = [canonical.index(b"\x0a\x00\x12"), canonical.index(b"\x0a\x01a\x12")]
    assert entries == sorted(entries) and canonical.index(b"\x0a\x02ab\x12") > entries[1]
    assert r.SerializeToString(deterministic=True) != canonical  # upb's own order
    assert gateway_digest(r) == response_digest(r.SerializeToString())


def test_receipt_unknown_fields_and_split_messages_are_normalised() -> None:
    r = _response_with_map(["x", "y"])
    r.charge.amount_fen = -5
    plain = response_digest(r.SerializeToString())
    r.receipt.origin = "gateway/audit"
    r.receipt.response_digest = b"\x01" * 32
    unknown = bytes([15 << 3 | 0, 7]) + _field(14, b"future")
    assert response_digest(r.SerializeToString() + unknown) == plain
    # A singular message written in two parts is their merge (protobuf semantics).
    wire = query_pb2.QueryResponse(request_id="q").SerializeToString()
    one = query_pb2.QueryResponse(request_id="q")
    one.charge.amount_fen = 3
    one.charge.balance_fen = 4
    split = wire + _field(3, bytes([0x08, 0x03])) + _field(3, bytes([0x18, 0x04]))
    assert response_digest(split) == message_digest(one)
    # Non-minimal varints and a non-canonical bool read as the values they carry.
    assert canonical_response(bytes([0x22, 0x00])) == b""  # policy_version "" is left out


def test_a_oneof_member_at_its_default_is_written() -> None:
    empty = _response_with_map([])
    set_to_default = _response_with_map([])
    record = set_to_default.sections[0].datasets[0].records[0]
    record.fields["k"].text = ""
    unset = _response_with_map([])
    unset.sections[0].datasets[0].records[0].fields["k"].CopyFrom(common_pb2.FieldValue())
    digests = {message_digest(m) for m in (empty, set_to_default, unset)}
    assert len(digests) == 3


@pytest.mark.parametrize(
    "wire",
    [
        b"\x0a\x05ab",  # runs past the end
        b"\x0a\x02\xff\xfe",  # not UTF-8
        b"\x10\x01",  # sections (field 2) as a varint
        b"\x0b",  # a group
        b"\x08" + b"\xff" * 10 + b"\x01",  # varint longer than 10 bytes
    ],
)
def test_invalid_wire_is_refused(wire: bytes) -> None:
    with pytest.raises(DigestError):
        response_digest(wire)


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
_keys = st.text(alphabet="ab\uffff\U00010000", max_size=3)  # prefixes and UTF-16 traps
# Long enough, at times, for two-byte lengths (an entry over 127 bytes, a record over 16 kB).
_long_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=40, max_size=300)
_value = st.one_of(
    st.builds(common_pb2.FieldValue, text=_text),
    st.builds(common_pb2.FieldValue, text=_long_text),
    st.builds(common_pb2.FieldValue, integer=st.integers(-(2**63), 2**63 - 1)),
    st.builds(common_pb2.FieldValue, boolean=st.booleans()),
    st.builds(common_pb2.FieldValue, money_fen=st.integers(-(2**63), 2**63 - 1)),
    st.just(common_pb2.FieldValue()),
)


@st.composite
def _responses(draw: st.DrawFn) -> query_pb2.QueryResponse:
    r = query_pb2.QueryResponse(request_id=draw(_text), policy_version=draw(_text))
    for _ in range(draw(st.integers(0, 3))):
        s = r.sections.add(
            department=draw(_text),
            status=draw(st.integers(0, 5)),
            latency_ms=draw(st.integers(0, 2**32 - 1)),
        )
        for _ in range(draw(st.integers(0, 2))):
            d = s.datasets.add(dataset=draw(_text), aged_out=draw(st.integers(0, 9)))
            for _ in range(draw(st.integers(0, 3))):
                rec = d.records.add(
                    record_id=draw(_text),
                    disputed=draw(st.booleans()),
                    event_end_date=draw(_text),
                    statement=draw(st.one_of(_text, _long_text)),
                )
                if draw(st.booleans()):  # a message field after the map (field 5)
                    rec.dispute.objection_id = draw(_text)
                    rec.dispute.outcome = draw(st.integers(0, 2))
                fields = draw(st.dictionaries(st.one_of(_keys, _text), _value, max_size=6))
                for key, value in fields.items():
                    rec.fields[key].CopyFrom(value)
        if draw(st.booleans()):
            s.withheld.add(dataset=draw(_text), reason=draw(st.integers(0, 7)))
    if draw(st.booleans()):
        r.charge.amount_fen = draw(st.integers(-(2**63), 2**63 - 1))
        r.charge.lines.add(department=draw(_text), amount_fen=draw(st.integers(-9, 9)))
    return r


@settings(max_examples=300, deadline=None)
@given(_responses())
def test_the_fast_path_is_the_reference(response: query_pb2.QueryResponse) -> None:
    """The gateway's digest (upb, deterministic) equals the stdlib rule, byte for byte."""
    wire = response.SerializeToString()
    assert gateway_digest(response) == response_digest(wire)
    assert response_digest(wire) == hashlib.sha256(canonical_response(wire)).digest()


def test_credit_audit_digest_of_a_saved_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = _response_with_map(["b", "a"])
    r.receipt.origin = "credit-gateway.test/audit"
    saved = tmp_path / "response.bin"
    saved.write_bytes(r.SerializeToString())
    assert credit_audit(["digest", str(saved)]) == 0
    assert capsys.readouterr().out.strip() == gateway_digest(r).hex()
    # As the README gives it: through the installed console script.
    script = Path(sys.executable).parent / "credit-audit"
    run = subprocess.run(
        [str(script), "digest", str(saved)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0 and run.stdout.strip() == gateway_digest(r).hex()
    saved.write_bytes(b"\x0a\x05ab")
    assert credit_audit(["digest", str(saved)]) == 2
    assert "runs past the end" in capsys.readouterr().err


def test_the_digest_module_needs_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "import gateway.audit.digest\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('google', 'grpc', 'protos')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_catalog_record_with_prefix_keys_takes_the_fast_path() -> None:
    # tax/credit_rating has "rating" and "rating_year": the rule's order is not upb's.
    r = _response_with_map(["rating_year", "rating", "rated_by"])
    record = r.sections[0].datasets[0].records[0]
    record.event_end_date, record.disputed = "2025-01-01", True
    r.sections[0].withheld.add(dataset="x", field="y", reason=2)
    r.sections.add(department="market").datasets.add(dataset="clean").records.add(record_id="1")
    r.charge.amount_fen = 7
    assert gateway_digest(r) == response_digest(r.SerializeToString())


def _with_unknown_fields(response: query_pb2.QueryResponse) -> query_pb2.QueryResponse:
    """``response`` parsed back with unknown fields in it and in a record (as a newer
    department adapter would send them): field 99 of the response and of the record."""
    # Field 99 / 98, wire type 2: the tag is the varint of number << 3 | 2.
    wire = response.SerializeToString() + bytes([0x9A, 0x06, 3]) + b"new"
    out = query_pb2.QueryResponse.FromString(wire)
    for s in out.sections:
        for d in s.datasets:
            for r in d.records:
                r.MergeFromString(bytes([0x92, 0x06, 5]) + b"extra")
    return out


@settings(max_examples=200, deadline=None)
@given(_responses(), st.booleans())
def test_the_in_place_digest_is_the_reference(
    response: query_pb2.QueryResponse, keys_given: bool
) -> None:
    """The query path's digest (no copy; the granted fields as the keys) equals the
    stdlib rule on the response as received, and discards only unknown fields."""
    expected = response_digest(response.SerializeToString())
    sent = _with_unknown_fields(response)
    assert len(sent.SerializeToString()) > len(response.SerializeToString())
    keys = None
    if keys_given:  # a superset of the records' keys, as the decision's grant is
        keys = {k for s in sent.sections for d in s.datasets for r in d.records for k in r.fields}
        keys.add("z")  # often no prefix pair at all: the shortcut that reads no record
    assert message_digest(sent, keys=keys, in_place=True) == expected
    assert sent == response  # the unknown fields gone, nothing else changed
    assert response_digest(sent.SerializeToString()) == expected
    if keys is not None:  # a grant with a prefix pair: every record read
        assert message_digest(sent, keys=keys | {"rating", "rating_year"}) == expected


def test_the_in_place_digest_copies_a_response_with_its_receipt() -> None:
    r = _response_with_map(["rating_year", "rating"])
    r.receipt.origin = "credit-gateway.test/audit"
    assert message_digest(r, in_place=True) == response_digest(r.SerializeToString())
    assert r.receipt.origin == "credit-gateway.test/audit"  # the caller's message kept whole
