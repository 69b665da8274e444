"""The one strict TOML loader and the one way to find the shipped policies/ files."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.files import load_toml, parse_toml, policies_path, read_file
from gateway.errors import ConfigError


def test_policies_path_finds_the_shipped_files() -> None:
    for name in ("catalog.toml", "purposes.toml", "agencies.toml", "policy.csv", "model.conf"):
        assert policies_path(name).is_file(), name
    assert policies_path("tests").is_dir()


def test_load_toml_reads_utf8_toml(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('title = "信用"\n[table]\nn = 1\n', encoding="utf-8")
    assert load_toml(path, "a") == {"title": "信用", "table": {"n": 1}}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read"),
        (b"[unclosed\n", "is not valid TOML"),
        (b"t = '\xff'\n", "not UTF-8"),
    ],
)
def test_every_failure_is_a_config_error_naming_the_key_and_path(
    tmp_path: Path, content: bytes | None, words: str
) -> None:
    path = tmp_path / "x.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=words) as info:
        load_toml(path, "prices")
    assert info.value.key == "prices"
    assert str(path) in info.value.message


def test_the_key_defaults_to_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as info:
        read_file(tmp_path / "missing.toml")
    assert info.value.key == str(tmp_path / "missing.toml")


def test_parse_toml_without_a_path() -> None:
    assert parse_toml(b"a = 1", "k") == {"a": 1}
    with pytest.raises(ConfigError, match="^k: not valid TOML"):
        parse_toml("a = ", "k")
