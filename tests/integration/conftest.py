"""Fixtures that start a whole federation: real department processes over
mutual TLS, the real gateway, real tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.dev.devstack import DevStack

# Small enough to start in a few seconds, large enough to be realistic.
SUBJECTS = 600


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevStack]:
    """One federation shared by the read-only tests of a module."""
    async with await DevStack.create(tmp_path_factory.mktemp("stack"), subjects=SUBJECTS) as s:
        yield s


def subject(stack: DevStack, key: str) -> str:
    return str(stack.subjects[key]["id"])


def workdir(tmp_path: Path) -> Path:
    return tmp_path / "stack"
