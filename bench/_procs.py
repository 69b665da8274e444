"""Start helper processes for benchmarks and read their ``listening on`` line."""

from __future__ import annotations

import os
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


def stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
