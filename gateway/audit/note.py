"""C2SP signed notes with Ed25519, Go-compatible keys, and the Signer seam.

A signed note (https://c2sp.org/signed-note) is a text ending in a newline,
a blank line, and signature lines ``— <key name> base64(key ID || sig)``;
the key ID is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``. Keys use
the string forms of golang.org/x/mod/sumdb/note, so keys and notes made here
interoperate with Go's tools:

* signer key: ``PRIVATE+KEY+<name>+<8 hex key ID>+base64(0x01 || 32-byte seed)``
* verifier key: ``<name>+<8 hex key ID>+base64(0x01 || 32-byte public key)``

>>> skey, vkey = generate_key("gateway.example/audit")
>>> signer = Ed25519Signer.from_key_string(skey)
>>> note = sign_note("hello\\n", [signer])
>>> open_note(note, [Verifier.from_key_string(vkey)]).text
'hello\\n'

:class:`Signer` is the seam (in the manner of securesystemslib): anything
with a ``key_name``, ``sign(bytes) -> bytes`` and ``verifier_key()`` can sign
checkpoints, so a KMS- or HSM-backed signer can replace the file key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.errors import BadSignatureError, KeyFormatError, NoteError, UnverifiedNoteError
from gateway.auth.keys import ed25519_public_key_problem

__all__ = [
    "ALG_ED25519",
    "Ed25519Signer",
    "Note",
    "NoteSignature",
    "Signer",
    "Verifier",
    "generate_key",
    "key_id",
    "load_verifiers",
    "open_note",
    "sign_note",
    "write_key_files",
]

#: Signature type byte of Ed25519 in C2SP signed notes.
ALG_ED25519 = 0x01

_PRIVATE_PREFIX = "PRIVATE+KEY+"
_EM_DASH = "\u2014"
_SIG_PREFIX = _EM_DASH + " "
# The spec says "at least 16"; Go's note package allows 100.
_MAX_SIGNATURES = 100


#: Go's ``unicode.IsSpace`` (the Unicode White_Space property), which is what
#: ``note.isValidName`` refuses; spelled out so that a name is valid here exactly
#: when it is valid to Go, whatever Python's own idea of a space.
_GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


def _check_name(name: str) -> None:
    # golang.org/x/mod/sumdb/note isValidName: non-empty, no White_Space, no '+'.
    if not name or "+" in name or any(c in _GO_SPACE for c in name):
        raise KeyFormatError(f"invalid key name {name!r}: empty, or has a space or '+'")
    if any(ord(c) < 0x20 for c in name):
        raise KeyFormatError(f"invalid key name {name!r}: control character")


#: The eight points of small order, canonically encoded (RFC 8032 encoding).
#: A verifier key equal to one of them (or to a non-canonical encoding of one)
#: accepts forged signatures: with A of small order, ``[S]B = R + [k]A`` is
#: met by S = 0, R = identity for most messages. Listed for readers and tests;
#: :func:`check_public_key` finds them (and every other weak point) by arithmetic.
SMALL_ORDER_POINTS: tuple[bytes, ...] = tuple(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # identity
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    )
)


def check_public_key(raw: bytes) -> None:
    """Refuse an Ed25519 public key (32 bytes, RFC 8032 encoding) that is not a
    proper key: a non-canonical encoding, no point on the curve, or a point not in
    the prime-order subgroup (any small-order point, such as the identity
    ``AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA``, or one with a small-order
    component). Honest keys, A = [a]B, are never any of these; a small-order key
    lets anyone forge signatures.

    The arithmetic is :func:`gateway.auth.keys.ed25519_public_key_problem`, the one
    check agency tokens, consents and the audit log share (standard library only).
    Raises KeyFormatError naming what is wrong (never the key bytes).
    """
    problem = ed25519_public_key_problem(raw)
    if problem is not None:
        raise KeyFormatError(
            problem if problem.startswith("an Ed25519") else f"weak key: {problem}"
        )


def key_id(name: str, key: bytes) -> int:
    """C2SP key ID of ``key`` (type byte followed by the public key) named ``name``."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyFormatError(f"{what} is not valid base64") from None


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _parse_key_parts(text: str, what: str) -> tuple[str, int, bytes]:
    """Split ``name+hash+base64`` (the base64 part may itself contain '+')."""
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise KeyFormatError(f"{what} is not of the form name+keyid+base64")
    name, hash_hex, key_b64 = parts
    _check_name(name)
    if len(hash_hex) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hash_hex):
        raise KeyFormatError(f"{what} key ID {hash_hex!r} is not 8 hex digits")
    key = _b64decode(key_b64, f"{what} key data")
    if len(key) != 33 or key[0] != ALG_ED25519:
        raise KeyFormatError(f"{what} is not an Ed25519 key (type 0x01 and 32 bytes)")
    return name, int(hash_hex, 16), key


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 public key with its note name and key ID."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def from_key_string(cls, vkey: str) -> Verifier:
        """Parse ``name+keyid+base64(0x01 || pub)``.

        Raises KeyFormatError if malformed, if the key ID does not match, or if
        the key is weak (:func:`check_public_key`), naming the key.
        """
        name, kid, key = _parse_key_parts(vkey.strip(), "verifier key")
        if key_id(name, key) != kid:
            raise KeyFormatError(f"verifier key {name}: key ID does not match the key")
        try:
            check_public_key(key[1:])
        except KeyFormatError as err:
            raise KeyFormatError(f"verifier key {name}+{kid:08x}: {err}") from None
        return cls(name, kid, Ed25519PublicKey.from_public_bytes(key[1:]))

    def key_string(self) -> str:
        """The Go ``note`` verifier key string."""
        data = bytes([ALG_ED25519]) + _raw_public(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(data).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@runtime_checkable
class Signer(Protocol):
    """Signs note texts; ``key_name`` is the note key name (the log's origin)."""

    key_name: str

    def sign(self, msg: bytes) -> bytes:
        """The raw signature of ``msg`` (64 bytes for Ed25519)."""
        ...

    def verifier_key(self) -> str:
        """The verifier key string matching this signer."""
        ...


class Ed25519Signer:
    """An Ed25519 key held in memory, loaded from a Go-format signer key string."""

    def __init__(self, key_name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(key_name)
        self.key_name = key_name
        self._private = private_key
        pub = bytes([ALG_ED25519]) + _raw_public(private_key.public_key())
        self.key_id = key_id(key_name, pub)
        self._vkey = f"{key_name}+{self.key_id:08x}+{base64.b64encode(pub).decode()}"

    def __repr__(self) -> str:
        # Never print key material, even in a traceback.
        return f"Ed25519Signer({self.key_name!r}, key_id={self.key_id:08x})"

    @classmethod
    def from_key_string(cls, skey: str) -> Ed25519Signer:
        """Parse ``PRIVATE+KEY+name+keyid+base64(0x01 || seed)``. Raises KeyFormatError."""
        skey = skey.strip()
        if not skey.startswith(_PRIVATE_PREFIX):
            raise KeyFormatError("signer key does not start with PRIVATE+KEY+")
        name, kid, key = _parse_key_parts(skey[len(_PRIVATE_PREFIX) :], "signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(key[1:]))
        if signer.key_id != kid:
            raise KeyFormatError(f"signer key {name}: key ID does not match the key")
        return signer

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Ed25519Signer:
        """Load a signer key file written by :func:`write_key_files`.

        Raises OSError if unreadable and KeyFormatError if malformed.
        """
        return cls.from_key_string(Path(path).read_text(encoding="utf-8"))

    def sign(self, msg: bytes) -> bytes:
        """Ed25519 signature of ``msg``."""
        return self._private.sign(msg)

    def verifier_key(self) -> str:
        """The matching verifier key string."""
        return self._vkey


def generate_key(name: str) -> tuple[str, str]:
    """A new Ed25519 key pair as (signer key string, verifier key string).

    Raises KeyFormatError if ``name`` is not a valid note key name.
    """
    signer = Ed25519Signer(name, Ed25519PrivateKey.generate())
    seed = signer._private.private_bytes_raw()
    skey = f"{_PRIVATE_PREFIX}{name}+{signer.key_id:08x}+"
    skey += base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
    return skey, signer.verifier_key()


def write_key_files(
    skey: str,
    vkey: str,
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str],
) -> None:
    """Write a key pair: the signer key with mode 0600, the verifier key 0644.

    Raises FileExistsError rather than overwrite either file.
    """
    # O_EXCL with the mode given at creation: the secret is never readable by
    # others, not even for the moment between creating and chmod-ing.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(skey.strip() + "\n")
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(vkey.strip() + "\n")


def load_verifiers(path: str | os.PathLike[str]) -> list[Verifier]:
    """Read a verifier key file: one key per line, blank and ``#`` lines ignored.

    Several keys let an auditor trust the old and the new key across a key
    rotation; a key listed twice counts once. Raises OSError if unreadable
    and KeyFormatError if malformed, weak or empty, naming the file, line and key.
    """
    verifiers: list[Verifier] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            verifier = Verifier.from_key_string(line)
        except KeyFormatError as err:
            raise KeyFormatError(f"{path}, line {number}: {err}") from None
        if verifier not in verifiers:
            verifiers.append(verifier)
    if not verifiers:
        raise KeyFormatError(f"{path}: no verifier key in the file")
    return verifiers


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID and the raw signature."""

    name: str
    key_id: int
    signature: bytes
    #: The base64 text as written on the line (Go's ``Signature.Base64``).
    base64: str = ""


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures verified by trusted keys and
    those from unknown keys (which are ignored, as the spec requires)."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def _check_text(text: str, what: str) -> None:
    bad = next((c for c in text if ord(c) < 0x20 and c != "\n"), None)
    if bad is not None:
        raise NoteError(f"{what} contains the control character {ord(bad):#04x}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError(f"{what} is not valid Unicode") from None


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """Sign ``text`` with each signer, in order, and return the signed note.

    Raises NoteError if the text does not end in a newline or has control
    characters, and KeyFormatError if a signer's verifier key is malformed.
    """
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_text(text, "note text")
    if not signers:
        raise NoteError("a note needs at least one signer")
    msg = text.encode("utf-8")
    lines = []
    for signer in signers:
        verifier = Verifier.from_key_string(signer.verifier_key())
        if verifier.name != signer.key_name:
            raise KeyFormatError(f"signer {signer.key_name!r} reports a key named {verifier.name}")
        sig = verifier.key_id.to_bytes(4, "big") + signer.sign(msg)
        lines.append(f"{_SIG_PREFIX}{signer.key_name} {base64.b64encode(sig).decode()}\n")
    return text + "\n" + "".join(lines)


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse a signed note and verify its signatures against trusted keys.

    Follows golang.org/x/mod/sumdb/note ``Open`` rule for rule, so that a note
    is accepted here exactly when Go accepts it:

    * valid UTF-8, no control character but newline; the signature block
      follows the last blank line, is non-empty and ends in a newline;
    * each line is ``— <name> <base64>``, the name valid (non-empty, no
      White_Space, no '+'), the base64 non-empty and at least 5 bytes;
      more than 100 signature lines make the note malformed;
    * a signature whose (name, key ID) is not trusted is ignored (kept in
      ``unverified``; the same line repeated is kept once);
    * a trusted key that signs twice counts once: its later lines are
      dropped unread, as Go does;
    * two trusted keys (even equal ones) with the same name and key ID are
      ambiguous, and a note with a line naming that pair is refused;
    * a trusted key's signature that does not verify refuses the note.

    Raises NoteError if the note is malformed (or the trusted keys are
    ambiguous), BadSignatureError if a trusted key's signature fails, and
    UnverifiedNoteError if no trusted key signed it.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("note is not valid UTF-8") from None
    _check_text(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("note does not end with a newline")
    # As Go's VerifierList: every entry counts, so a (name, key ID) listed twice
    # is ambiguous. Loaders (load_verifiers, AuditLog.open) drop exact repeats.
    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    msg = text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    for number, line in enumerate(block[:-1].split("\n"), start=1):
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"malformed signature line {line[:40]!r}")
        body = line[len(_SIG_PREFIX) :]
        name, _, b64 = body.partition(" ")
        try:
            _check_name(name)
            raw = _b64decode(b64, "signature")
        except KeyFormatError as err:
            raise NoteError(f"malformed signature line: {err}") from None
        if not b64 or len(raw) < 5:
            raise NoteError("malformed signature line: signature too short")
        if number > _MAX_SIGNATURES:
            raise NoteError(f"note has more than {_MAX_SIGNATURES} signatures")
        sig = NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:], b64)
        candidates = known.get((sig.name, sig.key_id))
        if candidates is None:
            if body not in seen_unverified:
                seen_unverified.add(body)
                unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise NoteError(f"ambiguous key {sig.name}+{sig.key_id:08x}: two trusted keys")
        if (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        if not candidates[0].verify(msg, sig.signature):
            raise BadSignatureError(f"invalid signature by key {sig.name}+{sig.key_id:08x}")
        verified.append(sig)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unverified) or "none"
        raise UnverifiedNoteError(f"note is not signed by a trusted key (signed by: {names})")
    return Note(text, tuple(verified), tuple(unverified))
