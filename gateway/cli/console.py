"""What every console script (``credit-gateway``, ``credit-query``, ``credit-adapter``,
``credit-audit``) does at its edge with the shell.

``credit-audit who ... | head`` closes the pipe after ten lines; the next write raises
``BrokenPipeError`` (Python ignores SIGPIPE). A Unix tool stops quietly then, so
:func:`console_script` ends the command without a traceback and without the interpreter's
"Exception ignored ... BrokenPipeError" at exit, with status 141 (128 + SIGPIPE, what a shell
reports for a tool SIGPIPE stopped). SIGPIPE itself stays ignored: restoring its default
action would let a peer closing a gRPC socket kill a serving process.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec

__all__ = ["EXIT_BROKEN_PIPE", "console_script", "yuan"]

_P = ParamSpec("_P")

#: 128 + SIGPIPE: a shell's status for a command stopped by a closed pipe.
EXIT_BROKEN_PIPE = 128 + int(signal.SIGPIPE)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush has nowhere
    # to fail (the recipe of the signal module's documentation, "Note on SIGPIPE").
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing flushes it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def console_script(main: Callable[_P, int]) -> Callable[_P, int]:
    """Wrap a console script's ``main``: its exit status, or :data:`EXIT_BROKEN_PIPE` once
    the reader of standard output has gone away. Standard output is flushed inside the
    guard, so a broken pipe is noticed here and not at interpreter exit."""

    @functools.wraps(main)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            try:
                code = main(*args, **kwargs)
            except SystemExit:  # argparse's --help and usage errors: flush here, too
                sys.stdout.flush()
                raise
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        return code

    return run


def yuan(fen: int) -> str:
    """Integer fen as a reader sees money: ``¥1,234.50``, ``-¥0.05``. Exact (no float);
    every console script prints money this way, and fen only in machine output (--json, CSV).
    """
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}¥{whole:,}.{cents:02d}"


def field_text(value: Any) -> str:
    """A ``credit.v1.FieldValue`` as a reader sees it: money in yuan, ``yes``/``no``, ``-``
    when nothing is set (duck-typed: this module imports no protobuf)."""
    kind = value.WhichOneof("kind")
    if kind == "money_fen":
        return yuan(value.money_fen)
    if kind == "boolean":
        return "yes" if value.boolean else "no"
    return "-" if kind is None else str(getattr(value, kind))


def path_arg(text: str) -> Path:
    """An argparse ``type`` for a file or folder named on the command line.

    Raises ``argparse.ArgumentTypeError`` for the empty string, which
    ``pathlib.Path`` would read as the current folder (``--ca ""`` then failed
    with "Is a directory: '.'" far from the flag that caused it).
    """
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)
