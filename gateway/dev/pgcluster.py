"""A throwaway local PostgreSQL cluster (Debian's ``postgresql`` package), for the
tests and ``credit-gateway demo --postgres``. Development tooling: never imported by a
serving gateway.

The cluster lives in a short folder under /tmp (a Unix socket path must stay under
107 bytes), owned by the ``postgres`` user when run as root (``initdb`` and ``pg_ctl``
refuse root), listens on a Unix socket in that folder only (no TCP port, so no
clashes) and, unless ``durable``, runs with ``fsync=off``: fine for proving logic,
never for keeping data.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClusterUnavailable", "LocalCluster", "find_bindir", "start_cluster"]


class ClusterUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed here, or cannot run (the message
    says which and what to install)."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest version first), or None."""
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists() and (cand / "pg_ctl").exists():
            return cand
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class LocalCluster:
    """A running cluster: its folder (also the socket folder), superuser and tools."""

    root: Path
    user: str
    bindir: Path
    run_as: list[str]

    @property
    def socket_dir(self) -> Path:
        """The folder of the server's Unix socket (the cluster's own folder)."""
        return self.root

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` over the Unix socket (trust authentication)."""
        return f"postgresql://{self.user}@/{dbname}?host={self.root}"

    def create_database(self, name: str | None = None) -> str:
        """Create a database (a fresh random name by default); returns its URL."""
        import psycopg

        name = name or "db_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (made by :meth:`create_database`), sessions or not."""
        import psycopg

        name = url.split("/", 3)[3].split("?", 1)[0]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its folder."""
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"),
             "-m", "immediate", "stop"],
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(*, durable: bool = False, max_connections: int = 300) -> LocalCluster:
    """initdb and start a cluster. Raises :class:`ClusterUnavailable` when PostgreSQL
    is not installed (or, as root, there is no ``postgres`` user), RuntimeError with
    the tool's output when it is but will not start."""
    bindir = find_bindir()
    if bindir is None:
        raise ClusterUnavailable("initdb not found: install Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="cgpg-", dir="/tmp"))
    run_as: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise ClusterUnavailable("running as root and there is no postgres user") from None
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
    opts = f"-c listen_addresses='' -c unix_socket_directories={root} "
    opts += f"-c max_connections={max_connections}"
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    start = subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
         "-o", opts, "-w", "-t", "60", "start"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    if start.returncode != 0:
        log = (root / "log").read_text(errors="replace")[-2000:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {start.stderr[-1000:]} {log}")
    return LocalCluster(root=root, user=user, bindir=bindir, run_as=run_as)
