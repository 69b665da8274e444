"""``[objections]``: the objection store (by default beside the policy store), the poll
period and the repair periods file."""

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


def test_none_without_a_policy_store_or_a_section(tmp_path: Path) -> None:
    assert parse_config(DEV, base=tmp_path).objections is None


def test_default_beside_the_policy_store_polled_every_minute(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    doc = {**DEV, "policy": {"store": "state/policy.sqlite"}}
    oc = parse_config(doc, base=tmp_path).objections
    assert oc is not None
    assert oc.store == tmp_path / "state" / "objections.sqlite"
    assert oc.poll_interval_s == 60.0 and oc.repair is None


def test_named_with_its_period_and_repair_file(tmp_path: Path) -> None:
    (tmp_path / "repair.toml").write_text("", encoding="utf-8")
    doc = {
        **DEV,
        "objections": {"store": "o.sqlite", "poll_interval_s": 5, "repair": "repair.toml"},
    }
    oc = parse_config(doc, base=tmp_path).objections
    assert oc is not None
    assert (oc.store, oc.poll_interval_s, oc.repair) == (
        tmp_path / "o.sqlite",
        5.0,
        tmp_path / "repair.toml",
    )


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({}, "objections.store"),
        ({"store": "nowhere/x.sqlite"}, "objections.store"),
        ({"store": "o.sqlite", "poll_interval_s": 0}, "objections.poll_interval_s"),
        ({"store": "o.sqlite", "poll_interval_s": True}, "objections.poll_interval_s"),
        ({"store": "o.sqlite", "repair": "missing.toml"}, "objections.repair"),
        ({"store": "o.sqlite", "poll": 1}, "objections.poll"),
        ("x", "objections"),
    ],
)
def test_a_bad_section_names_its_key(tmp_path: Path, section: Any, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({**DEV, "objections": section}, base=tmp_path)
    assert exc.value.key == key
