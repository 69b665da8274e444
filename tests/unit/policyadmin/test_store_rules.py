"""The policy version rules live once, in :class:`VersionStore`: a backend that only
stores rows (here an in-memory one, with no rule of its own) gets required author and
reason, the content hash check, four eyes, one approval, known check kinds and the
activation rules; a row its database refuses (:class:`StoreRefusal`) becomes the
workflow error of the step."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from types import MappingProxyType

import pytest

from gateway.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from gateway.policyadmin.errors import PolicyStoreError, PolicyWorkflowError
from gateway.policyadmin.loading import read_disk_files
from gateway.policyadmin.store import (
    Activation,
    Approval,
    CheckResult,
    PolicyVersion,
    StoreRefusal,
    VersionStore,
)


class MemoryVersionStore(VersionStore):
    """Storage only: rows in lists; ``refuse`` makes the next insert a StoreRefusal."""

    def __init__(self) -> None:
        self.rows: list[PolicyVersion] = []
        self.approvals: dict[int, Approval] = {}
        self.checks: list[CheckResult] = []
        self.history: list[Activation] = []
        self.refuse = False

    def _refused(self) -> None:
        if self.refuse:
            self.refuse = False
            raise StoreRefusal

    def _insert_version(
        self,
        digest: str,
        author: str,
        reason: str,
        at: datetime,
        parent: int | None,
        files_json: str,
    ) -> int:
        self._refused()
        number = len(self.rows) + 1
        files = MappingProxyType(json.loads(files_json))
        self.rows.append(PolicyVersion(number, digest, author, reason, at, parent, files))
        return number

    def _read_version(self, number: int) -> PolicyVersion | None:
        return self.rows[number - 1] if 0 < number <= len(self.rows) else None

    def _insert_approval(self, number: int, officer: str, reason: str, at: datetime) -> None:
        self._refused()
        self.approvals[number] = Approval(number, officer, reason, at)

    def _insert_check(self, number: int, kind: str, problems_json: str, at: datetime) -> None:
        self._refused()
        self.checks.append(CheckResult(number, kind, tuple(json.loads(problems_json)), at))

    def _insert_activation(
        self, number: int, officer: str, reason: str, action: str, at: datetime
    ) -> int:
        self._refused()
        self.history.append(Activation(len(self.history) + 1, number, officer, reason, action, at))
        return len(self.history)

    def versions(self) -> list[PolicyVersion]:
        return list(self.rows)

    def approval(self, number: int) -> Approval | None:
        return self.approvals.get(number)

    def last_check(self, number: int, kind: str) -> CheckResult | None:
        found = [c for c in self.checks if (c.version, c.kind) == (number, kind)]
        return found[-1] if found else None

    def active(self) -> Activation | None:
        return self.history[-1] if self.history else None

    def activations(self) -> list[Activation]:
        return list(self.history)


FILES = read_disk_files()


def test_a_storage_only_backend_gets_every_rule() -> None:
    store = MemoryVersionStore()
    with pytest.raises(InvalidArgumentError, match="reason"):
        store.add_version(FILES, author="a", reason=" ", parent=None)
    with pytest.raises(InvalidArgumentError, match=r"missing: model\.conf"):
        store.add_version({"policy.csv": ""}, author="a", reason="r", parent=None)
    store.add_version(FILES, author="bootstrap", reason="seed", parent=None)
    store.activate(1, "bootstrap", "first start", action="bootstrap")
    store.add_version(FILES, author="officer_a", reason="change", parent=1)
    with pytest.raises(PolicyWorkflowError) as unapproved:
        store.activate(2, "officer_a", "go")
    assert unapproved.value.reason == "NOT_APPROVED"
    with pytest.raises(PermissionDeniedError) as own:
        store.approve(2, "officer_a", "mine")
    assert own.value.reason == "FOUR_EYES"
    store.approve(2, "officer_b", "reviewed")
    with pytest.raises(PolicyWorkflowError) as twice:
        store.approve(2, "officer_c", "again")
    assert twice.value.reason == "ALREADY_APPROVED"
    with pytest.raises(ValueError, match="unknown check kind"):
        store.record_check(2, "lint", [])
    assert store.record_check(2, "test", ["x"]).problems == ("x",)
    assert store.activate(2, "officer_a", "go").seq == 2
    assert store.activate(1, "officer_b", "back", action="rollback").version == 1
    with pytest.raises(PolicyWorkflowError) as boot:
        store.activate(1, "x", "again", action="bootstrap")
    assert boot.value.reason == "ALREADY_BOOTSTRAPPED"
    with pytest.raises(NotFoundError):
        store.approve(9, "officer_b", "none")


def test_a_refused_row_becomes_the_steps_error() -> None:
    store = MemoryVersionStore()
    store.refuse = True
    with pytest.raises(PolicyWorkflowError) as draft:
        store.add_version(FILES, author="a", reason="r", parent=None)
    assert draft.value.reason == "VERSION_REFUSED"
    store.add_version(FILES, author="a", reason="r", parent=None)
    store.refuse = True
    with pytest.raises(PolicyWorkflowError) as approve:
        store.approve(1, "b", "ok")
    assert approve.value.reason == "APPROVAL_REFUSED"
    store.refuse = True
    with pytest.raises(PolicyStoreError, match="the check of version 1 was refused"):
        store.record_check(1, "validate", [])
    store.approve(1, "b", "ok")
    store.refuse = True
    with pytest.raises(PolicyWorkflowError) as activate:
        store.activate(1, "a", "go")
    assert activate.value.reason == "NOT_APPROVED"

    fresh = MemoryVersionStore()  # a bootstrap lost to another process's
    fresh.add_version(FILES, author="bootstrap", reason="seed", parent=None)
    fresh.refuse = True
    with pytest.raises(PolicyWorkflowError) as bootstrap:
        fresh.activate(1, "bootstrap", "first start", action="bootstrap")
    assert bootstrap.value.reason == "ALREADY_BOOTSTRAPPED"


def test_content_that_does_not_match_its_hash_is_refused_on_read() -> None:
    store = MemoryVersionStore()
    store.add_version(FILES, author="a", reason="r", parent=None)
    edited = MappingProxyType({**FILES, "policy.csv": "p, edited below the database\n"})
    store.rows[0] = dataclasses.replace(store.rows[0], files=edited)
    with pytest.raises(PolicyStoreError, match="content does not match its hash"):
        store.version(1)
