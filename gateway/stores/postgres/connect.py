"""Connections and pools for the PostgreSQL stores.

A connection URL never carries the password (``credit-gateway`` refuses one that does:
configuration files are read by many and command lines are visible to every user of
the host); the password comes from a file (``password_file``, mode 0600 recommended) or
an environment variable (``password_env``) and is passed to libpq as a separate
parameter. Every pool acquisition has a timeout (seconds), so a database that is gone
turns into a prompt error instead of a wait without end.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.stores.postgres.url import PgConfigError, PgTarget, check_url

__all__ = ["PgConfigError", "PgTarget", "check_url", "connect", "open_pool"]


def connect(target: PgTarget, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open one connection (READ COMMITTED, the server default). Raises
    :class:`psycopg.OperationalError` when the server cannot be reached in
    ``connect_timeout_s`` seconds, :class:`PgConfigError` for a bad password source."""
    return psycopg.connect(target.url, autocommit=autocommit, **target.kwargs())


def open_pool(
    target: PgTarget, *, min_size: int = 1, max_size: int = 8, timeout_s: float = 5.0
) -> ConnectionPool[psycopg.Connection[Any]]:
    """Open a pool of ``min_size``..``max_size`` connections; ``getconn``/``connection``
    wait at most ``timeout_s`` seconds (then raise :class:`psycopg_pool.PoolTimeout`).
    The pool checks a connection before lending it, so one broken by a server restart
    is replaced rather than handed out. Close it with ``pool.close()``."""
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        target.url,
        kwargs=target.kwargs(),
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        check=ConnectionPool.check_connection,
        name=target.application_name,
        open=False,
    )
    pool.open(wait=True, timeout=timeout_s)
    return pool
