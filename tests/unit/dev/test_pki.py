"""The development PKI: layout, subjects, key modes, chains, idempotence, CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from gateway.dev.pki import (
    GATEWAY_FEDERATION_OU,
    Pki,
    cert_thumbprint,
    cert_thumbprint_pem,
    certs_main,
    init_pki,
    load_pki,
)
from gateway.errors import ConfigError


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _attr(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_thumbprint_is_rfc8705_x5t_s256(auth_pki: Pki) -> None:
    # base64url without padding of SHA-256("") is a well-known constant.
    assert cert_thumbprint(b"") == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    pem = auth_pki.agency_cert("ndrc").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    thumb = cert_thumbprint_pem(pem)
    assert thumb == cert_thumbprint(der)
    assert len(thumb) == 43 and "=" not in thumb


def test_every_private_key_is_mode_0600(auth_pki: Pki) -> None:
    keys = sorted(auth_pki.root.rglob("*.key"))
    # CA, 2 gateway, 2 departments, 4 agencies, officer, auditor, finance, 2 x 2 issuer keys
    assert len(keys) == 1 + 2 + 2 + 4 + 1 + 1 + 1 + 4
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    for cert in auth_pki.root.rglob("*.pem"):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644, cert


def test_subjects_and_usages(auth_pki: Pki) -> None:
    server = _cert(auth_pki.gateway_server_cert)
    assert _attr(server, NameOID.COMMON_NAME) == ["credit-gateway"]
    assert _eku(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = _cert(auth_pki.gateway_client_cert)
    assert _attr(client, NameOID.COMMON_NAME) == ["credit-gateway"]
    assert _attr(client, NameOID.ORGANIZATIONAL_UNIT_NAME) == [GATEWAY_FEDERATION_OU]
    assert _eku(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    dept = _cert(auth_pki.department_cert("tax"))
    assert _attr(dept, NameOID.COMMON_NAME) == ["tax.department"]
    bank = _cert(auth_pki.agency_cert("bank"))
    assert _attr(bank, NameOID.COMMON_NAME) == ["bank"]
    assert _attr(bank, NameOID.ORGANIZATION_NAME) == ["agency"]
    assert _eku(bank) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _attr(_cert(auth_pki.officer_cert("officer_a")), NameOID.ORGANIZATION_NAME) == [
        "officer"
    ]
    assert _attr(_cert(auth_pki.auditor_cert("auditor")), NameOID.ORGANIZATION_NAME) == ["auditor"]
    fin = _cert(auth_pki.principal_cert("finance", "finance"))
    assert _attr(fin, NameOID.ORGANIZATION_NAME) == ["finance"]


@pytest.mark.parametrize("which", ["gateway", "tax", "court"])
def test_server_certificates_verify_for_localhost_and_loopback(auth_pki: Pki, which: str) -> None:
    path = auth_pki.gateway_server_cert if which == "gateway" else auth_pki.department_cert(which)
    store = Store([_cert(auth_pki.ca_cert)])
    for name in (
        x509.DNSName("localhost"),
        x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
    ):
        verifier = PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(_cert(path), [])
        assert chain[-1] == _cert(auth_pki.ca_cert)


def test_client_certificates_chain_to_the_ca(auth_pki: Pki) -> None:
    verifier = PolicyBuilder().store(Store([_cert(auth_pki.ca_cert)])).build_client_verifier()
    verified = verifier.verify(_cert(auth_pki.agency_cert("ndrc")), [])
    assert verified.subjects is not None
    assert list(verified.subjects) == [
        x509.UniformResourceIdentifier("urn:credit-gateway:agency:ndrc")
    ]
    verifier.verify(_cert(auth_pki.gateway_client_cert), [])


def test_issuer_jwks_have_two_keys_with_kids(auth_pki: Pki) -> None:
    for issuer in (auth_pki.agency_token, auth_pki.consent):
        jwks = json.loads(issuer.jwks.read_text())
        kids = [k["kid"] for k in jwks["keys"]]
        assert sorted(k["alg"] for k in jwks["keys"]) == ["ES256", "EdDSA"]
        assert set(kids) == set(issuer.keys) and issuer.signing_kid == kids[0]
        assert all("d" not in k for k in jwks["keys"]), "private part leaked into the JWKS"
    assert auth_pki.agency_token.issuer != auth_pki.consent.issuer
    assert not set(auth_pki.agency_token.keys) & set(auth_pki.consent.keys)


def test_load_pki_round_trips(auth_pki: Pki) -> None:
    again = load_pki(auth_pki.root)
    assert again.agency_token == auth_pki.agency_token
    assert again.principals == auth_pki.principals
    assert again.agency_key("bank").is_file()


def test_unknown_member_is_a_key_error(auth_pki: Pki) -> None:
    with pytest.raises(KeyError, match="agencies/nobody"):
        auth_pki.agency_cert("nobody")


def test_refuses_a_non_empty_directory_without_force(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        init_pki(tmp_path / "pki", departments=[], agencies=["a"], officers=[], auditors=[])
    # force never deletes a directory that is not a PKI of ours
    with pytest.raises(ConfigError, match="not a PKI"):
        init_pki(
            tmp_path / "pki", departments=[], agencies=["a"], officers=[], auditors=[], force=True
        )
    assert (tmp_path / "pki" / "notes.txt").read_text() == "mine"


def test_empty_directory_is_fine_and_force_replaces(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    out.mkdir()
    first = init_pki(out, departments=[], agencies=["a"], officers=[], auditors=[])
    ca_before = first.ca_cert.read_bytes()
    with pytest.raises(ConfigError):
        init_pki(out, departments=[], agencies=["a"], officers=[], auditors=[])
    assert first.ca_cert.read_bytes() == ca_before
    second = init_pki(out, departments=[], agencies=["b"], officers=[], auditors=[], force=True)
    assert second.ca_cert.read_bytes() != ca_before
    assert not (out / "agencies" / "a.pem").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pki"], "staging left behind"


@pytest.mark.parametrize("bad", [["../x"], ["a b"], [""], ["dup", "dup"]])
def test_invalid_ids_are_refused(tmp_path: Path, bad: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        init_pki(tmp_path / "p", departments=[], agencies=bad, officers=[], auditors=[])
    assert info.value.key == "agencies"
    assert not (tmp_path / "p").exists()


def test_load_pki_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certs init"):
        load_pki(tmp_path)


def test_certs_cli_defaults_to_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pki"
    assert certs_main(["init", str(out), "--departments", "tax,court"]) == 0
    pki = load_pki(out)
    assert pki.departments == ("tax", "court")
    assert "ndrc" in pki.principals["agencies"]
    assert "suspended_agency" in pki.principals["agencies"]
    assert pki.principals["officers"] == ("officer_a", "officer_b")
    assert pki.principals["auditors"] == ("auditor",)
    assert pki.principals["finance"] == ("finance",)
    assert "PKI written" in capsys.readouterr().out
    # again without --force: refused, exit 1, message on stderr
    assert certs_main(["init", str(out), "--agencies", "x"]) == 1
    assert "--force" in capsys.readouterr().err
    assert certs_main(["init", str(out), "--agencies", "x", "--force"]) == 0
    assert load_pki(out).principals["agencies"] == ("x",)


def test_certs_cli_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert certs_main([]) == 2
    assert certs_main(["frobnicate"]) == 2
    capsys.readouterr()


def test_certs_crl_lists_certificates_and_serials_signed_by_the_ca(
    tmp_path: Path,
) -> None:
    from cryptography import x509

    from gateway.api.controls import verify_crl
    from gateway.dev.pki import certs_main, init_pki
    from gateway.errors import InvalidArgumentError

    pki = init_pki(
        tmp_path / "pki", departments=["tax"], agencies=["bank"], officers=[], auditors=[]
    )
    out = tmp_path / "ca.crl"
    argv = ["crl", str(pki.root), "--cert", str(pki.agency_cert("bank")), "--serial", "0x1F"]
    argv += ["--out", str(out)]
    assert certs_main(argv) == 0
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    bank = x509.load_pem_x509_certificate(pki.agency_cert("bank").read_bytes())
    assert sorted(verify_crl(out.read_bytes(), ca)) == sorted(
        [format(bank.serial_number, "x"), "1f"]
    )
    assert certs_main(["crl", str(pki.root), "--serial", "zz", "--out", str(out)]) == 2
    other = init_pki(
        tmp_path / "other", departments=["tax"], agencies=["bank"], officers=[], auditors=[]
    )
    assert certs_main(["crl", str(other.root), "--serial", "1", "--out", str(out)]) == 0
    with pytest.raises(InvalidArgumentError):
        verify_crl(out.read_bytes(), ca)  # another CA's CRL
    with pytest.raises(InvalidArgumentError):
        verify_crl(b"garbage", ca)
