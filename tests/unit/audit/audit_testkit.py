"""Shared constants and helpers of the audit tests (imported by name: the test
folders are not packages)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: <checkout>/../shared/vectors: /work/shared beside /work/main, and likewise in CI.
VECTORS = Path(__file__).resolve().parents[4] / "shared" / "vectors"

ORIGIN = "credit-gateway.test/audit"


def need_vectors(sub: str) -> Path:
    """The vector folder, or skip the test saying where it was looked for."""
    path = VECTORS / sub
    if not path.exists():
        pytest.skip(f"shared test vectors not found at {path}")
    return path
