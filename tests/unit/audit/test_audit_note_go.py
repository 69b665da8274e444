"""Notes are opened exactly as golang.org/x/mod/sumdb/note
``Open`` opens them (duplicates, unknown keys, limits, names, ambiguity).

Each case states Go's behaviour as read in note.go (``Open``, ``isValidName``,
``VerifierList``); the Go vector (PeterNeumann) anchors the byte format."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from gateway.audit.errors import BadSignatureError, NoteError, UnverifiedNoteError
from gateway.audit.merkle import EMPTY_ROOT
from gateway.audit.note import Ed25519Signer, Verifier, generate_key, open_note, sign_note
from tests.unit.audit.audit_testkit import ORIGIN, need_vectors

DASH = "\u2014 "


@pytest.fixture
def neumann() -> tuple[str, Verifier]:
    data = json.loads((need_vectors("signed-note") / "peterneumann.json").read_text())
    return data["note"], Verifier.from_key_string(data["verifier_key"])


def _sig_lines(note: str) -> list[str]:
    return note.split("\n\n", 1)[1].splitlines(keepends=True)


def test_own_signature_line_repeated_verbatim_counts_once(neumann: tuple[str, Verifier]) -> None:
    note, verifier = neumann
    doubled = note + _sig_lines(note)[0]
    opened = open_note(doubled, [verifier])
    assert len(opened.verified) == 1 and opened.unverified == ()


def test_checkpoint_with_its_signature_repeated_opens() -> None:
    skey, vkey = generate_key(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [Ed25519Signer.from_key_string(skey)])
    assert open_checkpoint(note + _sig_lines(note)[0], [Verifier.from_key_string(vkey)]).size == 0


def test_a_later_line_by_a_known_key_is_dropped_unread(neumann: tuple[str, Verifier]) -> None:
    # Go: "Drop repeated signatures by a single verifier" happens before Verify.
    note, verifier = neumann
    name, b64 = _sig_lines(note)[0][len(DASH) :].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    bad = f"{DASH}{name} {base64.b64encode(bytes(raw)).decode()}\n"
    assert len(open_note(note + bad, [verifier]).verified) == 1
    # ...but the first line by a known key is verified, and a bad one refuses the note.
    text = note.split("\n\n", 1)[0] + "\n\n"
    with pytest.raises(BadSignatureError):
        open_note(text + bad + _sig_lines(note)[0], [verifier])


def test_unknown_key_lines_deduplicated_by_their_text(neumann: tuple[str, Verifier]) -> None:
    note, verifier = neumann
    other_s, _ = generate_key("Other")
    line = _sig_lines(sign_note("x\n", [Ed25519Signer.from_key_string(other_s)]))[0]
    opened = open_note(note + line + line, [verifier])
    assert len(opened.unverified) == 1
    # Same bytes, other text (a non-zero pad bit): Go compares lines, so both stay.
    name, b64 = line[len(DASH) :].rstrip("\n").split(" ")
    assert b64.endswith("=")  # 68 bytes: the last character carries 4 pad bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = b64[-2]
    twin = b64[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    assert base64.b64decode(twin) == base64.b64decode(b64)
    opened = open_note(note + line + f"{DASH}{name} {twin}\n", [verifier])
    assert len(opened.unverified) == 2


def test_no_trusted_signature_is_unverified(neumann: tuple[str, Verifier]) -> None:
    note, _ = neumann
    with pytest.raises(UnverifiedNoteError):
        open_note(note, [Verifier.from_key_string(generate_key("PeterNeumann")[1])])


def test_at_most_100_signature_lines(neumann: tuple[str, Verifier]) -> None:
    # Go counts every well-formed line, duplicates included, and refuses the 101st.
    note, verifier = neumann
    line = _sig_lines(note)[0]
    assert len(open_note(note + line * 99, [verifier]).verified) == 1
    with pytest.raises(NoteError, match="more than 100"):
        open_note(note + line * 100, [verifier])


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a\u3000b", False),  # ideographic space: White_Space
        ("a\u0085b", False),  # NEL: White_Space
        ("a\u00a0b", False),  # no-break space: White_Space
        ("a\u2009b", False),  # thin space
        ("a\u200bb", True),  # zero-width space is not White_Space
        ("a\u180eb", True),  # Mongolian vowel separator: no longer White_Space
        ("a+b", False),
    ],
)
def test_names_follow_go_is_valid_name(
    neumann: tuple[str, Verifier], name: str, valid: bool
) -> None:
    note, verifier = neumann
    line = f"{DASH}{name} {base64.b64encode(bytes(68)).decode()}\n"
    if valid:
        assert [s.name for s in open_note(note + line, [verifier]).unverified] == [name]
    else:
        with pytest.raises(NoteError, match="malformed signature line"):
            open_note(note + line, [verifier])


@pytest.mark.parametrize(
    "block",
    [
        "",  # no signature at all
        f"{DASH}name\n",  # no space, no signature
        f"{DASH}name \n",  # empty base64
        f"{DASH}name AAAA\n",  # 3 bytes: shorter than key ID + 1
        f"{DASH}name  AAAAAAA=\n",  # two spaces: the base64 starts with one
    ],
)
def test_malformed_signature_blocks(neumann: tuple[str, Verifier], block: str) -> None:
    note, verifier = neumann
    text = note.split("\n\n", 1)[0] + "\n\n"
    with pytest.raises(NoteError):
        open_note(text + block, [verifier])


def test_two_trusted_keys_with_one_name_and_id_are_ambiguous(
    neumann: tuple[str, Verifier],
) -> None:
    # Go's VerifierList keeps every entry; a signature naming a pair with two is an error.
    note, verifier = neumann
    impostor = Verifier(
        verifier.name,
        verifier.key_id,
        Verifier.from_key_string(generate_key("x")[1]).public_key,
    )
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(note, [verifier, impostor])
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(note, [verifier, verifier])
    # An ambiguous pair the note does not name does not matter.
    other = Verifier.from_key_string(generate_key("Other")[1])
    assert open_note(note, [verifier, other, other]).verified
