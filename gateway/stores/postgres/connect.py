"""Connections and pools for the PostgreSQL stores.

A connection URL never carries the password (``credit-gateway`` refuses one that does:
configuration files are read by many and command lines are visible to every user of
the host); the password comes from a file (``password_file``, mode 0600 recommended) or
an environment variable (``password_env``) and is passed to libpq as a separate
parameter. Every pool acquisition has a timeout (seconds), so a database that is gone
turns into a prompt error instead of a wait without end.

A serving process opens each store's pool with :func:`open_store_pool`, the one opener:
it checks the schema is this build's on the pool's first connection, and turns every way of
failing into one :class:`~gateway.errors.ConfigError` with key ``storage`` and a message
that names the store (``ledger: the database cannot be reached (OperationalError)``), never
the server's text, a host or a folder. :func:`check_current` does the schema check alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.errors import ConfigError
from gateway.stores.postgres.migrate import SchemaMismatch, require_current
from gateway.stores.postgres.url import PgConfigError, PgTarget, check_url

__all__ = [
    "PgConfigError",
    "PgTarget",
    "check_current",
    "check_url",
    "connect",
    "open_pool",
    "open_store_pool",
    "pooled_transaction",
]


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


def open_store_pool(
    target: PgTarget,
    store: str,
    *,
    max_size: int = 8,
    timeout_s: float = 5.0,
    schema_checked: bool = False,
) -> ConnectionPool[psycopg.Connection[Any]]:
    """A serving process's pool for ``store`` (a ``[storage.stores]`` name: ledger,
    replay, limits, policy, controls...): 1..``max_size`` connections, acquisitions
    waiting at most ``timeout_s`` seconds, opened only after
    :func:`~gateway.stores.postgres.migrate.require_current` passed on one of them
    (``schema_checked``: the caller's :func:`check_current` of this very database passed
    during this start-up, so it is not checked again).
    Blocking: start-up only.

    Raises:
        ConfigError: key ``storage``; the schema is not this build's (the message says to
            run ``credit-gateway db migrate``), the database cannot be reached (the
            driver's error class only), or the password source is unusable. The pool is
            closed then.
    """
    try:
        pool = open_pool(target, min_size=1, max_size=max_size, timeout_s=timeout_s)
    except (psycopg.Error, PoolTimeout, PgConfigError) as exc:
        raise _unreachable(store, exc) from None
    if schema_checked:
        return pool
    try:
        with pool.connection() as conn:
            require_current(conn)
    except SchemaMismatch as exc:
        pool.close()
        raise ConfigError("storage", f"{store}: {exc}") from None
    except (psycopg.Error, PoolTimeout) as exc:
        pool.close()
        raise _unreachable(store, exc) from None
    except BaseException:
        pool.close()
        raise
    return pool


@contextmanager
def pooled_transaction(
    pool: ConnectionPool[psycopg.Connection[Any]],
    error: Callable[[str], Exception],
    what: str,
    *,
    passes: tuple[type[psycopg.Error], ...] = (),
) -> Iterator[psycopg.Connection[Any]]:
    """One pooled connection in one transaction (committed on leaving, rolled back on an
    exception): a store's unit of work. The pool timing out raises ``error("<what>: its
    database cannot be reached")``, a driver error ``error("<what>: its database failed
    (SQLSTATE ...)")``: the SQLSTATE names the failure's class without the server's text
    (which may quote a row). ``passes``: driver errors left to the caller to map."""
    try:
        with pool.connection() as conn, conn.transaction():
            yield conn
    except passes:
        raise
    except PoolTimeout:
        raise error(f"{what}: its database cannot be reached") from None
    except psycopg.Error as err:
        raise error(f"{what}: its database failed (SQLSTATE {err.sqlstate or 'none'})") from None


def check_current(target: PgTarget, store: str) -> None:
    """Check, on one connection, that ``target``'s schema is this build's. Raises
    ConfigError exactly as :func:`open_store_pool` does."""
    try:
        with connect(target) as conn:
            require_current(conn)
    except SchemaMismatch as exc:
        raise ConfigError("storage", f"{store}: {exc}") from None
    except (psycopg.Error, PgConfigError) as exc:
        raise _unreachable(store, exc) from None


def _unreachable(store: str, exc: Exception) -> ConfigError:
    # A password source's problem is ours to word (it names the config key, never the
    # password); the driver's text may name hosts and socket folders, so only its class.
    reason = str(exc) if isinstance(exc, PgConfigError) else type(exc).__name__
    return ConfigError("storage", f"{store}: the database cannot be reached ({reason})")
