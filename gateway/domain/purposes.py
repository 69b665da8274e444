"""The closed list of query purposes (``policies/purposes.toml``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.files import load_toml, policies_path
from gateway.errors import ConfigError

__all__ = ["Purpose", "default_purposes_path", "load_purposes"]


@dataclass(frozen=True, slots=True)
class Purpose:
    """A purpose an agency may state and its title (the file's ``title_en`` is for readers)."""

    code: str
    title: str


def default_purposes_path() -> Path:
    """The purposes file shipped with the package (``policies/purposes.toml``)."""
    return policies_path("purposes.toml")


def load_purposes(path: Path | None = None) -> Mapping[str, Purpose]:
    """Load the purpose list. Raises :class:`ConfigError` naming the key."""
    path = path or default_purposes_path()
    doc = load_toml(path, "purposes")
    table = doc.get("purposes")
    if not isinstance(table, dict) or not table:
        raise ConfigError("purposes", "missing or empty table")
    out: dict[str, Purpose] = {}
    for code, raw in table.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("title"), str):
            raise ConfigError(f"purposes.{code}", "needs a title")
        out[code] = Purpose(code, raw["title"])
    return out
