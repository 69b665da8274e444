"""Fixtures for the audit log tests: keys, vectors and a tamperable SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.note import Ed25519Signer, generate_key
from tests.unit.audit.audit_testkit import ORIGIN


@pytest.fixture
def keypair() -> tuple[str, str]:
    return generate_key(ORIGIN)


@pytest.fixture
def signer(keypair: tuple[str, str]) -> Ed25519Signer:
    return Ed25519Signer.from_key_string(keypair[0])


@pytest.fixture
def sql() -> Callable[[Path, str], None]:
    """Run SQL against a log file the way an attacker would: triggers dropped first."""

    def run(path: Path, script: str) -> None:
        conn = sqlite3.connect(path)
        try:
            for name in (
                "entries_no_update",
                "entries_no_delete",
                "checkpoints_no_update",
                "checkpoints_no_delete",
                "tile_hashes_no_update",
                "tile_hashes_no_delete",
            ):
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            conn.executescript(script)
            conn.commit()
        finally:
            conn.close()

    return run
