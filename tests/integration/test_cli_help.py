"""``--help`` answers, exit 0, for every command and subcommand of every console script
(it once failed on certs, token, consent, billing and policy).

The console scripts come from pyproject.toml, and the subcommands from the argparse parsers
themselves: whichever parser prints the help is recorded, and each of its subparsers is
walked in turn, so a script, command or subcommand added later is covered without editing
this test. The installed scripts answer too (one subprocess each)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
BIN = Path(sys.executable).parent


def _entry(target: str) -> Callable[[list[str]], Any]:
    module, _, name = target.partition(":")
    main: Callable[[list[str]], Any] = getattr(importlib.import_module(module), name)
    return main


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    # credit-gateway configures the root logger before delegating; keep pytest's handlers.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    casbin = logging.getLogger("casbin").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("casbin").setLevel(casbin)


def _help(main: Callable[[list[str]], Any], argv: list[str]) -> tuple[Any, str, list[Any]]:
    """Run ``main(argv + ['--help'])``: (exit status, standard output, parsers that printed)."""
    printed: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.print_help

    def spy(self: argparse.ArgumentParser, file: Any = None) -> None:
        printed.append(self)
        real(self, file)

    out, err = io.StringIO(), io.StringIO()
    with (
        _logging_kept(),
        mock.patch.object(argparse.ArgumentParser, "print_help", spy),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main([*argv, "--help"])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue() + err.getvalue(), printed


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]


def _walk(script: str) -> list[list[str]]:
    """Every command path of ``script`` that --help reached, asserting each exits 0."""
    main = _entry(SCRIPTS[script])
    seen: list[list[str]] = []
    todo: list[list[str]] = [[]]
    while todo:
        path = todo.pop(0)
        code, text, printed = _help(main, path)
        where = " ".join([script, *path, "--help"])
        assert code in (0, None), f"{where}: exit {code}\n{text}"
        assert printed and "usage:" in text, f"{where}: printed no help\n{text}"
        shown = printed[-1]
        assert shown.prog.split() == [script, *path], f"{where}: printed {shown.prog}'s help"
        seen.append(path)
        todo += [[*path, name] for name in _subcommands(shown)]
    return seen


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_answers_for_every_subcommand(script: str) -> None:
    assert _walk(script)[0] == []  # the script itself, then each subcommand


def test_the_walk_reaches_the_delegated_commands() -> None:
    """The walk is not vacuous: it reaches the commands whose --help used to fail, and
    their own subcommands."""
    paths = {" ".join(p) for p in _walk("credit-gateway")}
    for path in ("certs init", "token issue", "consent issue", "billing statement",
                 "policy draft", "policy replay", "serve", "demo"):  # fmt: skip
        assert path in paths
    assert {"verify", "history", "who"} <= {" ".join(p) for p in _walk("credit-audit")}
    assert {"serve", "describe"} <= {" ".join(p) for p in _walk("credit-adapter")}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_installed_script_answers_help(script: str) -> None:
    proc = subprocess.run(
        [str(BIN / script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {script}")
