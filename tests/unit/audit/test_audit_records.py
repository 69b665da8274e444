"""Canonical JSON records and keyed pseudonyms."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.errors import KeyFormatError, RecordError
from gateway.audit.records import (
    MAX_SAFE_INTEGER,
    EncodedRecord,
    canonical_json,
    decode_record,
    encode_record,
    leaf_template,
    load_pseudonym_key,
    pseudonymize,
    write_pseudonym_key,
)


def test_canonical_form() -> None:
    record = {"z": [1, True, None], "a": {"y": "信用", "b": -3}, "é": "x"}
    assert canonical_json(record) == '{"a":{"b":-3,"y":"信用"},"z":[1,true,null],"é":"x"}'.encode()


def test_same_record_same_bytes_whatever_the_key_order() -> None:
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "float 1.5"),
        (float("nan"), "non-finite"),
        ({"x": {"y": [0.0]}}, r"\$\.x\.y\[0\]: the float"),
        ({1: "a"}, "not a string"),
        (b"bytes", "not a JSON type"),
        (2**53, "outside"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_refused_values(value: object, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        canonical_json(value)


def test_encode_adds_version_and_seq_and_decode_round_trips() -> None:
    leaf = encode_record({"kind": "query", "n": 1}, seq=7)
    assert leaf == b'{"kind":"query","n":1,"seq":7,"v":1}'
    assert decode_record(leaf) == {"kind": "query", "n": 1, "seq": 7, "v": 1}


def test_encode_refuses_reserved_fields_and_non_objects() -> None:
    with pytest.raises(RecordError, match="set by the log"):
        encode_record({"v": 2}, seq=0)
    with pytest.raises(RecordError, match="JSON object"):
        encode_record([1], seq=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "leaf",
    [
        b'{"seq":0, "v":1}',  # white space
        b'{"v":1,"seq":0}',  # key order
        b'{"seq":0,"v":1,"x":1.0}',  # float
        b'{"seq":0,"v":2}',  # version
        b'{"v":1}',  # no seq
        b"[1]",
        b"\xff",
    ],
)
def test_decode_insists_on_canonical(leaf: bytes) -> None:
    with pytest.raises(RecordError):
        decode_record(leaf)


def test_pseudonyms() -> None:
    key = bytes(range(32))
    p = pseudonymize(key, "person", "11010519491231002X")
    assert len(p) == 64 and int(p, 16) >= 0
    assert pseudonymize(key, "person", " 11010519491231002x ") == p
    assert pseudonymize(key, "enterprise", "11010519491231002X") != p
    assert pseudonymize(bytes(32), "person", "11010519491231002X") != p
    assert "11010519491231002" not in p
    with pytest.raises(ValueError, match="subject type"):
        pseudonymize(key, "company", "x")
    with pytest.raises(ValueError, match="32 bytes"):
        pseudonymize(b"short", "person", "x")


def test_pseudonym_key_file(tmp_path: Path) -> None:
    path = tmp_path / "p.key"
    write_pseudonym_key(path, bytes(range(32)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_pseudonym_key(path) == bytes(range(32))
    with pytest.raises(FileExistsError):
        write_pseudonym_key(path, bytes(32))
    (tmp_path / "bad.key").write_text("zz")
    with pytest.raises(KeyFormatError):
        load_pseudonym_key(tmp_path / "bad.key")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
#: Top-level keys around "seq" and "v" (below, between and above them in code point order).
_keys = st.sampled_from(["a", "kind", "sea", "seq0", "sf", "u", "v0", "w", "é", "信"]) | st.text()


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_keys.filter(lambda k: k not in ("v", "seq")), _json, max_size=8),
    st.integers(0, 2**40),
    st.data(),
)
def test_a_record_encoded_once_has_the_bytes_of_encode_record(
    record: dict[str, object], seq: int, data: st.DataObject
) -> None:
    """EncodedRecord (the query path's one encoding) gives, byte for byte, what the log
    would have encoded, whichever fields it was told not to walk again."""
    checked = data.draw(st.lists(st.sampled_from(sorted(record) or ["x"]), max_size=3))
    once = EncodedRecord(record, checked=checked)
    assert once.leaf(seq) == encode_record(record, seq=seq)
    assert encode_record(once, seq=seq) == encode_record(record, seq=seq)
    assert leaf_template(once) == leaf_template(record)
    assert dict(once) == record and once == record and len(once) == len(record)


def test_a_record_encoded_once_is_still_refused_where_not_vouched_for() -> None:
    with pytest.raises(RecordError, match=r"\$\.n\.x: the float"):
        EncodedRecord({"kind": "query", "n": {"x": 1.5}})
    with pytest.raises(RecordError, match="outside"):
        EncodedRecord({"kind": "query", "charge_fen": 2**53})
    with pytest.raises(RecordError, match="set by the log"):
        EncodedRecord({"kind": "query", "seq": 1})
    with pytest.raises(RecordError, match="lone surrogate"):
        EncodedRecord({"kind": "query", "d": {"x": "\ud800"}}, checked=("d",))
    # Vouched for: not walked (the builder's promise), encoded all the same.
    assert (
        EncodedRecord({"d": {"x": [1]}}, checked=("d",)).leaf(0) == b'{"d":{"x":[1]},"seq":0,"v":1}'
    )


@pytest.mark.parametrize(
    "record",
    [
        {"a": {"seq": 0, "x": 1}, "z": 1},  # a nested "seq":0, before the top-level one
        {"a": 1, "z": {"seq": 0, "y": 2}},  # ... and after it
        {"z": [{"seq": 0, "v": 1}], "t": 'x"seq":0,'},
        {"sep": '"seq":0,', "w": "}"},
        {},
    ],
)
def test_a_record_encoded_once_splits_at_its_own_seq(record: dict[str, object]) -> None:
    for seq in (0, 7, 12345):
        assert EncodedRecord(record).leaf(seq) == encode_record(record, seq=seq)
        assert leaf_template(EncodedRecord(record)) == leaf_template(record)
