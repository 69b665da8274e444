"""The consent archive's contract, on SQLite and on PostgreSQL alike: kept in signed form,
encrypted, idempotent across processes, purged after retention, a moved or foreign-keyed
row refused; on PostgreSQL a host with another pseudonym key is refused at start."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.subject.consents import ConsentArchive
from gateway.subject.errors import SubjectStoreError
from tests.contract.live_backends import BACKENDS, Backend, backend_fixture

KEY = bytes(range(32))
JWS = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIzNjA0MjYxOTkxMDEwMTAwNzEifQ.c2lnbmF0dXJl"
DAY = 86400
NOW = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from backend_fixture(request, tmp_path)


@pytest.fixture
def archive(backend: Backend, clock: Clock) -> ConsentArchive:
    return backend.consents(KEY, retention_days=10, clock=clock)


def keep(archive: ConsentArchive, cid: str, jws: str = JWS, expires_at: int = NOW + DAY) -> None:
    asyncio.run(
        archive.keep(cid, jws, agency_id="bank", subject_key="p" * 64, expires_at=expires_at)
    )


def _raw(backend: Backend, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """One statement past the archive, as an operator's shell (SQLite ``?``, psycopg
    ``%s``); the rows it returns."""
    if backend.url is None:
        with contextlib.closing(sqlite3.connect(backend.tmp / "consents.sqlite")) as db, db:
            return list(db.execute(sql.replace("consent_archive", "consents"), args))
    import psycopg

    with psycopg.connect(backend.url) as conn:
        cur = conn.execute(sql.replace("?", "%s").encode(), args)
        return list(cur.fetchall()) if cur.description else []


def test_a_kept_consent_reads_back_exactly(archive: ConsentArchive) -> None:
    keep(archive, "c-1")
    got = archive.get("c-1")
    assert got is not None
    assert got.compact_jws == JWS
    assert (got.agency_id, got.subject_key) == ("bank", "p" * 64)
    assert got.retain_until == NOW + DAY + 10 * DAY
    assert got.archived_at_utc.endswith("Z")
    assert archive.get("c-2") is None


def test_the_first_archived_copy_is_kept_and_read_by_every_process(
    archive: ConsentArchive, backend: Backend
) -> None:
    keep(archive, "c-1")
    keep(archive, "c-1", jws="other.token.here")  # a repeat use: no write
    fresh = backend.consents(KEY)
    keep(fresh, "c-1", jws="other.token.here")  # another process: the first copy stays
    got = fresh.get("c-1")
    assert got is not None and got.compact_jws == JWS


def test_the_store_holds_no_readable_consent(archive: ConsentArchive, backend: Backend) -> None:
    keep(archive, "c-1")
    rows = _raw(backend, "SELECT sealed, subject FROM consent_archive")
    assert len(rows) == 1
    assert JWS.split(".")[1].encode() not in bytes(rows[0][0])  # type: ignore[arg-type]
    assert rows[0][1] == "p" * 64  # the subject only by pseudonym


def test_the_sqlite_file_is_owner_only(tmp_path: Path) -> None:
    archive = ConsentArchive.open(tmp_path / "consents.sqlite", KEY)
    try:
        keep(archive, "c-1")
        path = tmp_path / "consents.sqlite"
        raw = path.read_bytes() + b"".join(
            p.read_bytes() for p in tmp_path.glob("consents.sqlite-*")
        )
        assert JWS.split(".")[1].encode() not in raw
        assert path.stat().st_mode & 0o077 == 0
    finally:
        archive.close()


def test_a_row_moved_to_another_id_or_read_with_another_key_fails_its_check(
    archive: ConsentArchive, backend: Backend
) -> None:
    keep(archive, "c-1")
    keep(archive, "c-2")
    ((nonce, sealed),) = _raw(
        backend, "SELECT nonce, sealed FROM consent_archive WHERE consent_id = 'c-1'"
    )
    _raw(
        backend,
        "UPDATE consent_archive SET nonce = ?, sealed = ? WHERE consent_id = 'c-2'",
        (nonce, sealed),
    )
    with pytest.raises(SubjectStoreError):
        archive.get("c-2")
    if backend.url is None:  # a file of one host's own: read with another key, refused
        other = backend.consents(bytes(32))
        with pytest.raises(SubjectStoreError):
            other.get("c-1")


def test_a_host_with_another_pseudonym_key_is_refused_on_a_shared_archive(pg_url: str) -> None:
    from gateway.stores.postgres.connect import open_pool
    from gateway.stores.postgres.consents import open_consent_archive
    from gateway.stores.postgres.url import PgTarget

    first = open_consent_archive(open_pool(PgTarget(pg_url), max_size=2), KEY)
    try:
        with pytest.raises(ConfigError) as refused:
            open_consent_archive(open_pool(PgTarget(pg_url), max_size=2), bytes(32))
        assert refused.value.key == "audit.pseudonym_key"
        same = open_consent_archive(open_pool(PgTarget(pg_url), max_size=2), KEY)
        same.close()
    finally:
        first.close()


def test_purge_removes_exactly_the_consents_past_retention(
    archive: ConsentArchive, clock: Clock
) -> None:
    keep(archive, "short", expires_at=NOW + DAY)
    keep(archive, "long", expires_at=NOW + 100 * DAY)
    clock.now = NOW + 11 * DAY - 1  # retention of "short" ends at NOW + 11 days
    assert archive.purge() == 0
    clock.now = NOW + 11 * DAY + 1
    assert archive.purge() == 1
    assert archive.purge() == 0  # another host purging after it: nothing twice
    assert archive.get("short") is None
    assert archive.get("long") is not None
    # A purged consent used again is archived again (its memo entry went with it).
    keep(archive, "short", expires_at=NOW + 30 * DAY)
    assert archive.get("short") is not None


def test_a_write_failure_is_a_store_error(archive: ConsentArchive) -> None:
    archive.close()
    with pytest.raises(SubjectStoreError):
        keep(archive, "c-9")


@pytest.mark.parametrize(("days", "key"), [(0, KEY), (-5, KEY), (10, b"short")])
def test_bad_settings_are_refused(tmp_path: Path, days: int, key: bytes) -> None:
    with pytest.raises(ConfigError):
        ConsentArchive.open(tmp_path / "c.sqlite", key, retention_days=days)
