"""A throwaway PostgreSQL cluster for the tests (Debian's ``postgresql`` package).

The cluster lives in a short folder under /tmp owned by the ``postgres`` user when the
tests run as root (``initdb`` and ``pg_ctl`` refuse root), listens on a Unix socket in
that folder only (no port clashes) and runs with ``fsync=off``: the tests prove logic,
not durability. Each test gets a fresh database (:func:`fresh_database`).

Where PostgreSQL is not installed the tests that need it skip with "NOT RUN: ...";
``.ci/run`` installs it and sets ``CREDIT_GATEWAY_REQUIRE_PG=1``, under which a missing
cluster is a failure instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PgCluster", "fresh_database", "require_pg", "start_cluster"]


def _bindir() -> Path | None:
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def require_pg(reason: str) -> None:
    """Skip (or fail under CREDIT_GATEWAY_REQUIRE_PG=1) with ``reason``."""
    message = f"NOT RUN: PostgreSQL test cluster unavailable: {reason}"
    if os.environ.get("CREDIT_GATEWAY_REQUIRE_PG") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PgCluster:
    """A running cluster: ``socket_dir`` (its Unix socket folder) and ``user``."""

    root: Path
    socket_dir: Path
    user: str
    bindir: Path
    run_as: list[str]

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` over the Unix socket (no password: trust auth)."""
        return f"postgresql://{self.user}@/{dbname}?host={self.socket_dir}"

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its folder."""
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"),
             "-m", "immediate", "stop"],
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    """initdb and start a cluster; raises RuntimeError (with the tool's output) if it
    cannot, or calls :func:`require_pg` when PostgreSQL is not installed."""
    bindir = _bindir()
    if bindir is None:
        require_pg("initdb not found (install Debian's postgresql package)")
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="cgpg-", dir="/tmp"))
    run_as: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            require_pg("running as root and there is no postgres user")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
        user = "postgres"
    root.chmod(0o755)
    data = root / "data"
    init = subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
         "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
    opts = (
        f"-c listen_addresses='' -c unix_socket_directories={root} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )
    start = subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
         "-o", opts, "-w", "-t", "60", "start"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    if start.returncode != 0:
        log = (root / "log").read_text(errors="replace")[-2000:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {start.stderr[-1000:]} {log}")
    return PgCluster(root=root, socket_dir=root, user=user, bindir=bindir, run_as=run_as)


@contextmanager
def fresh_database(cluster: PgCluster, *, migrated: bool = True) -> Iterator[str]:
    """A new, empty database for one test (migrated to this build's schema unless
    ``migrated`` is False); dropped afterwards. Yields its URL."""
    import psycopg

    from gateway.stores.postgres.migrate import migrate

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = cluster.url(name)
    try:
        if migrated:
            with psycopg.connect(url) as conn:
                migrate(conn)
        yield url
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
