"""Open a pool for a serving process and refuse a schema this build does not expect."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.stores.postgres.connect import open_pool
from gateway.stores.postgres.migrate import require_current
from gateway.stores.postgres.url import PgTarget

__all__ = ["open_current_pool"]


def open_current_pool(
    target: PgTarget, *, max_size: int = 8, timeout_s: float = 5.0
) -> ConnectionPool[psycopg.Connection[Any]]:
    """A pool on ``target`` (1..``max_size`` connections, acquisitions wait at most
    ``timeout_s`` seconds) after :func:`~gateway.stores.postgres.migrate.require_current`
    passed on one of its connections. Raises SchemaMismatch (run ``credit-gateway db
    migrate``), psycopg_pool.PoolTimeout or psycopg.Error when the server cannot be
    reached, PgConfigError for an unreadable password source; the pool is closed then."""
    pool = open_pool(target, min_size=1, max_size=max_size, timeout_s=timeout_s)
    try:
        with pool.connection() as conn:
            require_current(conn)
    except BaseException:
        pool.close()
        raise
    return pool
