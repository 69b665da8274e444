"""Start helper processes for benchmarks and read their ``listening on`` line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start(
    args: list[str], *, ready: str = "listening on", timeout_s: float = 30.0
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python args...``; return the process and the address it printed."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if ready in line:
            return proc, line.strip().rsplit(" ", 1)[-1]
    proc.kill()
    raise RuntimeError(f"{args[:3]} did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of ``pid``: its kernel name (``comm``) and user + system CPU seconds so
    far (Linux /proc; a thread that ended meanwhile is left out)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / ticks)
    return out


#: The roles :func:`by_role` sorts a process's threads into, in print order.
ROLES = ("event loop", "ledger", "other Python threads", "gRPC core")


def by_role(
    pid: int,
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    names: dict[int, str] | None = None,
) -> dict[str, float]:
    """CPU seconds between two :func:`thread_cpu` readings of ``pid``, by role: the
    main thread runs the event loop; ``names`` (native id -> Python name, from
    :func:`python_thread_names`) tells the Python threads, the ledger's ``ledger-N``
    from the others (the audit writer, stores, ``asyncio.to_thread`` workers), and any
    thread it does not name is one of gRPC core's (event_engine...). Without ``names``
    (a process that cannot tell), a thread with the process's own kernel name is taken
    for a Python one: true before CPython 3.14, which names OS threads as Python does."""
    main_comm = after.get(pid, ("", 0.0))[0]
    out = dict.fromkeys(ROLES, 0.0)
    for tid, (comm, cpu) in after.items():
        spent = cpu - before.get(tid, (comm, 0.0))[1]
        if tid == pid:
            role = "event loop"
        elif names is not None:
            name = names.get(tid)
            if name is None:
                role = "gRPC core"
            elif name.startswith("ledger-"):
                role = "ledger"
            else:
                role = "other Python threads"
        elif comm != main_comm:
            role = "gRPC core"
        else:
            role = "other Python threads"
        out[role] += spent
    return out


def python_thread_names(
    proc: subprocess.Popen[str], path: Path, timeout_s: float = 5.0
) -> dict[int, str]:
    """Native thread id -> Python thread name of a bench gateway (bench._gateway writes
    them to ``path`` on SIGUSR1); empty if it did not answer in time."""
    path.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return {int(k): v for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError):
            time.sleep(0.05)
    return {}


def stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
