"""The closed list of query purposes (``policies/purposes.toml``)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

__all__ = ["Purpose", "default_purposes_path", "load_purposes"]


@dataclass(frozen=True, slots=True)
class Purpose:
    """A purpose an agency may state, with its titles and legal basis."""

    code: str
    title: str
    title_en: str


def default_purposes_path() -> Path:
    """The purposes file shipped with the package (``policies/purposes.toml``)."""
    return Path(__file__).resolve().parents[2] / "policies" / "purposes.toml"


def load_purposes(path: Path | None = None) -> Mapping[str, Purpose]:
    """Load the purpose list. Raises :class:`ConfigError` naming the key."""
    path = path or default_purposes_path()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("purposes", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("purposes", f"{path} is not valid TOML: {exc}") from None
    table = doc.get("purposes")
    if not isinstance(table, dict) or not table:
        raise ConfigError("purposes", "missing or empty table")
    out: dict[str, Purpose] = {}
    for code, raw in table.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("title"), str):
            raise ConfigError(f"purposes.{code}", "needs a title")
        out[code] = Purpose(code, raw["title"], str(raw.get("title_en", code)))
    return out
