"""Audit records: canonical JSON leaves and keyed pseudonyms.

Every leaf of the audit log is one JSON object encoded canonically, so that
the same record always hashes to the same leaf:

* keys sorted, separators ``","`` and ``":"`` (no insignificant white space);
* UTF-8 with non-ASCII characters kept as they are (``ensure_ascii=False``);
* integers only: a float has no single textual form across languages, so it
  is refused with :class:`~gateway.audit.errors.RecordError`;
* a ``"v"`` field carrying :data:`RECORD_VERSION`.

>>> canonical_json({"b": 1, "a": "信用"}).decode()
'{"a":"信用","b":1}'
>>> encode_record({"kind": "query"}, seq=0)
b'{"kind":"query","seq":0,"v":1}'

Raw identity numbers never enter the log; records carry
:func:`pseudonymize` output instead, which an auditor holding the pseudonym
key can recompute for one subject (``credit-audit history``).

>>> pseudonymize(b"k" * 32, "person", "11010519491231002x")[:16]
'dfdd1f4e884359fc'
"""

from __future__ import annotations

import hmac
import json
import math
import os
import secrets
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from gateway.audit.errors import KeyFormatError, RecordError

__all__ = [
    "MAX_SAFE_INTEGER",
    "RECORD_VERSION",
    "RESERVED_FIELDS",
    "SUBJECT_TYPES",
    "EncodedRecord",
    "canonical_json",
    "decode_record",
    "encode_record",
    "generate_pseudonym_key",
    "leaf_template",
    "load_pseudonym_key",
    "pseudonymize",
    "write_pseudonym_key",
]

#: Version of the record layout, stored in every record as ``"v"``.
RECORD_VERSION = 1

#: Fields the log itself sets: ``v`` (layout version) and ``seq`` (the record's
#: own log index, so that a moved, dropped or duplicated record is caught by
#: position and not only by a root mismatch).
RESERVED_FIELDS = frozenset({"v", "seq"})

#: Integers beyond 2**53 - 1 lose precision in JavaScript and many JSON parsers
#: (RFC 7493, I-JSON); auditors use more than one language, so refuse them.
MAX_SAFE_INTEGER = 2**53 - 1

#: Subject types a pseudonym can be made for.
SUBJECT_TYPES = ("enterprise", "person")

_PSEUDONYM_KEY_MIN = 32


_SCALARS = (str, bool, type(None))


