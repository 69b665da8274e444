"""C2SP tlog-checkpoint tree heads and c2sp.org/tlog-proof inclusion proofs.

A checkpoint (https://c2sp.org/tlog-checkpoint) is the text of a signed note:
the log's origin, the tree size in decimal and the base64 root hash, each on
its own line, then optional extension lines. The note key name is the origin.

>>> from gateway.audit.note import Ed25519Signer, Verifier, generate_key
>>> from gateway.audit.merkle import EMPTY_ROOT
>>> skey, vkey = generate_key("gateway.example/audit")
>>> note = sign_checkpoint(Checkpoint("gateway.example/audit", 0, EMPTY_ROOT),
...                        [Ed25519Signer.from_key_string(skey)])
>>> open_checkpoint(note, [Verifier.from_key_string(vkey)]).size
0

A tlog-proof (https://c2sp.org/tlog-proof) bundles an entry's index, its
inclusion proof and a signed checkpoint, so one entry can be checked offline
with :func:`verify_tlog_proof`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.audit.errors import NoteError, ProofError
from gateway.audit.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from gateway.audit.note import Signer, Verifier, open_note, sign_note

__all__ = [
    "TLOG_PROOF_HEADER",
    "Checkpoint",
    "TlogProof",
    "open_checkpoint",
    "sign_checkpoint",
    "verify_tlog_proof",
]

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"


def _decimal(text: str, what: str) -> int:
    # ASCII digits, no sign, no leading zero: one text per number.
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise NoteError(f"{what} {text[:30]!r} is not a decimal without leading zeroes")
    return int(text)


def _b64hash(text: str, what: str) -> bytes:
    try:
        value = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"{what} is not valid base64") from None
    if len(value) != HASH_SIZE:
        raise NoteError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint tree head: origin, size, RFC 6962 root hash, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """The checkpoint note text. Raises NoteError if a field cannot be framed."""
        if not self.origin or "\n" in self.origin:
            raise NoteError("checkpoint origin must be one non-empty line")
        if self.size < 0 or len(self.root_hash) != HASH_SIZE:
            raise NoteError("checkpoint needs a size >= 0 and a 32-byte root hash")
        if any(not ext or "\n" in ext for ext in self.extensions):
            raise NoteError("checkpoint extension lines must be non-empty single lines")
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text (not the signed note). Raises NoteError."""
        if not text.endswith("\n"):
            raise NoteError("checkpoint text does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise NoteError("checkpoint needs at least three non-empty lines")
        return cls(
            origin=lines[0],
            size=_decimal(lines[1], "checkpoint tree size"),
            root_hash=_b64hash(lines[2], "checkpoint root hash"),
            extensions=tuple(lines[3:]),
        )


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> str:
    """The signed note of ``checkpoint``; every signer's key name must be the origin.

    Raises NoteError (or KeyFormatError for a malformed signer key).
    """
    for signer in signers:
        if signer.key_name != checkpoint.origin:
            raise NoteError(
                f"key {signer.key_name!r} cannot sign checkpoints of {checkpoint.origin!r}"
            )
    return sign_note(checkpoint.text(), signers)


def open_checkpoint(
    note: str | bytes, verifiers: Iterable[Verifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it.

    Only a verified signature whose key name equals the checkpoint's origin
    counts. Raises NoteError (UnverifiedNoteError, BadSignatureError) if the
    note or its signatures are bad, or if ``origin`` is given and differs.
    """
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}")
    if not any(sig.name == checkpoint.origin for sig in opened.verified):
        raise NoteError(f"checkpoint is not signed by a trusted key of {checkpoint.origin!r}")
    return checkpoint


@dataclass(frozen=True)
class TlogProof:
    """A c2sp.org/tlog-proof: index, inclusion proof and the signed checkpoint."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None

    def text(self) -> str:
        """The proof file contents."""
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint_note

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        """Parse a proof file. Raises NoteError if malformed."""
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise NoteError("tlog-proof has no blank line before the checkpoint")
        lines = head.split("\n")
        if lines[0] != TLOG_PROOF_HEADER:
            raise NoteError(f"tlog-proof does not start with {TLOG_PROOF_HEADER}")
        rest = lines[1:]
        extra = None
        if rest and rest[0].startswith("extra "):
            try:
                extra = base64.b64decode(rest[0][6:].encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                raise NoteError("tlog-proof extra data is not valid base64") from None
            rest = rest[1:]
        if not rest or not rest[0].startswith("index "):
            raise NoteError("tlog-proof has no index line")
        index = _decimal(rest[0][6:], "tlog-proof index")
        proof = tuple(_b64hash(line, "tlog-proof hash") for line in rest[1:])
        return cls(index, proof, note, extra)


def verify_tlog_proof(
    text: str, leaf: bytes, verifiers: Iterable[Verifier], *, origin: str | None = None
) -> Checkpoint:
    """Check that ``leaf`` is in the log, per a tlog-proof and trusted keys.

    Returns the verified checkpoint. Raises NoteError if the proof file or
    its checkpoint is malformed or not signed by a trusted key, and
    ProofError if the inclusion proof does not verify.
    """
    parsed = TlogProof.parse(text)
    checkpoint = open_checkpoint(parsed.checkpoint_note, verifiers, origin=origin)
    try:
        verify_inclusion(
            leaf_hash(leaf), parsed.index, checkpoint.size, parsed.proof, checkpoint.root_hash
        )
    except ProofError as err:
        raise ProofError(f"entry {parsed.index}: {err}") from None
    return checkpoint
