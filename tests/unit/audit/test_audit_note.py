"""C2SP signed notes, Go key strings, checkpoints and tlog-proofs."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from gateway.audit.checkpoint import (
    Checkpoint,
    TlogProof,
    open_checkpoint,
    sign_checkpoint,
    verify_tlog_proof,
)
from gateway.audit.errors import (
    BadSignatureError,
    KeyFormatError,
    NoteError,
    ProofError,
    UnverifiedNoteError,
)
from gateway.audit.merkle import MerkleTree, leaf_hash
from gateway.audit.note import (
    Ed25519Signer,
    Signer,
    Verifier,
    generate_key,
    load_verifiers,
    open_note,
    sign_note,
    write_key_files,
)
from tests.unit.audit.audit_testkit import ORIGIN, need_vectors


@pytest.fixture
def neumann() -> dict[str, str]:
    data: dict[str, str] = json.loads(
        (need_vectors("signed-note") / "peterneumann.json").read_text()
    )
    return data


def test_go_vector_signs_byte_for_byte(neumann: dict[str, str]) -> None:
    signer = Ed25519Signer.from_key_string(neumann["signer_key_go_format"])
    assert signer.key_name == "PeterNeumann"
    assert signer.verifier_key() == neumann["verifier_key"]
    assert sign_note(neumann["text"], [signer]) == neumann["note"]
    assert "\u2014 PeterNeumann " in neumann["note"]


def test_go_vector_verifies(neumann: dict[str, str]) -> None:
    verifier = Verifier.from_key_string(neumann["verifier_key"])
    assert verifier.key_string() == neumann["verifier_key"]
    note = open_note(neumann["note"].encode(), [verifier])
    assert note.text == neumann["text"]
    assert [s.name for s in note.verified] == ["PeterNeumann"]
    assert note.unverified == ()


def test_unknown_key_is_not_trusted(neumann: dict[str, str]) -> None:
    _, other = generate_key("PeterNeumann")  # same name, other key ID
    with pytest.raises(UnverifiedNoteError, match="PeterNeumann"):
        open_note(neumann["note"], [Verifier.from_key_string(other)])


def test_bad_signature_is_rejected(neumann: dict[str, str]) -> None:
    verifier = Verifier.from_key_string(neumann["verifier_key"])
    tampered = neumann["note"].replace("problem is.", "problem was.")
    with pytest.raises(BadSignatureError):
        open_note(tampered, [verifier])
    head, b64 = neumann["note"].rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 1
    with pytest.raises(BadSignatureError):
        open_note(f"{head} {base64.b64encode(bytes(raw)).decode()}\n", [verifier])


def test_key_rotation_both_keys_sign_during_overlap() -> None:
    old_s, old_v = generate_key(ORIGIN)
    new_s, new_v = generate_key(ORIGIN)
    signers: list[Signer] = [
        Ed25519Signer.from_key_string(old_s),
        Ed25519Signer.from_key_string(new_s),
    ]
    note = sign_note("tree head\n", signers)
    assert note.count("\u2014 ") == 2
    old, new = Verifier.from_key_string(old_v), Verifier.from_key_string(new_v)
    only_old = open_note(note, [old])
    assert len(only_old.verified) == 1 and len(only_old.unverified) == 1
    assert len(open_note(note, [new]).verified) == 1
    assert len(open_note(note, [old, new]).verified) == 2
    # A known key's line repeated counts once, as in Go's note.Open.
    doubled = note + note.split("\n\n", 1)[1].splitlines(keepends=True)[0]
    assert len(open_note(doubled, [old]).verified) == 1


@pytest.mark.parametrize(
    "note",
    [
        "no blank line\n\u2014 a AAAA\n",
        "text\n\n- a AAAAAAA=\n",  # hyphen, not em dash
        "text\n\n\u2014 a AAAAAAA=",  # no final newline
        "te\x07xt\n\n\u2014 a AAAAAAA=\n",  # control character
        "text\n\n\u2014 a !!!\n",  # not base64
    ],
)
def test_malformed_notes(note: str) -> None:
    _, vkey = generate_key("a")
    with pytest.raises(NoteError):
        open_note(note, [Verifier.from_key_string(vkey)])


@pytest.mark.parametrize(
    "vkey",
    [
        "name",
        "na me+01234567+AQ==",
        "name+0123+AQ==",
        "name+01234567+AQ==",  # too short
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
    ],
)
def test_bad_verifier_keys(vkey: str) -> None:
    with pytest.raises(KeyFormatError):
        Verifier.from_key_string(vkey)


def test_bad_signer_keys(neumann: dict[str, str]) -> None:
    with pytest.raises(KeyFormatError, match="PRIVATE"):
        Ed25519Signer.from_key_string(neumann["verifier_key"])
    wrong_id = neumann["signer_key_go_format"].replace("c74f20a3", "c74f20a4")
    with pytest.raises(KeyFormatError, match="key ID"):
        Ed25519Signer.from_key_string(wrong_id)


def test_key_files(tmp_path: Path) -> None:
    skey, vkey = generate_key(ORIGIN)
    write_key_files(skey, vkey, tmp_path / "a.key", tmp_path / "a.pub")
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    signer = Ed25519Signer.from_file(tmp_path / "a.key")
    assert signer.verifier_key() == vkey
    assert "PRIVATE" not in repr(signer)
    assert [v.key_string() for v in load_verifiers(tmp_path / "a.pub")] == [vkey]
    with pytest.raises(FileExistsError):
        write_key_files(skey, vkey, tmp_path / "a.key", tmp_path / "b.pub")


def test_checkpoint_text_and_signature(signer: Ed25519Signer, keypair: tuple[str, str]) -> None:
    tree = MerkleTree(leaf_hash(bytes([i])) for i in range(5))
    cp = Checkpoint(ORIGIN, 5, tree.root(), ("ext line",))
    text = cp.text()
    assert text == f"{ORIGIN}\n5\n{base64.b64encode(tree.root()).decode()}\next line\n"
    assert Checkpoint.parse(text) == cp
    note = sign_checkpoint(cp, [signer])
    verifier = Verifier.from_key_string(keypair[1])
    assert open_checkpoint(note, [verifier], origin=ORIGIN) == cp
    with pytest.raises(NoteError, match="expected"):
        open_checkpoint(note, [verifier], origin="other.example/log")
    other = Ed25519Signer.from_key_string(generate_key("other.example/log")[0])
    with pytest.raises(NoteError, match="cannot sign"):
        sign_checkpoint(cp, [other])


@pytest.mark.parametrize(
    "text",
    [
        "origin\n05\nAAAA\n",
        "origin\n5\n",
        "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n5\nAAAA\n",
        "origin\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_tlog_proof_round_trip(signer: Ed25519Signer, keypair: tuple[str, str]) -> None:
    leaves = [f"leaf {i}".encode() for i in range(11)]
    tree = MerkleTree(leaf_hash(x) for x in leaves)
    note = sign_checkpoint(Checkpoint(ORIGIN, 11, tree.root()), [signer])
    proof = TlogProof(6, tuple(tree.inclusion_proof(6, 11)), note, extra=b"ctx")
    text = proof.text()
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra Y3R4\nindex 6\n")
    assert TlogProof.parse(text) == proof
    verifiers = [Verifier.from_key_string(keypair[1])]
    assert verify_tlog_proof(text, leaves[6], verifiers).size == 11
    with pytest.raises(ProofError, match="entry 6"):
        verify_tlog_proof(text, leaves[5], verifiers)
    with pytest.raises(UnverifiedNoteError):
        verify_tlog_proof(text, leaves[6], [Verifier.from_key_string(generate_key(ORIGIN)[1])])
    with pytest.raises(NoteError):
        TlogProof.parse(text.replace("index 6", "index 06"))
