"""PostgreSQL connection URLs, checked without the driver (the configuration loader
uses this; standard library only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PgConfigError", "PgTarget", "check_url"]


class PgConfigError(ValueError):
    """A PostgreSQL URL or its password source is unusable; the message names the
    problem and never repeats a password."""


def check_url(url: str) -> str:
    """Return ``url`` if it is a ``postgresql://`` (or ``postgres://``) URL without a
    password. Raises :class:`PgConfigError` otherwise."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an invalid IPv6 literal
        raise PgConfigError("not a valid URL") from exc
    if parts.scheme not in ("postgresql", "postgres"):
        raise PgConfigError("must start with postgresql://")
    if parts.password is not None or "password=" in parts.query:
        raise PgConfigError(
            "must not contain a password: use password_file or password_env in [storage]"
        )
    return url


@dataclass(frozen=True, slots=True)
class PgTarget:
    """Where a store's database is: ``url`` (no password) and where its password is
    read from, if anywhere (``password_file`` wins over ``password_env``)."""

    url: str
    password_file: Path | None = None
    password_env: str | None = None
    connect_timeout_s: int = 5
    application_name: str = "credit-gateway"

    def __post_init__(self) -> None:
        check_url(self.url)

    def kwargs(self) -> dict[str, Any]:
        """libpq keyword arguments to pass beside :attr:`url`. Raises
        :class:`PgConfigError` when the password source is named but unreadable."""
        kw: dict[str, Any] = {
            "connect_timeout": self.connect_timeout_s,
            "application_name": self.application_name,
        }
        password = self._password()
        if password is not None:
            kw["password"] = password
        return kw

    def _password(self) -> str | None:
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PgConfigError(
                    f"storage.password_file cannot be read: {exc.strerror}"
                ) from None
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise PgConfigError(f"storage.password_env: {self.password_env} is not set")
            return value
        return None