def _check(value: Any, path: str) -> None:
    """Walk ``value`` and refuse anything without one canonical JSON form.

    Runs for every appended record, so scalars are tested by exact type first
    and a path string is only built when descending into a container.
    """
    t = type(value)
    if t in _SCALARS:
        return
    if t is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise RecordError(f"{path}: integer {value} is outside +-(2**53-1)")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str:
                raise RecordError(f"{path}: object key {key!r} is not a string")
            if type(item) not in _SCALARS:
                _check(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if type(item) not in _SCALARS:
                _check(item, f"{path}[{i}]")
        return
    if isinstance(value, float):
        what = "a non-finite number" if not math.isfinite(value) else f"the float {value!r}"
        raise RecordError(
            f"{path}: {what} is not allowed in audit records; use an integer "
            "(e.g. amounts in fen, times as ISO 8601 strings)"
        )
    if isinstance(value, bool | str):  # subclasses (StrEnum...) encode like their base
        return
    if isinstance(value, int):
        _check(int(value), path)
        return
    raise RecordError(f"{path}: {type(value).__name__} is not a JSON type")


# Built once: json.dumps/json.loads with options build a new coder per call,
# which is a large part of the cost of verifying a record.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _dumps(obj: Any) -> bytes:
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError("a string is not valid Unicode (lone surrogate)") from None


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON bytes.

    Raises :class:`~gateway.audit.errors.RecordError` for floats, NaN,
    non-string keys, integers beyond 2**53-1, lone surrogates and non-JSON
    types.
    """
    _check(obj, "$")
    return _dumps(obj)


def encode_record(record: Mapping[str, Any], *, seq: int) -> bytes:
    """The leaf bytes for ``record`` stored at log index ``seq``.

    Adds ``"v"`` (:data:`RECORD_VERSION`) and ``"seq"``. Raises
    :class:`~gateway.audit.errors.RecordError` if ``record`` is not a mapping,
    sets a reserved field, or is not canonically encodable.
    """
    if type(record) is EncodedRecord:
        return record.leaf(seq)
    if not isinstance(record, Mapping):
        raise RecordError(f"an audit record must be a JSON object, not {type(record).__name__}")
    clash = RESERVED_FIELDS.intersection(record)
    if clash:
        raise RecordError(f"field(s) {sorted(clash)} are set by the log, not by callers")
    return canonical_json({**record, "v": RECORD_VERSION, "seq": seq})


def leaf_template(record: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The leaf bytes for ``record`` without its index: ``(head, tail)`` such that
    ``head + str(seq).encode() + tail == encode_record(record, seq=seq)`` for every
    ``seq`` (keys sort by code point and ``"seq"`` is a top-level key, so the number
    sits between the keys below ``"seq"`` and those above it).

    A writer sharing the log with other processes learns an entry's index only in
    the statement that stores it (:mod:`gateway.stores.postgres.audit`): the
    template is encoded (and refused) before, the index spliced in there. Raises
    :class:`~gateway.audit.errors.RecordError` as :func:`encode_record` does.
    """
    if type(record) is EncodedRecord:
        return record.template
    return _template(record, checked=frozenset())


def _template(record: Mapping[str, Any], *, checked: Collection[str]) -> tuple[bytes, bytes]:
    if not isinstance(record, Mapping):
        raise RecordError(f"an audit record must be a JSON object, not {type(record).__name__}")
    clash = RESERVED_FIELDS.intersection(record)
    if clash:
        raise RecordError(f"field(s) {sorted(clash)} are set by the log, not by callers")
    full = {**record, "v": RECORD_VERSION}
    flat_above = True  # every field sorting after "seq" holds a scalar
    for key, value in full.items():
        if not isinstance(key, str):
            raise RecordError(f"$: key {key!r} is not a string")
        t = type(value)
        if t in _SCALARS:
            continue
        if key not in checked:
            _check(value, f"$.{key}")
        if key > "seq" and t is not int:
            flat_above = False
    if flat_above:
        # One encoding, index 0 in place, split there: after the top-level "seq" come
        # only scalars, and '"seq":0,' cannot occur inside a string (its quotes would be
        # escaped), so its last occurrence is the top-level one.
        full["seq"] = 0
        leaf = _dumps(full)
        at = leaf.rfind(b'"seq":0,') + len(b'"seq":')
        return leaf[:at], leaf[at + 1 :]
    below = _dumps({k: v for k, v in full.items() if k < "seq"})
    above = _dumps({k: v for k, v in full.items() if k > "seq"})  # "v" is here
    head = below[:-1] + (b"," if len(below) > 2 else b"") + b'"seq":'
    return head, b"," + above[1:]


class EncodedRecord(Mapping[str, Any]):
    """A record encoded once, where it is built: the log splices in its index and
    stores the bytes (:func:`encode_record` and :func:`leaf_template` take them as
    they are), with no second walk or encoding of what was just made.

    The bytes are exactly :func:`encode_record`'s for the same mapping (the same
    encoder; only checks are skipped, never a byte changed), and the record is
    read-only, so the bytes cannot go stale. ``checked``: top-level fields whose
    values the builder vouches for by construction (strings, integers within
    +-(2**53-1), lists and string-keyed objects of them: e.g. a query record's
    ``departments``, made from a protobuf response), which are not walked again;
    every other field is checked as :func:`canonical_json` checks it. Raises
    :class:`~gateway.audit.errors.RecordError` as :func:`encode_record` does.

    >>> r = EncodedRecord({"kind": "query", "n": {"a": [1]}}, checked=("n",))
    >>> r.leaf(7) == encode_record({"kind": "query", "n": {"a": [1]}}, seq=7)
    True
    >>> r["kind"], len(r)
    ('query', 2)
    """

    __slots__ = ("_record", "template")

    def __init__(self, record: Mapping[str, Any], *, checked: Collection[str] = ()) -> None:
        self._record = dict(record)
        #: ``(head, tail)`` as :func:`leaf_template` gives them.
        self.template = _template(self._record, checked=checked)

    def leaf(self, seq: int) -> bytes:
        """The leaf bytes of the record at log index ``seq``."""
        head, tail = self.template
        return b"%s%d%s" % (head, seq, tail)

    def __getitem__(self, key: str) -> Any:
        return self._record[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._record)

    def __len__(self) -> int:
        return len(self._record)

    def __repr__(self) -> str:
        return f"EncodedRecord({self._record!r})"


def _no_float(text: str) -> Any:
    raise RecordError(f"record contains the number {text}")


# Floats and NaN are refused while parsing, so a parsed leaf holds only
# canonical JSON types and needs no second walk. (Huge integers need no hook:
# the writer never produces them, and a leaf is judged by its hash anyway.)
_DECODER = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_float)


