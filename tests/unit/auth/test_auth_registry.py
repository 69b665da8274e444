"""The agency registry file and its strict loader."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.registry import (
    DEFAULT_REGISTRY_PATH,
    AgencyKind,
    Role,
    Status,
    load_registry,
    parse_registry,
)
from gateway.errors import ConfigError


def test_the_shipped_registry() -> None:
    reg = load_registry()
    ndrc = reg.agency("ndrc")
    assert ndrc is not None
    assert ndrc.kind is AgencyKind.GOVERNMENT_BODY and ndrc.active
    assert "发展和改革委员会" in ndrc.name_zh and ndrc.name_en
    kinds = {a.id: a.kind for a in reg if a.role is Role.AGENCY}
    assert kinds == {
        "ndrc": AgencyKind.GOVERNMENT_BODY,
        "procurement": AgencyKind.GOVERNMENT_BODY,
        "bank": AgencyKind.FINANCIAL_INSTITUTION,
        "guarantor": AgencyKind.GUARANTEE_FIRM,
        "self_service": AgencyKind.SUBJECT_SELF_SERVICE,
        "nogrants": AgencyKind.GOVERNMENT_BODY,
        "suspended_agency": AgencyKind.FINANCIAL_INSTITUTION,
        "portal": AgencyKind.PUBLIC_PORTAL,
    }
    suspended = reg.agency("suspended_agency")
    assert suspended is not None and suspended.status is Status.SUSPENDED
    assert reg.ids(Role.OFFICER) == ("officer_a", "officer_b")
    assert reg.ids("auditors") == ("auditor",)
    assert reg.ids(Role.FINANCE) == ("finance",)
    officer = reg.get(Role.OFFICER, "officer_a")
    assert officer is not None and officer.kind is None
    assert reg.by_certificate(Role.AGENCY, "bank") is reg.agency("bank")
    assert reg.by_certificate(Role.OFFICER, "bank") is None


def _good() -> dict[str, Any]:
    with DEFAULT_REGISTRY_PATH.open("rb") as f:
        return tomllib.load(f)


def _expect(data: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_registry(data)
    assert info.value.key == key
    assert problem in info.value.problem
    assert key in str(info.value)


def test_unknown_table() -> None:
    _expect({**_good(), "agencys": {}}, "agencys", "unknown table")


def test_unknown_field() -> None:
    data = _good()
    data["agencies"]["bank"]["colour"] = "blue"
    _expect(data, "agencies.bank.colour", "unknown field")


def test_kind_is_only_for_agencies() -> None:
    data = _good()
    data["officers"]["officer_a"]["kind"] = "government_body"
    _expect(data, "officers.officer_a.kind", "unknown field")


def test_missing_field() -> None:
    data = _good()
    del data["agencies"]["bank"]["name_en"]
    _expect(data, "agencies.bank.name_en", "missing")


def test_bad_kind() -> None:
    data = _good()
    data["agencies"]["bank"]["kind"] = "bank"
    _expect(data, "agencies.bank.kind", "unknown value 'bank'")


def test_bad_status() -> None:
    data = _good()
    data["agencies"]["bank"]["status"] = "paused"
    _expect(data, "agencies.bank.status", "active, suspended")


def test_wrong_type() -> None:
    data = _good()
    data["agencies"]["bank"]["name_zh"] = 7
    _expect(data, "agencies.bank.name_zh", "non-empty string")


def test_duplicate_certificate_cn() -> None:
    data = _good()
    data["agencies"]["bank"]["certificate_cn"] = "ndrc"
    _expect(data, "agencies.bank.certificate_cn", "already used by ndrc")


def test_certificate_cn_defaults_to_the_id() -> None:
    data = _good()
    del data["agencies"]["bank"]["certificate_cn"]
    bank = parse_registry(data).agency("bank")
    assert bank is not None and bank.certificate_cn == "bank"


def test_bad_id() -> None:
    data = _good()
    data["agencies"]["bad id"] = data["agencies"].pop("bank")
    _expect(data, "agencies.bad id", "ASCII")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_registry(tmp_path / "nope.toml")


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "agencies.toml"
    path.write_text("[agencies.bank\nname = ")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_registry(path)
    assert info.value.key == str(path)
