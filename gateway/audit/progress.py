"""A progress line for long audit-log passes (``credit-audit verify`` and the
commands that verify first), on standard error. Standard library only.

On a terminal it redraws one line (``\\r``) at most five times a second; with
``--progress`` on something that is not a terminal (a CI log, a pipe) it writes
a full line every 10 %. It says nothing for logs shorter than
:data:`SHOW_FROM` entries unless forced: those take under a few seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["SHOW_FROM", "Progress"]

#: Below this many entries a pass takes a few seconds at most: no progress line.
SHOW_FROM = 200_000


class Progress:
    """Callable as ``on_progress(done, total)`` (counts of entries). ``what``
    names the pass ("verifying"); ``force`` shows it whatever the log's size and
    wherever the stream goes; ``clock`` (seconds, monotonic) is for tests."""

    def __init__(
        self,
        what: str,
        *,
        stream: TextIO | None = None,
        force: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._what = what
        self._out = stream if stream is not None else sys.stderr
        self._tty = self._out.isatty()
        self._force = force
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._last_draw = 0.0
        self._last_decile = -1
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` entries (drawn or not, as the class says)."""
        if not (self._force or (self._tty and total >= SHOW_FROM)):
            return
        now = self._clock()
        elapsed = max(now - self._start, 1e-9)
        rate = done / elapsed
        pct = 100 * done // total if total else 100
        if self._tty:
            if done < total and now - self._last_draw < 0.2:
                return
            self._last_draw = now
            left = (total - done) / rate if rate > 0 else 0.0
            width = 30
            filled = width * done // total if total else width
            bar = "#" * filled + "." * (width - filled)
            self._out.write(
                f"\r{self._what} [{bar}] {done:,}/{total:,} {pct:3d}% "
                f"{rate:,.0f}/s ETA {left:,.0f}s "
            )
            self._drawn = True
            if done >= total:
                self._out.write("\n")
            self._out.flush()
            return
        decile = pct // 10
        if decile != self._last_decile or done >= total:
            self._last_decile = decile
            self._out.write(f"{self._what}: {done:,}/{total:,} entries ({pct}%), {rate:,.0f}/s\n")
            self._out.flush()
