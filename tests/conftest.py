"""Fixtures shared by unit and integration tests: the PostgreSQL test cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgCluster, fresh_database, start_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole run, started on first use (skips with
    "NOT RUN" where PostgreSQL is not installed; see tests/pg.py)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh database migrated to this build's schema; its URL (no password)."""
    with fresh_database(pg_cluster) as url:
        yield url


@pytest.fixture
def pg_empty_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh database with no schema at all; its URL."""
    with fresh_database(pg_cluster, migrated=False) as url:
        yield url
