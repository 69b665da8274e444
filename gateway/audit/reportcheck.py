"""Signed credit reports: their file format and their offline check (standard library and
``cryptography`` only, like the rest of ``credit-audit``).

A report (made by :mod:`gateway.report` for the ``Report`` RPC) is one JSON *envelope*::

    {"format": "credit-gateway-report/1",
     "content": {...},                 # what the report says: subject, date, purpose, agency,
                                       # sections, withheld items, receipt (response digest)
     "signature": {"key": "NAME+KEYID", "content": "BASE64"},
     "verification_code": "ABCD-EFGH-IJKL-MNOP",
     "proof": "c2sp.org/tlog-proof@v1 ..."}   # the receipt's leaf in a signed checkpoint

shipped on its own (``report.json``) and inside the PDF, as the attached file
``credit-report.json`` in an uncompressed stream, with one more member,
``"pdf_signature"``, last. How each part is checked:

* ``signature.content``: Ed25519 over :data:`CONTENT_DOMAIN` + canonical JSON of
  ``content`` (:func:`gateway.audit.records.canonical_json`: sorted keys, no spaces, UTF-8).
* ``pdf_signature``: Ed25519 over :data:`PDF_DOMAIN` + the whole PDF file with the
  signature's 88 base64 characters replaced by :data:`PDF_FILLER` (the idea of PDF's
  ``/ByteRange``: a file signed in place). One changed byte anywhere in the file fails it.
* ``verification_code``: the first 80 bits of SHA-256 over :data:`CODE_DOMAIN` + the
  canonical content, base32, in four groups; printed on the report and in its QR code.
* ``proof``: a c2sp.org/tlog-proof whose checkpoint is signed by a trusted log key and
  whose inclusion proof puts the receipt's leaf hash at the receipt's index (RFC 6962
  section 2.1.1). The receipt's origin must be the checkpoint's.

The gateway signs with the audit log's own key. Domain separation keeps the two uses
apart: a signed note's text may hold no control character but a newline
(C2SP signed-note), while every report message starts with a prefix holding a NUL, so no
report signature is ever a valid checkpoint signature or the other way round.

Extracting the envelope needs no PDF library: the envelope is the only place in the file
where :data:`MARKER` occurs (JSON escapes every quote inside a string, and the page
streams are compressed), so :func:`extract_envelope` finds it and parses one JSON value.

>>> code_of({"a": 1})
'WKRF-5FAU-RVKA-K5BL'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.checkpoint import Checkpoint, TlogProof, open_checkpoint
from gateway.audit.errors import AuditError, NoteError, ProofError
from gateway.audit.merkle import verify_inclusion
from gateway.audit.note import Verifier
from gateway.audit.records import canonical_json

__all__ = [
    "CODE_DOMAIN",
    "CONTENT_DOMAIN",
    "FORMAT",
    "MARKER",
    "PDF_DOMAIN",
    "PDF_FILLER",
    "ReportCheck",
    "ReportError",
    "check_report",
    "code_of",
    "content_message",
    "envelope_bytes",
    "extract_envelope",
    "pdf_message",
]

#: The ``format`` member of every report envelope.
FORMAT = "credit-gateway-report/1"
#: How every envelope begins, byte for byte (see :func:`envelope_bytes`).
MARKER = b'{"format":"' + FORMAT.encode() + b'"'
#: Prefix of the message the content signature covers.
CONTENT_DOMAIN = b"credit-gateway report content v1\x00"
#: Prefix of the message the whole-file signature covers.
PDF_DOMAIN = b"credit-gateway report pdf v1\x00"
#: Prefix of the hashed message a verification code is cut from.
CODE_DOMAIN = b"credit-gateway report code v1\x00"
#: What stands in the ``pdf_signature`` slot while the file is signed: 88 characters,
#: the length of a base64 Ed25519 signature, none of them valid base64 padding.
PDF_FILLER = "-" * 88


class ReportError(AuditError):
    """The file is not a report, or a report that does not verify; the message says why."""


@dataclass(frozen=True)
class ReportCheck:
    """What a successful :func:`check_report` established."""

    content: dict[str, Any]
    verification_code: str
    checkpoint: Checkpoint
    #: True for a PDF whose whole-file signature verified, False for a bare JSON report.
    pdf: bool


def content_message(content: Mapping[str, Any]) -> bytes:
    """The bytes the content signature covers: :data:`CONTENT_DOMAIN` + canonical JSON."""
    return CONTENT_DOMAIN + canonical_json(content)


def pdf_message(pdf_with_filler: bytes) -> bytes:
    """The bytes the whole-file signature covers (the slot holding :data:`PDF_FILLER`)."""
    return PDF_DOMAIN + pdf_with_filler


def code_of(content: Mapping[str, Any]) -> str:
    """The report's verification code: 16 base32 characters (80 bits) of SHA-256 over
    :data:`CODE_DOMAIN` + canonical content, as ``XXXX-XXXX-XXXX-XXXX``."""
    digest = hashlib.sha256(CODE_DOMAIN + canonical_json(content)).digest()
    text = base64.b32encode(digest[:10]).decode()
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """Serialise an envelope: ``format`` first (so that it begins with :data:`MARKER`),
    the other members in the order given, compact UTF-8 JSON."""
    ordered = {"format": FORMAT, **{k: v for k, v in envelope.items() if k != "format"}}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode()


def _no_float(text: str) -> Any:
    raise ReportError(f"report holds a floating-point number ({text}); reports have none")


def _parse(data: bytes, start: int) -> tuple[dict[str, Any], int]:
    """Parse one JSON object at ``data[start:]``; returns it and its end offset."""
    try:
        tail = data[start:].decode("utf-8", errors="surrogateescape")
        value, end = json.JSONDecoder(parse_float=_no_float).raw_decode(tail)
    except json.JSONDecodeError as err:
        raise ReportError(f"the embedded report is not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise ReportError("the report is not a JSON object")
    consumed = len(tail[:end].encode("utf-8", errors="surrogateescape"))
    return value, start + consumed


def extract_envelope(data: bytes) -> tuple[dict[str, Any], int, int]:
    """Find the one envelope in ``data`` (a PDF or a JSON report).

    Returns (envelope, start, end): its byte span in ``data``.

    Raises:
        ReportError: no envelope, more than one, or one that is not valid JSON.
    """
    first = data.find(MARKER)
    if first < 0:
        raise ReportError("no credit-gateway report found in the file")
    if data.find(MARKER, first + 1) >= 0:
        raise ReportError("the file holds more than one report; refused as ambiguous")
    envelope, end = _parse(data, first)
    return envelope, first, end


def _b64(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ReportError(f"{what} is missing")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ReportError(f"{what} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise ReportError(f"{what} is not {size} bytes")
    if base64.b64encode(raw).decode() != value:
        # Unused low bits of the last character: another text for the same bytes.
        raise ReportError(f"{what} is not canonical base64")
    return raw


def _verifier(name: Any, verifiers: Sequence[Verifier]) -> Verifier:
    if not isinstance(name, str):
        raise ReportError("the report names no signing key")
    for v in verifiers:
        if f"{v.name}+{v.key_id:08x}" == name:
            return v
    raise ReportError(f"the report is signed by {name}, which is not a trusted key")


def _check_receipt(
    content: Mapping[str, Any], proof_text: Any, verifiers: Sequence[Verifier]
) -> Checkpoint:
    receipt = content.get("receipt")
    if not isinstance(receipt, Mapping):
        raise ReportError("the report carries no audit receipt")
    index = receipt.get("log_index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ReportError("the receipt's log index is missing")
    leaf = _b64(receipt.get("leaf_hash"), "the receipt's leaf hash", 32)
    if not isinstance(proof_text, str):
        raise ReportError("the report carries no inclusion proof")
    try:
        proof = TlogProof.parse(proof_text)
        checkpoint = open_checkpoint(proof.checkpoint_note, verifiers)
    except NoteError as err:
        raise ReportError(f"the inclusion proof is not acceptable: {err}") from None
    if checkpoint.origin != receipt.get("origin"):
        raise ReportError(
            f"the receipt names log {receipt.get('origin')!r}, the checkpoint {checkpoint.origin!r}"
        )
    if proof.index != index:
        raise ReportError(f"the proof is for entry {proof.index}, the receipt names {index}")
    try:
        verify_inclusion(leaf, index, checkpoint.size, proof.proof, checkpoint.root_hash)
    except ProofError as err:
        raise ReportError(
            f"the receipt (entry {index}) is not in the log at tree size {checkpoint.size}: {err}"
        ) from None
    return checkpoint


def check_report(data: bytes, verifiers: Sequence[Verifier]) -> ReportCheck:
    """Verify a report file (PDF or JSON) offline against the log's trusted keys.

    Checks, in order: the envelope is found once; for a PDF, the whole-file signature;
    the content signature; the verification code; the receipt's inclusion proof against
    a signed checkpoint.

    Raises:
        ReportError: the first check that fails, in words.
    """
    envelope, start, end = extract_envelope(data)
    if envelope.get("format") != FORMAT:
        raise ReportError(f"unknown report format {envelope.get('format')!r}")
    content = envelope.get("content")
    if not isinstance(content, dict):
        raise ReportError("the report has no content")
    signature = envelope.get("signature")
    if not isinstance(signature, Mapping):
        raise ReportError("the report is not signed")
    verifier = _verifier(signature.get("key"), verifiers)
    is_pdf = data.startswith(b"%PDF-")
    if is_pdf:
        slot = envelope.get("pdf_signature")
        sig = _b64(slot, "the PDF's signature", 64)
        tail = b'"pdf_signature":"' + str(slot).encode() + b'"}'
        if not data[:end].endswith(tail):
            raise ReportError("the PDF's signature is not the report's last member")
        at = end - len(tail) + len(b'"pdf_signature":"')
        blanked = data[:at] + PDF_FILLER.encode() + data[at + len(PDF_FILLER) :]
        if not verifier.verify(pdf_message(blanked), sig):
            raise ReportError("the PDF file was changed after it was signed")
    elif data[:start].strip() or data[end:].strip():
        raise ReportError("the JSON report has bytes before or after it")
    if not verifier.verify(
        content_message(content), _b64(signature.get("content"), "the signature", 64)
    ):
        raise ReportError("the report's content does not match its signature")
    code = code_of(content)
    if envelope.get("verification_code") != code:
        raise ReportError("the verification code does not belong to this content")
    checkpoint = _check_receipt(content, envelope.get("proof"), verifiers)
    return ReportCheck(content, code, checkpoint, is_pdf)
