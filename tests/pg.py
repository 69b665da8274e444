"""The PostgreSQL test cluster (gateway/dev/pgcluster.py) for the tests: one per run,
a fresh database per test.

Where PostgreSQL is not installed the tests that need it skip with "NOT RUN: ...";
``.ci/run`` installs it and sets ``CREDIT_GATEWAY_REQUIRE_PG=1``, under which a missing
cluster is a failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gateway.dev.pgcluster import ClusterUnavailable, LocalCluster
from gateway.dev.pgcluster import start_cluster as _start

__all__ = ["PgCluster", "fresh_database", "require_pg", "start_cluster"]

PgCluster = LocalCluster


def require_pg(reason: str) -> None:
    """Skip (or fail under CREDIT_GATEWAY_REQUIRE_PG=1) with ``reason``."""
    message = f"NOT RUN: PostgreSQL test cluster unavailable: {reason}"
    if os.environ.get("CREDIT_GATEWAY_REQUIRE_PG") == "1":
        pytest.fail(message)
    pytest.skip(message)


def start_cluster() -> LocalCluster:
    """A cluster with fsync off, or a skip (a failure in CI) when there is none."""
    try:
        return _start()
    except ClusterUnavailable as exc:
        require_pg(str(exc))
        raise  # require_pg raised already; this line is for the type checker


@contextmanager
def fresh_database(cluster: LocalCluster, *, migrated: bool = True) -> Iterator[str]:
    """A new, empty database for one test (migrated to this build's schema unless
    ``migrated`` is False); dropped afterwards. Yields its URL."""
    import psycopg

    from gateway.stores.postgres.migrate import migrate

    url = cluster.create_database()
    try:
        if migrated:
            with psycopg.connect(url) as conn:
                migrate(conn)
        yield url
    finally:
        cluster.drop_database(url)
