"""Shared constants and helpers of the audit tests (imported by name: the test
folders are not packages)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Test vectors kept in the repository (tests/vectors, with their
#: licence), so that the interoperability tests run on any checkout.
VECTORS = Path(__file__).resolve().parents[2] / "vectors"

ORIGIN = "credit-gateway.test/audit"


def need_vectors(sub: str) -> Path:
    """The vector folder, or skip the test saying where it was looked for."""
    path = VECTORS / sub
    if not path.exists():
        pytest.fail(f"test vectors not found at {path}")
    return path
