"""Writing files that hold a credential (a token, a consent): readable by the
owner only from the moment they exist, never for an instant by others."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_secret"]


def write_secret(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` and a newline to ``path`` with mode 0600 (replacing it).

    Raises OSError if the file cannot be written.
    """
    # The mode is given at creation, so there is no window between creating and chmod-ing.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text.strip() + "\n")
    Path(path).chmod(0o600)  # an existing file keeps its old mode under O_CREAT
