"""The portal's settings: file, demo.json, flags; and the command's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.gateway import main
from gateway.errors import ConfigError
from gateway.portal.config import (
    PortalConfig,
    load_portal_config,
    merge,
    parse_listen,
    parse_portal_config,
)


def test_a_whole_file_with_relative_paths(tmp_path: Path) -> None:
    f = tmp_path / "portal.toml"
    f.write_text(
        '[portal]\nlisten = "0.0.0.0:8088"\ngateway = "gw:8443"\nca = "pki/ca.pem"\n'
        'cert = "p.pem"\nkey = "p.key"\ntoken_file = "t.jwt"\nrate_per_minute = 30\n'
        'burst = 5\ntrusted_proxies = ["10.0.0.1"]\ntimeout_s = 4.5\n',
        encoding="utf-8",
    )
    c = load_portal_config(f)
    assert c.listen == "0.0.0.0:8088" and c.gateway == "gw:8443"
    assert c.ca == tmp_path / "pki" / "ca.pem" and c.token_file == tmp_path / "t.jwt"
    assert (c.rate_per_minute, c.burst, c.trusted_proxies, c.timeout_s) == (
        30,
        5,
        ("10.0.0.1",),
        4.5,
    )
    c.require_connection()


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"portal": {"colour": "red"}}, "portal.colour"),
        ({"other": {}}, "other"),
        ({"portal": {"burst": 0}}, "portal.burst"),
        ({"portal": {"burst": 2.0}}, "portal.burst"),
        ({"portal": {"rate_per_minute": -1}}, "portal.rate_per_minute"),
        ({"portal": {"rate_per_minute": True}}, "portal.rate_per_minute"),
        ({"portal": {"timeout_s": float("nan")}}, "portal.timeout_s"),
        ({"portal": {"listen": "8080"}}, "portal.listen"),
        ({"portal": {"listen": "host:99999"}}, "portal.listen"),
        ({"portal": {"ca": ""}}, "portal.ca"),
        ({"portal": {"trusted_proxies": "10.0.0.1"}}, "portal.trusted_proxies"),
        ({"portal": "x"}, "portal"),
    ],
)
def test_a_bad_setting_names_its_key(doc: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_portal_config(doc)
    assert err.value.key == key


def test_the_connection_is_required_naming_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="portal.gateway"):
        PortalConfig().require_connection()
    with pytest.raises(ConfigError, match="portal.token_file"):
        PortalConfig(
            gateway="g:1", ca=Path("a"), cert=Path("b"), key=Path("c")
        ).require_connection()


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ConfigError, match="--listen"):
        merge(PortalConfig(), listen="nowhere", gateway=None)


def _demo(tmp_path: Path) -> Path:
    demo = {
        "gateway_address": "127.0.0.1:1",
        "ca_cert": str(tmp_path / "ca.pem"),
        "agencies": {
            "portal": {
                "cert": str(tmp_path / "portal.pem"),
                "key": str(tmp_path / "portal.key"),
                "token_file": str(tmp_path / "portal.jwt"),
            }
        },
    }
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(demo), encoding="utf-8")
    return path


def test_the_command_refuses_missing_settings_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["portal"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "credit-gateway portal: portal.gateway: missing (give it in the file, by flag or --demo)"
    )


def test_the_command_refuses_files_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # demo.json names files that do not exist: start-up stops naming the token file.
    assert main(["portal", "--demo", str(_demo(tmp_path)), "--listen", "127.0.0.1:0"]) == 2
    assert "portal.jwt" in capsys.readouterr().err


def test_the_command_refuses_an_agency_not_in_demo_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["portal", "--demo", str(_demo(tmp_path)), "--agency", "bank"]) == 2
    assert "--agency must be one of portal" in capsys.readouterr().err


def test_demo_json_fills_in_and_flags_win(tmp_path: Path) -> None:
    from gateway.cli.portal import _parser, settings

    args = _parser().parse_args(
        [
            "--demo",
            str(_demo(tmp_path)),
            "--gateway",
            "elsewhere:9",
            "--burst",
            "3",
            "--trusted-proxy",
            "10.1.1.1",
        ]
    )
    c = settings(args)
    assert c.gateway == "elsewhere:9"
    assert c.cert == tmp_path / "portal.pem" and c.token_file == tmp_path / "portal.jwt"
    assert c.burst == 3 and c.trusted_proxies == ("10.1.1.1",)


def test_the_command_answers_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["portal", "--help"])
    assert done.value.code == 0
    assert "--token-file" in capsys.readouterr().out
