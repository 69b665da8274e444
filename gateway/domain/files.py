"""The files the gateway reads: the shipped ``policies/`` package and strict TOML.

* :func:`policies_path`: where a file shipped in the ``policies`` package lies, found through
  :mod:`importlib.resources` (so an installed wheel finds it as a checkout does);
* :func:`load_toml` and :func:`parse_toml`: UTF-8 TOML (TOML 1.0) read into a dict, every
  failure a :class:`~gateway.errors.ConfigError` whose key names the file or the setting
  and whose message names the path: "cannot read PATH: file not found", "cannot read PATH:
  REASON", "PATH is not valid TOML: WHERE".
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

__all__ = ["load_toml", "parse_toml", "policies_path", "read_file"]


def policies_path(*parts: str) -> Path:
    """The path of ``policies/<parts...>`` as shipped with the package (it may not exist)."""
    return Path(str(resources.files("policies").joinpath(*parts)))


def parse_toml(text: str | bytes, key: str, *, path: Path | str | None = None) -> dict[str, Any]:
    """``text`` (bytes: UTF-8) as a TOML document.

    Raises:
        ConfigError: (key ``key``) the text is not UTF-8 or not valid TOML; the message names
            ``path`` when given.
    """
    where = f"{path} is not valid TOML" if path is not None else "not valid TOML"
    try:
        return tomllib.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as exc:
        raise ConfigError(key, f"{where} (not UTF-8): {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"{where}: {exc}") from None


def read_file(path: Path, key: str | None = None) -> bytes:
    """The bytes of ``path``.

    Raises:
        ConfigError: (key ``key``, by default the path) the file is missing or unreadable.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(path) if key is None else key, f"cannot read {path}: file not found"
        ) from None
    except OSError as exc:
        raise ConfigError(
            str(path) if key is None else key, f"cannot read {path}: {exc.strerror}"
        ) from None


def load_toml(path: Path, key: str | None = None) -> dict[str, Any]:
    """The TOML document in the UTF-8 file ``path``.

    Raises:
        ConfigError: (key ``key``, by default the path) the file is missing, cannot be read,
            is not UTF-8 or is not valid TOML.
    """
    return parse_toml(read_file(path, key), str(path) if key is None else key, path=path)
