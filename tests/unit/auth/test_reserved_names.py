"""Reserved names: no principal may be named like the gateway or a
department, neither by ``certs init`` nor in the registry (and so not in a policy draft)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth.registry import parse_registry
from gateway.dev.pki import certs_main, init_pki
from gateway.domain.purposes import load_purposes
from gateway.errors import ConfigError
from gateway.policyadmin.loading import read_disk_files, validate_files


@pytest.mark.parametrize(
    "ident", ["credit-gateway", "Credit-Gateway", "federation", "gateway", "market"]
)
def test_certs_init_refuses_reserved_names(
    tmp_path: Path, ident: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="reserved|department"):
        init_pki(
            tmp_path / "pki",
            departments=["market"],
            agencies=["bank", ident],
            officers=[],
            auditors=[],
        )
    status = certs_main(
        ["init", str(tmp_path / "cli"), "--departments", "market", "--agencies", ident]
    )
    assert status == 1
    assert ident in capsys.readouterr().err


@pytest.mark.parametrize(
    ("table", "entry", "key"),
    [
        ("agencies", {"credit-gateway": {"kind": "government_body"}}, "agencies.credit-gateway"),
        ("officers", {"federation": {}}, "officers.federation"),
        (
            "agencies",
            {"bank": {"kind": "financial_institution", "certificate_cn": "credit-gateway"}},
            "agencies.bank.certificate_cn",
        ),
        ("auditors", {"a1": {"certificate_cn": "tax.department"}}, "auditors.a1.certificate_cn"),
    ],
)
def test_the_registry_refuses_reserved_names(
    table: str, entry: dict[str, dict[str, str]], key: str
) -> None:
    common = {"name_zh": "名", "name_en": "name", "status": "active"}
    data = {table: {ident: {**common, **fields} for ident, fields in entry.items()}}
    with pytest.raises(ConfigError) as exc:
        parse_registry(data)
    assert exc.value.key == key


def test_the_registry_refuses_a_department_id_when_it_knows_the_departments() -> None:
    common = {"name_zh": "名", "name_en": "name", "status": "active", "kind": "government_body"}
    parse_registry({"agencies": {"tax": common}})  # no departments given: a plain id
    with pytest.raises(ConfigError, match="department"):
        parse_registry({"agencies": {"tax": common}}, departments=["tax", "market"])


def test_a_draft_registering_credit_gateway_fails_validate() -> None:
    files = read_disk_files()
    extra = (
        '\n[agencies.credit-gateway]\nname_zh = "网关"\nname_en = "gateway"\n'
        'status = "active"\nkind = "government_body"\n'
    )
    problems = validate_files(
        {**files, "agencies.toml": files["agencies.toml"] + extra},
        purposes=tuple(load_purposes()),
    )
    assert problems and "credit-gateway" in problems[0] and "reserved" in problems[0]
