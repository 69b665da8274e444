"""The version store: numbering, hashes, four eyes and immutability, also against raw SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from gateway.policyadmin.errors import PolicyWorkflowError
from gateway.policyadmin.store import check_files, content_hash
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore


def test_versions_are_numbered_hashed_and_attributed(
    store: SQLiteVersionStore, files: dict[str, str]
) -> None:
    one = store.add_version(files, author="bootstrap", reason="seed", parent=None)
    two = store.add_version(
        {**files, "policy.csv": files["policy.csv"] + "\n# a comment\n"},
        author="officer_a",
        reason="comment",
        parent=1,
    )
    assert (one.number, two.number) == (1, 2)
    assert one.content_hash == content_hash(files) != two.content_hash
    got = store.version(2)
    assert got.author == "officer_a" and got.reason == "comment" and got.parent == 1
    assert got.files["policy.csv"].endswith("# a comment\n")
    assert [v.number for v in store.versions()] == [1, 2]
    with pytest.raises(NotFoundError):
        store.version(3)


def test_files_and_reason_are_checked(store: SQLiteVersionStore, files: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown file"):
        check_files({**files, "../etc/passwd": ""})
    partial = {k: v for k, v in files.items() if k != "catalog.toml"}
    with pytest.raises(InvalidArgumentError, match="missing: catalog.toml"):
        store.add_version(partial, author="a", reason="r", parent=None)
    with pytest.raises(InvalidArgumentError, match="reason"):
        store.add_version(files, author="a", reason=" ", parent=None)
    check_files({**files, "tests/extra-cases.toml": "[[case]]"})


def test_four_eyes_and_activation_rules(store: SQLiteVersionStore, files: dict[str, str]) -> None:
    store.add_version(files, author="bootstrap", reason="seed", parent=None)
    store.activate(1, "bootstrap", "first start", action="bootstrap")
    store.add_version(files, author="officer_a", reason="change", parent=1)
    with pytest.raises(PolicyWorkflowError) as not_approved:
        store.activate(2, "officer_a", "go")
    assert not_approved.value.reason == "NOT_APPROVED"
    with pytest.raises(PermissionDeniedError) as own:
        store.approve(2, "officer_a", "looks fine to me")
    assert own.value.reason == "FOUR_EYES"
    store.approve(2, "officer_b", "reviewed")
    with pytest.raises(PolicyWorkflowError, match="already approved"):
        store.approve(2, "officer_c", "again")
    store.activate(2, "officer_a", "go")
    assert store.active() is not None and store.active().version == 2  # type: ignore[union-attr]
    # Rolling back to the bootstrap version needs no approval: the deployment vouched for it.
    store.activate(1, "officer_b", "back", action="rollback")
    assert [a.version for a in store.activations()] == [1, 2, 1]
    with pytest.raises(PolicyWorkflowError):
        store.activate(2, "x", "second bootstrap", action="bootstrap")


def test_history_cannot_be_rewritten_with_sql(
    store: SQLiteVersionStore, files: dict[str, str], tmp_path: Path
) -> None:
    store.add_version(files, author="bootstrap", reason="seed", parent=None)
    store.activate(1, "bootstrap", "first", action="bootstrap")
    store.add_version(files, author="officer_a", reason="change", parent=1)
    store.record_check(2, "validate", ["a problem"])
    raw = sqlite3.connect(tmp_path / "versions.sqlite", isolation_level=None)
    try:
        for sql in (
            "UPDATE versions SET author = 'mallory' WHERE number = 2",
            "DELETE FROM versions WHERE number = 2",
            "INSERT INTO approvals VALUES (2, 'officer_a', 'self', '2026-01-01')",
            "INSERT INTO activations (version, officer, reason, action, at)"
            " VALUES (2, 'officer_a', 'sneak', 'activate', '2026-01-01')",
            "DELETE FROM activations",
            "UPDATE checks SET problems = '[]'",
        ):
            with pytest.raises(sqlite3.DatabaseError):
                raw.execute(sql)
    finally:
        raw.close()
    assert store.version(2).author == "officer_a"
    check = store.last_check(2, "validate")
    assert check is not None and check.problems == ("a problem",) and not check.passed


def test_reopened_store_keeps_everything(tmp_path: Path, files: dict[str, str]) -> None:
    path = tmp_path / "v.sqlite"
    first = SQLiteVersionStore(path)
    first.add_version(files, author="bootstrap", reason="seed", parent=None)
    first.activate(1, "bootstrap", "first", action="bootstrap")
    first.close()
    again = SQLiteVersionStore(path)
    try:
        active = again.active()
        assert active is not None and active.version == 1 and active.action == "bootstrap"
        assert again.version(1).content_hash == content_hash(files)
    finally:
        again.close()
