"""gateway.report.fonts: the configured font wins; otherwise the first of the documented
paths; none found is a ConfigError that says what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.report import FONT_PATHS, find_font
from gateway.report.pdf import register_font


def test_the_configured_font_wins(tmp_path: Path) -> None:
    mine = tmp_path / "mine.ttf"
    mine.write_bytes(b"not checked here")
    assert find_font(mine, candidates=()) == mine


def test_a_configured_font_that_is_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        find_font(tmp_path / "nope.ttf")
    assert err.value.key == "gateway.report_font"


def test_the_first_existing_candidate_is_taken(tmp_path: Path) -> None:
    second = tmp_path / "b.ttc"
    second.write_bytes(b"")
    assert find_font(None, candidates=(tmp_path / "a.ttc", second)) == second


def test_no_font_at_all_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="install Debian's fonts-wqy-zenhei"):
        find_font(None, candidates=(tmp_path / "a.ttc",))


def test_the_documented_list_starts_with_the_font_ci_installs() -> None:
    assert FONT_PATHS[0] == Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")
    ci = (Path(__file__).resolve().parents[3] / ".ci" / "run").read_text(encoding="utf-8")
    assert "fonts-wqy-zenhei" in ci and "poppler-utils" in ci and str(FONT_PATHS[0]) in ci


def test_a_file_that_is_not_a_font_is_refused_when_loaded(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"\x00\x01\x00\x00 not really a font")
    with pytest.raises(Exception, match="(?i)ttf|font|table|unpack"):
        register_font(bad)