def decode_record(leaf: bytes, *, canonical: bool = True) -> dict[str, Any]:
    """Parse leaf bytes back into a record.

    Raises :class:`~gateway.audit.errors.RecordError` if the bytes are not
    UTF-8 JSON, not an object, contain a float, lack a supported ``"v"`` or a
    ``"seq"``, or (with ``canonical``, the default) are not byte-for-byte the
    canonical encoding. Re-encoding costs more than parsing; whole-log
    verification skips it unless asked, since the leaf hashes and signed
    checkpoints already pin every byte.
    """
    try:
        obj = _DECODER.decode(leaf.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"not UTF-8 JSON: {err}") from None
    if not isinstance(obj, dict):
        raise RecordError("record is not a JSON object")
    if obj.get("v") != RECORD_VERSION:
        raise RecordError(f"unsupported record version {obj.get('v')!r}")
    if not isinstance(obj.get("seq"), int) or isinstance(obj.get("seq"), bool):
        raise RecordError("record has no integer seq")
    if canonical and _dumps(obj) != leaf:
        raise RecordError("record bytes are not canonical JSON")
    return obj


def pseudonymize(key: bytes, subject_type: str, subject_id: str) -> str:
    """HMAC-SHA256 pseudonym (lower-case hex) of a subject for the audit log.

    The identifier is normalised first (surrounding space removed, letters
    upper-cased) because both GB 32100 codes and the GB 11643 check character
    ``X`` are case-insensitive in practice; the subject type is part of the
    message, so an enterprise and a person never share a pseudonym.

    Raises :class:`ValueError` for an unknown subject type, an empty id or a
    key shorter than 32 bytes.
    """
    if subject_type not in SUBJECT_TYPES:
        raise ValueError(f"subject type must be one of {SUBJECT_TYPES}, not {subject_type!r}")
    normalised = subject_id.strip().upper()
    if not normalised:
        raise ValueError("subject id is empty")
    if len(key) < _PSEUDONYM_KEY_MIN:
        raise ValueError(f"pseudonym key must be at least {_PSEUDONYM_KEY_MIN} bytes")
    # ":" never occurs in a subject type, so "type:id" is unambiguous.
    message = f"{subject_type}:{normalised}".encode()
    return hmac.digest(key, message, "sha256").hex()  # one C call, as hmac.new's hex


def generate_pseudonym_key() -> bytes:
    """A fresh random 32-byte pseudonym key."""
    return secrets.token_bytes(_PSEUDONYM_KEY_MIN)


def write_pseudonym_key(path: str | os.PathLike[str], key: bytes) -> None:
    """Write ``key`` as hex to a new file readable by its owner only (mode 0600).

    Raises :class:`FileExistsError` rather than overwrite a key.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")


def load_pseudonym_key(path: str | os.PathLike[str]) -> bytes:
    """Read a pseudonym key file (hex, surrounding white space ignored).

    Raises :class:`OSError` if unreadable and
    :class:`~gateway.audit.errors.KeyFormatError` if not hex of >= 32 bytes.
    """
    text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyFormatError(f"{path}: pseudonym key is not hex") from None
    if len(key) < _PSEUDONYM_KEY_MIN:
        raise KeyFormatError(f"{path}: pseudonym key is shorter than {_PSEUDONYM_KEY_MIN} bytes")
    return key
