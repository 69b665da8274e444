"""Where the gateway's CPU goes under bench.overhead's load: a py-spy profile, as text.

    python -m bench.profile [--seconds 10] [--rounds 2] [--out bench/profiles/NAME.txt]
        [--top 30] [--raw FILE] [-- OVERHEAD-ARGS...]

Runs ``python -m bench.overhead --rounds R --seconds S`` (everything on: mutual TLS,
tokens, live checks, audit log, ledger; extra arguments after ``--`` go to it), waits for
its gateway process (``python -m bench._gateway``) and samples it with ``py-spy record
--gil --format raw`` until it exits: only the thread holding the GIL is sampled, so the
figures are the share of the Python interpreter's time, the event loop's and the SQLite
threads' alike. The raw stacks are then summarised as text (a flame graph read from its
top): the functions with the most samples of their own ("self"), and those with the most
samples under them ("total", each function counted once per stack), as percentages of all
samples. Requires ``py-spy`` (a dev dependency) and the right to trace a child process
(root, or ``kernel.yama.ptrace_scope`` 0 or 1); without either it prints "NOT RUN: why"
and exits 4.

The summary is small text meant to be kept (``bench/profiles/``); the raw stacks are
written only where ``--raw`` says. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

#: ``func (path/to/file.py:123)`` -> ``func (file.py)``: one entry per function, not per line.
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
_ROOT = Path(__file__).resolve().parent.parent
_OWN = ("gateway/", "adapters/", "bench/")


#: Exit status when the profile cannot be taken here (no py-spy, no right to trace).
NOT_RUN = 4


def _py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _find_gateway(root: int, timeout_s: float) -> int:
    """The pid of ``bench._gateway`` among ``root``'s descendants, once it has started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        todo = [root]
        while todo:
            pid = todo.pop()
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"bench._gateway" in cmd:
                return pid
            todo += _children(pid)
        time.sleep(0.1)
    raise SystemExit("the bench gateway did not start")


def _frame(raw: str) -> str:
    m = _FRAME.match(raw.strip())
    if m is None:
        return raw.strip()
    path = m["file"]
    # The project's own files keep their path (two query.py); the rest, the file name.
    where = path if path.startswith(_OWN) else Path(path).name
    return f"{m['func']} ({where})"


def summarise(lines: Iterable[str], top: int, focus: Sequence[str] = ()) -> str:
    """The text summary of py-spy ``--format raw`` lines (``frame;frame;... count``); for
    each function named in ``focus`` (``Class.method``), what its samples went to."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    under: dict[str, Counter[str]] = {name: Counter() for name in focus}
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
        for name, seen in under.items():
            at = next((i for i, f in enumerate(frames) if f.startswith(name + " (")), None)
            if at is not None:
                for f in set(frames[at:]):
                    seen[f] += n
    if not samples:
        return "no samples\n"
    out = [f"samples: {samples}", "", f"top {top} by self (% of all samples):"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", f"top {top} by total, under it (% of all samples):"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top)]
    # The event loop's own frames head every stack; the gateway's code is read here.
    own_code = Counter({f: n for f, n in total.items() if "(gateway/" in f})
    out += ["", f"top {top} of the gateway's own functions by total (% of all samples):"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own_code.most_common(top)]
    for name, seen in under.items():
        out += ["", f"under {name}, by total (% of all samples):"]
        out += [f"  {100 * n / samples:5.2f}%  {f}" for f, n in seen.most_common(top)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Profile the bench gateway; print the summary (and write it to ``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--out", type=Path, help="also write the summary here")
    p.add_argument("--raw", type=Path, help="keep py-spy's raw stacks here")
    p.add_argument(
        "--focus",
        action="append",
        default=None,
        help="also break down what this function's samples went to (Class.method; repeatable;"
        " default: QueryAuditor.append_query and QueryPipeline._run)",
    )
    p.add_argument("overhead_args", nargs="*", help="passed to bench.overhead (after --)")
    args = p.parse_args(argv)
    spy = _py_spy()
    if spy is None:
        print("NOT RUN: py-spy not found (pip install py-spy)", file=sys.stderr)
        return NOT_RUN
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.overhead",
            "--rounds",
            str(args.rounds),
            "--seconds",
            str(args.seconds),
            *args.overhead_args,
        ],
        cwd=_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "raw.txt"
        try:
            pid = _find_gateway(bench.pid, 120.0)
            spy_run = subprocess.run(
                [spy, "record", "-p", str(pid), "--gil", "--format", "raw", "--rate",
                 str(args.rate), "--nonblocking", "-o", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )  # fmt: skip
        finally:
            report, _ = bench.communicate()
        if not raw.exists():
            why = spy_run.stderr.strip().replace("\n", " ")[-300:]
            print(f"NOT RUN: py-spy could not sample the gateway: {why}", file=sys.stderr)
            return NOT_RUN
        focus = args.focus or ["QueryAuditor.append_query", "QueryPipeline._run"]
        summary = summarise(raw.read_text(encoding="utf-8").splitlines(), args.top, focus)
    text = f"bench.overhead {' '.join(args.overhead_args)}\n{report}\n{summary}"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return bench.returncode


if __name__ == "__main__":
    raise SystemExit(main())
