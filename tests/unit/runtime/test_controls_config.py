"""``[controls] store``: where the live controls store is, by default beside the policy store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import parse_config

DEV: dict[str, Any] = {
    "gateway": {"insecure_dev_plaintext": True},
    "departments": {"tax": {"address": "127.0.0.1:1"}},
}


def test_no_store_without_a_policy_store(tmp_path: Path) -> None:
    assert parse_config(DEV, base=tmp_path).controls is None


def test_default_beside_the_policy_store(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    doc = {**DEV, "policy": {"store": "state/policy.sqlite"}}
    assert parse_config(doc, base=tmp_path).controls == tmp_path / "state" / "controls.sqlite"


def test_named_relative_to_the_config(tmp_path: Path) -> None:
    doc = {**DEV, "controls": {"store": "live.sqlite"}}
    assert parse_config(doc, base=tmp_path).controls == tmp_path / "live.sqlite"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"store": ""}, "controls.store"),
        ({"store": 3}, "controls.store"),
        ({"store": "nowhere/x.sqlite"}, "controls.store"),
        ({"stor": "x"}, "controls.stor"),
        ("x", "controls"),
    ],
)
def test_a_bad_section_names_its_key(tmp_path: Path, section: Any, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({**DEV, "controls": section}, base=tmp_path)
    assert exc.value.key == key
