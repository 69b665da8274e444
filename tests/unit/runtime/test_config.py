"""Configuration errors name the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import load_config, parse_config

DEV = {
    "gateway": {"insecure_dev_plaintext": True},
    "departments": {"tax": {"address": "127.0.0.1:1"}},
}


def test_minimal_development_config(tmp_path: Path) -> None:
    config = parse_config(DEV, base=tmp_path)
    assert config.departments["tax"].address == "127.0.0.1:1"
    assert config.tls is None and config.insecure_dev_plaintext


@pytest.mark.parametrize(
    ("doc", "key", "words"),
    [
        ({"departments": {"tax": {"address": "127.0.0.1:1"}}}, "tls", "mutual TLS"),
        ({**DEV, "departments": {}}, "departments", "missing"),
        ({**DEV, "departments": {"tax": {}}}, "departments.tax.address", "missing"),
        (
            {**DEV, "departments": {"tax": {"address": "nowhere"}}},
            "departments.tax.address",
            "HOST:PORT",
        ),
        (
            {**DEV, "departments": {"tax": {"address": "h:1", "timeout_ms": -5}}},
            "departments.tax.timeout_ms",
            "integer",
        ),
        (
            {**DEV, "departments": {"tax": {"address": "h:1", "colour": 1}}},
            "departments.tax.colour",
            "unknown key",
        ),
        (
            {**DEV, "gateway": {"insecure_dev_plaintext": True, "listen": 8443}},
            "gateway.listen",
            "HOST:PORT",
        ),
        (
            {**DEV, "gateway": {"insecure_dev_plaintext": "yes"}},
            "gateway.insecure_dev_plaintext",
            "true or false",
        ),
        (
            {**DEV, "tls": {"cert": "absent.pem", "key": "k", "client_ca": "c"}},
            "tls.cert",
            "file not found",
        ),
        ({**DEV, "federation": {"ca": "x"}}, "federation.ca", "file not found"),
        ({**DEV, "extra": {}}, "extra", "unknown section"),
        ({"departments": {"tax": {"address": "h:1"}}, "tls": {}}, "tls.cert", "missing"),
        ({**DEV, "auth": {"issuers": []}}, "auth.audience", "missing"),
        ({**DEV, "auth": {"audience": "gw"}}, "auth.issuers", "missing"),
        (
            {**DEV, "auth": {"audience": "gw", "issuers": [{"issuer": "i"}]}},
            "auth.issuers[0].jwks",
            "missing",
        ),
    ],
)
def test_bad_config_names_key(tmp_path: Path, doc: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as exc:
        parse_config(doc, base=tmp_path)
    assert exc.value.key == key


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    (tmp_path / "c.pem").write_text("x", encoding="utf-8")
    (tmp_path / "c.key").write_text("x", encoding="utf-8")
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        '[tls]\ncert = "c.pem"\nkey = "c.key"\nclient_ca = "ca.pem"\n'
        '[auth]\naudience = "gw"\n[[auth.issuers]]\nissuer = "i"\njwks = "ca.pem"\n'
        '[audit]\npath = "audit.sqlite"\nkey = "c.key"\npseudonym_key = "c.key"\n'
        '[federation]\nca = "ca.pem"\nclient_cert = "c.pem"\nclient_key = "c.key"\n'
        '[departments.tax]\naddress = "localhost:50061"\n',
        encoding="utf-8",
    )
    config = load_config(cfg)
    assert config.tls is not None and config.tls.cert == tmp_path / "c.pem"
    assert config.federation.ca == tmp_path / "ca.pem"
    assert config.auth is not None and config.auth.issuers[0].jwks == tmp_path / "ca.pem"


def test_tls_without_audit_is_refused(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    doc = {
        "tls": {"cert": "c.pem", "key": "c.key", "client_ca": "ca.pem"},
        "auth": {"audience": "gw", "issuers": [{"issuer": "i", "jwks": "ca.pem"}]},
        "federation": {"ca": "ca.pem", "client_cert": "c.pem", "client_key": "c.key"},
        "departments": {"tax": {"address": "localhost:1"}},
    }
    with pytest.raises(
        ConfigError, match="no query is answered without a durable audit record"
    ) as exc:
        parse_config(doc, base=tmp_path)
    assert exc.value.key == "audit"
