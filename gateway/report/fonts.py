"""Where the report's Chinese font comes from: a TrueType CJK font of the distribution.

The PDF embeds (a subset of) the font, so a report reads the same on every machine. It
must have TrueType outlines: reportlab embeds TrueType (``.ttf``, and ``.ttc`` collections)
but not CFF/OpenType outlines, which rules out Noto CJK. Looked for, in order:

1. the configured file (``[gateway] report_font`` in the gateway's config);
2. :data:`FONT_PATHS`: WenQuanYi Zen Hei (Debian ``fonts-wqy-zenhei``, the one ``.ci/run``
   installs), WenQuanYi Micro Hei (``fonts-wqy-microhei``), AR PL UMing
   (``fonts-arphic-uming``), Droid Sans Fallback (``fonts-droid-fallback``).

:func:`find_font` raises :class:`~gateway.errors.ConfigError` naming what to install when
none is found; the ``Report`` RPC checks this before it runs the query, so no query is
charged for a report that cannot be made.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import ConfigError

__all__ = ["FONT_PATHS", "find_font"]

#: Debian's TrueType CJK fonts, in the order they are preferred.
FONT_PATHS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
)


def find_font(configured: Path | None = None, candidates: tuple[Path, ...] = FONT_PATHS) -> Path:
    """The CJK TrueType font file to embed: ``configured`` if given, else the first of
    ``candidates`` that exists.

    Raises:
        ConfigError: ``configured`` is not a readable file, or no candidate exists
            (key ``gateway.report_font``; the message says what to install).
    """
    if configured is not None:
        if not configured.is_file():
            raise ConfigError("gateway.report_font", f"{configured} is not a font file")
        return configured
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "gateway.report_font",
        "no TrueType CJK font found for reports (looked for "
        + ", ".join(str(p) for p in candidates)
        + "): install Debian's fonts-wqy-zenhei or set [gateway] report_font",
    )
