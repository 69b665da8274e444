"""The policy version store's contract, on SQLite and on PostgreSQL alike: numbering,
hashes, four eyes, activation rules, history that raw SQL cannot rewrite, concurrent
drafts and bootstraps from several processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from gateway.policyadmin.errors import PolicyWorkflowError
from gateway.policyadmin.loading import read_disk_files
from gateway.policyadmin.store import content_hash
from tests.contract.live_backends import BACKENDS, Backend, backend_fixture

# The SQLite and PostgreSQL names of the same tables.
_TABLES = {
    "sqlite": ("versions", "approvals", "checks", "activations"),
    "postgres": ("policy_versions", "policy_approvals", "policy_checks", "policy_activations"),
}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_fixture(request, tmp_path)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return read_disk_files()


def test_versions_are_numbered_hashed_and_attributed(
    backend: Backend, files: dict[str, str]
) -> None:
    store = backend.versions()
    one = store.add_version(files, author="bootstrap", reason="seed", parent=None)
    changed = {**files, "policy.csv": files["policy.csv"] + "\n# a comment 中文\n"}
    two = store.add_version(changed, author="officer_a", reason="comment", parent=1)
    assert (one.number, two.number) == (1, 2)
    assert one.content_hash == content_hash(files) != two.content_hash
    got = backend.versions().version(2)  # another process reads the same
    assert (got.author, got.reason, got.parent) == ("officer_a", "comment", 1)
    assert dict(got.files) == changed and got.content_hash == content_hash(changed)
    assert got.created_at == two.created_at  # microseconds, UTC, on both backends
    assert [v.number for v in store.versions()] == [1, 2]
    with pytest.raises(NotFoundError):
        store.version(3)


def test_files_and_reason_are_checked(backend: Backend, files: dict[str, str]) -> None:
    store = backend.versions()
    partial = {k: v for k, v in files.items() if k != "catalog.toml"}
    with pytest.raises(InvalidArgumentError, match=r"missing: catalog\.toml"):
        store.add_version(partial, author="a", reason="r", parent=None)
    with pytest.raises(InvalidArgumentError, match="reason"):
        store.add_version(files, author="a", reason=" ", parent=None)
    with pytest.raises(InvalidArgumentError, match="author"):
        store.add_version(files, author="", reason="r", parent=None)
    assert store.versions() == []


def test_four_eyes_and_activation_rules(backend: Backend, files: dict[str, str]) -> None:
    store = backend.versions()
    assert store.active() is None and store.activations() == []
    store.add_version(files, author="bootstrap", reason="seed", parent=None)
    store.activate(1, "bootstrap", "first start", action="bootstrap")
    store.add_version(files, author="officer_a", reason="change", parent=1)
    with pytest.raises(PolicyWorkflowError) as not_approved:
        store.activate(2, "officer_a", "go")
    assert not_approved.value.reason == "NOT_APPROVED"
    with pytest.raises(PermissionDeniedError) as own:
        store.approve(2, "officer_a", "looks fine to me")
    assert own.value.reason == "FOUR_EYES"
    approval = store.approve(2, "officer_b", "reviewed")
    assert store.approval(2) == approval and store.approval(1) is None
    with pytest.raises(PolicyWorkflowError) as again:
        store.approve(2, "officer_c", "again")
    assert again.value.reason == "ALREADY_APPROVED"
    with pytest.raises(NotFoundError):
        store.approve(9, "officer_c", "nothing there")
    store.activate(2, "officer_a", "go")
    active = backend.versions().active()
    assert active is not None and (active.version, active.action, active.seq) == (2, "activate", 2)
    # Back to the bootstrap version needs no approval: the deployment vouched for it.
    store.activate(1, "officer_b", "back", action="rollback")
    assert [(a.seq, a.version) for a in store.activations()] == [(1, 1), (2, 2), (3, 1)]
    with pytest.raises(PolicyWorkflowError) as boot:
        store.activate(2, "x", "second bootstrap", action="bootstrap")
    assert boot.value.reason == "ALREADY_BOOTSTRAPPED"


def test_checks_keep_the_latest_per_kind(backend: Backend, files: dict[str, str]) -> None:
    store = backend.versions()
    store.add_version(files, author="bootstrap", reason="seed", parent=None)
    assert store.last_check(1, "validate") is None
    store.record_check(1, "validate", ["a problem", "非 ASCII"])
    store.record_check(1, "test", [])
    store.record_check(1, "validate", [])
    latest = store.last_check(1, "validate")
    assert latest is not None and latest.passed
    first_test = store.last_check(1, "test")
    assert first_test is not None and first_test.problems == ()
    with pytest.raises(NotFoundError):
        store.record_check(7, "test", [])


def test_history_cannot_be_rewritten_with_sql(backend: Backend, files: dict[str, str]) -> None:
    store = backend.versions()
    store.add_version(files, author="bootstrap", reason="seed", parent=None)
    store.activate(1, "bootstrap", "first", action="bootstrap")
    store.add_version(files, author="officer_a", reason="change", parent=1)
    store.record_check(2, "validate", ["a problem"])
    versions, approvals, checks, activations = _TABLES[backend.name]
    raw = backend.raw("versions.sqlite")
    for sql in (
        f"UPDATE {versions} SET author = 'mallory' WHERE number = 2",
        f"DELETE FROM {versions} WHERE number = 2",
        f"INSERT INTO {approvals} VALUES (2, 'officer_a', 'self', '2026-01-01')",
        f"INSERT INTO {activations} (seq, version, officer, reason, action, at)"
        " VALUES (9, 2, 'officer_a', 'sneak', 'activate', '2026-01-01')",
        f"DELETE FROM {activations}",
        f"UPDATE {checks} SET problems = '[]'",
    ):
        with pytest.raises(Exception):  # noqa: B017 - sqlite3 or psycopg, by backend
            raw(sql)
    assert store.version(2).author == "officer_a"
    check = store.last_check(2, "validate")
    assert check is not None and check.problems == ("a problem",)
    assert [a.version for a in store.activations()] == [1]


def test_concurrent_drafts_get_consecutive_numbers(backend: Backend, files: dict[str, str]) -> None:
    stores = [backend.versions() for _ in range(3)]
    numbers: list[int] = []
    lock = threading.Lock()

    def draft(i: int) -> None:
        for j in range(4):
            v = stores[i].add_version(files, author=f"officer_{i}", reason=f"d{j}", parent=None)
            with lock:
                numbers.append(v.number)

    threads = [threading.Thread(target=draft, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 13))


def test_only_one_of_several_processes_bootstraps(backend: Backend, files: dict[str, str]) -> None:
    stores = [backend.versions() for _ in range(3)]
    for s in stores:
        s.add_version(files, author="bootstrap", reason="seed", parent=None)
    outcomes: list[str] = []
    lock = threading.Lock()

    def boot(i: int) -> None:
        try:
            stores[i].activate(i + 1, "bootstrap", "first start", action="bootstrap")
            result = "ok"
        except PolicyWorkflowError as err:
            result = err.reason
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=boot, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ALREADY_BOOTSTRAPPED", "ALREADY_BOOTSTRAPPED", "ok"]
    assert len(stores[0].activations()) == 1


def test_a_row_the_database_refuses_is_the_same_error_on_both(
    backend: Backend, files: dict[str, str]
) -> None:
    """The rules are the base class's, so a refusal reads alike whichever backend stored
    it: a draft naming a parent that does not exist is FAILED_PRECONDITION
    ``VERSION_REFUSED`` (the database's foreign key), and nothing is stored."""
    store = backend.versions()
    with pytest.raises(PolicyWorkflowError) as refused:
        store.add_version(files, author="officer_a", reason="orphan", parent=7)
    assert refused.value.reason == "VERSION_REFUSED"
    assert str(refused.value) == (
        "the version cannot be stored: the store refused it (unknown parent?)"
    )
    assert store.versions() == []
    assert store.add_version(files, author="bootstrap", reason="seed", parent=None).number == 1
