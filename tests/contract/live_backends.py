"""Backends for the policy-version and controls contract suites: each test runs once on
SQLite and once on PostgreSQL (a fresh migrated database, tests/pg.py).

A :class:`Backend` opens any number of *handles* on one shared store, each as another
gateway process would (its own connection or pool), and runs raw SQL against it the way
an operator with a shell could.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.controls.store import ControlsStore
from gateway.objections.store import ObjectionStore, SQLiteObjectionStore
from gateway.policyadmin.store import VersionStore
from gateway.stores.postgres.connect import connect, open_pool
from gateway.stores.postgres.consents import open_consent_archive
from gateway.stores.postgres.controls import PgControlsStore
from gateway.stores.postgres.objections import PgObjectionStore
from gateway.stores.postgres.policy_versions import PgVersionStore
from gateway.stores.postgres.subject_index import PgQueryIndex
from gateway.stores.postgres.url import PgTarget
from gateway.stores.sqlite.controls import SQLiteControlsStore
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore
from gateway.subject.consents import ConsentArchive
from gateway.subject.index import QueryIndex, SQLiteQueryIndex

BACKENDS = ["sqlite", "postgres"]


@dataclass
class Backend:
    """One shared store location: ``name`` is ``sqlite`` or ``postgres``."""

    name: str
    tmp: Path
    url: str | None = None
    opened: list[Any] = field(default_factory=list)

    def versions(self) -> VersionStore:
        """A new handle on the policy version store."""
        store: VersionStore
        if self.url is None:
            store = SQLiteVersionStore(self.tmp / "versions.sqlite")
        else:
            store = PgVersionStore(open_pool(PgTarget(self.url), max_size=4))
        self.opened.append(store)
        return store

    def controls(self, **kwargs: Any) -> ControlsStore:
        """A new handle on the controls store (``clock``, ``seed_revoked_consents``)."""
        store: ControlsStore
        if self.url is None:
            store = SQLiteControlsStore(self.tmp / "controls.sqlite", **kwargs)
        else:
            store = PgControlsStore(open_pool(PgTarget(self.url), max_size=4), **kwargs)
        self.opened.append(store)
        return store

    def objections(self) -> ObjectionStore:
        """A new handle on the objection store."""
        store: ObjectionStore
        if self.url is None:
            store = SQLiteObjectionStore(self.tmp / "objections.sqlite")
        else:
            # With a target, as a serving process opens it: it takes part in the poller's
            # election.
            store = PgObjectionStore(
                open_pool(PgTarget(self.url), max_size=4), target=PgTarget(self.url)
            )
        self.opened.append(store)
        return store

    def query_index(self) -> QueryIndex:
        """A new handle on the subject index (PostgreSQL: one that may be elected follower)."""
        index: QueryIndex
        if self.url is None:
            index = SQLiteQueryIndex.open(self.tmp / "subjects.sqlite")
        else:
            target = PgTarget(self.url)
            index = PgQueryIndex(open_pool(target, max_size=4), target=target)
        self.opened.append(index)
        return index

    def consents(self, key: bytes, **kwargs: Any) -> ConsentArchive:
        """A new handle on the consent archive under pseudonym key ``key``
        (``retention_days``, ``clock``)."""
        archive: ConsentArchive
        if self.url is None:
            archive = ConsentArchive.open(self.tmp / "consents.sqlite", key, **kwargs)
        else:
            archive = open_consent_archive(open_pool(PgTarget(self.url), max_size=4), key, **kwargs)
        self.opened.append(archive)
        return archive

    def raw(self, file: str) -> Callable[[str], None]:
        """Run one SQL statement outside the store (autocommit), as an operator's shell."""
        if self.url is None:
            conn = sqlite3.connect(self.tmp / file, isolation_level=None)
            self.opened.append(conn)
            return lambda sql: conn.execute(sql) and None
        pg = connect(PgTarget(self.url), autocommit=True)
        self.opened.append(pg)
        return lambda sql: pg.execute(sql.encode()) and None

    def close(self) -> None:
        for item in reversed(self.opened):
            item.close()


def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Yield the backend named by ``request.param`` (PostgreSQL: a fresh database)."""
    if request.param == "sqlite":
        backend = Backend("sqlite", tmp_path)
        try:
            yield backend
        finally:
            backend.close()
        return
    url = request.getfixturevalue("pg_url")
    backend = Backend("postgres", tmp_path, url=url)
    try:
        yield backend
    finally:
        backend.close()
