"""The consent archive: kept in signed form, encrypted, idempotent, purged after retention."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.subject.consents import ConsentArchive
from gateway.subject.errors import SubjectStoreError

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


@pytest.fixture
def archive(tmp_path: Path, clock: Clock) -> Iterator[ConsentArchive]:
    a = ConsentArchive.open(tmp_path / "consents.sqlite", KEY, retention_days=10, clock=clock)
    yield a
    a.close()


def keep(archive: ConsentArchive, cid: str, jws: str = JWS, expires_at: int = NOW + DAY) -> None:
    asyncio.run(
        archive.keep(cid, jws, agency_id="bank", subject_key="p" * 64, expires_at=expires_at)
    )


def test_a_kept_consent_reads_back_exactly(archive: ConsentArchive) -> None:
    keep(archive, "c-1")
    got = archive.get("c-1")
    assert got is not None
    assert got.compact_jws == JWS
    assert (got.agency_id, got.subject_key) == ("bank", "p" * 64)
    assert got.retain_until == NOW + DAY + 10 * DAY
    assert got.archived_at_utc.endswith("Z")
    assert archive.get("c-2") is None


def test_the_first_archived_copy_is_kept(archive: ConsentArchive, tmp_path: Path) -> None:
    keep(archive, "c-1")
    keep(archive, "c-1", jws="other.token.here")  # a repeat use: no write
    fresh = ConsentArchive.open(tmp_path / "consents.sqlite", KEY)
    keep(fresh, "c-1", jws="other.token.here")  # another process: INSERT OR IGNORE
    got = fresh.get("c-1")
    assert got is not None and got.compact_jws == JWS
    fresh.close()


def test_the_file_holds_no_readable_consent_and_is_owner_only(
    archive: ConsentArchive, tmp_path: Path
) -> None:
    keep(archive, "c-1")
    path = tmp_path / "consents.sqlite"
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("consents.sqlite-*"))
    assert JWS.split(".")[1].encode() not in raw
    assert path.stat().st_mode & 0o077 == 0


def test_a_row_moved_to_another_id_or_read_with_another_key_fails_its_check(
    archive: ConsentArchive, tmp_path: Path
) -> None:
    keep(archive, "c-1")
    keep(archive, "c-2")
    conn = sqlite3.connect(tmp_path / "consents.sqlite")
    sealed = conn.execute("SELECT nonce, sealed FROM consents WHERE consent_id='c-1'").fetchone()
    conn.execute("UPDATE consents SET nonce=?, sealed=? WHERE consent_id='c-2'", sealed)
    conn.commit()
    conn.close()
    with pytest.raises(SubjectStoreError):
        archive.get("c-2")
    other = ConsentArchive.open(tmp_path / "consents.sqlite", bytes(32))
    with pytest.raises(SubjectStoreError):
        other.get("c-1")
    other.close()


def test_purge_removes_exactly_the_consents_past_retention(
    archive: ConsentArchive, clock: Clock
) -> None:
    keep(archive, "short", expires_at=NOW + DAY)
    keep(archive, "long", expires_at=NOW + 100 * DAY)
    clock.now = NOW + 11 * DAY - 1  # retention of "short" ends at NOW + 11 days
    assert archive.purge() == 0
    clock.now = NOW + 11 * DAY + 1
    assert archive.purge() == 1
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
