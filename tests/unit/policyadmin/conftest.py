"""Shared pieces of the policy administration unit tests: the shipped files as a version,
drafts that change something, a store in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.domain.purposes import load_purposes
from gateway.policyadmin.loading import DeciderRecipe, LoadedVersion, load_version, read_disk_files
from gateway.policyadmin.store import PolicyVersion
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore

#: Procurement may now screen for joint punishment: visible in a diff, no test case breaks.
WIDER = (
    "p, role:procurement_center, *, public, joint_punishment_screen, free, allow\n"
    "p, role:procurement_center, *, government_shared, joint_punishment_screen, free, allow\n"
)
#: The bank loses public data for lending: the finance test cases fail.
LENDER_LINE = "p, role:lender, *, public, lending, paid, allow\n"


@pytest.fixture(scope="session")
def files() -> dict[str, str]:
    return read_disk_files()


@pytest.fixture(scope="session")
def recipe() -> DeciderRecipe:
    return DeciderRecipe(purposes=tuple(load_purposes()))


def wider(files: dict[str, str]) -> dict[str, str]:
    return {**files, "policy.csv": files["policy.csv"] + WIDER}


def narrower(files: dict[str, str]) -> dict[str, str]:
    assert LENDER_LINE in files["policy.csv"]
    return {**files, "policy.csv": files["policy.csv"].replace(LENDER_LINE, "")}


def loaded(number: int, files: dict[str, str], recipe: DeciderRecipe) -> LoadedVersion:
    version = PolicyVersion(number, "", "t", "t", datetime.now(UTC), None, files)
    return load_version(version, purposes=recipe.purposes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteVersionStore]:
    s = SQLiteVersionStore(tmp_path / "versions.sqlite")
    yield s
    s.close()
