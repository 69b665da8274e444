"""RFC 6962/9162 Merkle trees against the transparency-dev vectors, plus properties."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.errors import ProofError
from gateway.audit.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.unit.audit.audit_testkit import VECTORS, need_vectors


def _files(kind: str) -> list[Path]:
    folder = VECTORS / "merkle" / kind
    return sorted(folder.rglob("*.json")) if folder.exists() else []


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_vectors_are_present() -> None:
    need_vectors("merkle")
    assert len(_files("inclusion")) > 50
    assert len(_files("consistency")) > 80
    assert any(p.parent.name == "additional" for p in _files("consistency"))


@pytest.mark.parametrize("path", _files("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)
    proof = [_b64(h) for h in v["proof"] or []]
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _files("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    v = _load(path)
    proof = [_b64(h) for h in v["proof"] or []]
    args = (v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_rfc6962_roots_and_our_proofs_for_every_size() -> None:
    data = _load(need_vectors("merkle") / "rfc6962-roots.json")
    leaves = [bytes.fromhex(x) for x in data["leaf_inputs_hex"]]
    tree = MerkleTree(leaf_hash(leaf) for leaf in leaves)
    for size, want in enumerate(data["root_hash_by_tree_size_hex"]):
        assert tree.root(size).hex() == want
        assert root_from_leaf_hashes([leaf_hash(x) for x in leaves[:size]]).hex() == want
        for i in range(size):
            verify_inclusion(tree.leaf(i), i, size, tree.inclusion_proof(i, size), tree.root(size))
        for old in range(1, size + 1):
            proof = tree.consistency_proof(old, size)
            verify_consistency(old, size, proof, tree.root(old), tree.root(size))


def test_our_proofs_match_the_vector_proofs() -> None:
    """Generation, not only verification, agrees with transparency-dev."""
    data = _load(need_vectors("merkle") / "rfc6962-roots.json")
    tree = MerkleTree(leaf_hash(bytes.fromhex(x)) for x in data["leaf_inputs_hex"])
    checked = 0
    for path in _files("inclusion"):
        v = _load(path)
        size = v["treeSize"]
        if not v["wantErr"] and size <= 8 and v["proof"] and tree.root(size) == _b64(v["root"]):
            assert tree.inclusion_proof(v["leafIdx"], size) == [_b64(h) for h in v["proof"]]
            checked += 1
    for path in _files("consistency"):
        v = _load(path)
        if not v["wantErr"] and 0 < v["size1"] < v["size2"] <= 8:
            got = tree.consistency_proof(v["size1"], v["size2"])
            assert got == [_b64(h) for h in v["proof"]]
            checked += 1
    assert checked > 0


def test_range_hash_and_bad_requests() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(13)]
    tree = MerkleTree(hashes)
    for lo in range(13):
        for hi in range(lo + 1, 14):
            assert tree.range_hash(lo, hi) == root_from_leaf_hashes(hashes[lo:hi])
    assert MerkleTree().root() == EMPTY_ROOT
    with pytest.raises(ProofError):
        tree.inclusion_proof(13, 13)
    with pytest.raises(ProofError):
        tree.consistency_proof(0, 5)
    with pytest.raises(ProofError):
        tree.consistency_proof(5, 14)
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append(b"short")


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


_TREES: dict[int, MerkleTree] = {}


def _tree(size: int) -> MerkleTree:
    if size not in _TREES:
        _TREES[size] = MerkleTree(leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    return _TREES[size]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_proofs_verify(case: tuple[int, int]) -> None:
    size, index = case
    tree = _tree(size)
    verify_inclusion(tree.leaf(index), index, size, tree.inclusion_proof(index, size), tree.root())


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 600).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))),
    st.integers(0, 10_000),
    st.sampled_from(["proof", "leaf", "root"]),
)
def test_inclusion_bit_flip_fails(case: tuple[int, int], bit: int, where: str) -> None:
    size, index = case
    tree = _tree(size)
    proof, leaf, root = tree.inclusion_proof(index, size), tree.leaf(index), tree.root()
    if where == "proof" and proof:
        k = bit % len(proof)
        proof[k] = _flip(proof[k], bit // len(proof))
    elif where == "leaf":
        leaf = _flip(leaf, bit)
    else:
        root = _flip(root, bit)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, root)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_consistency_proofs_verify(case: tuple[int, int]) -> None:
    old, new = case
    tree = _tree(new)
    proof = tree.consistency_proof(old, new)
    verify_consistency(old, new, proof, tree.root(old), tree.root(new))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(2, 600).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))),
    st.integers(0, 10_000),
    st.sampled_from(["proof", "root1", "root2"]),
)
def test_consistency_bit_flip_fails(case: tuple[int, int], bit: int, where: str) -> None:
    old, new = case
    tree = _tree(new)
    proof, r1, r2 = tree.consistency_proof(old, new), tree.root(old), tree.root(new)
    if where == "proof":
        k = bit % len(proof)
        proof[k] = _flip(proof[k], bit // len(proof))
    elif where == "root1":
        r1 = _flip(r1, bit)
    else:
        r2 = _flip(r2, bit)
    with pytest.raises(ProofError):
        verify_consistency(old, new, proof, r1, r2)
