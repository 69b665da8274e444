"""A development PKI for credit-gateway: one CA, every TLS certificate, token issuer keys.

:func:`init_pki` writes a directory that a demo or a test can use as-is::

    DIR/
      pki.json                      manifest: names, subjects, issuers and kids (read by load_pki)
      ca.pem  ca.key                the development CA (ECDSA P-256, self-signed)
      gateway/server.pem|key        the gateway's TLS server certificate (CN credit-gateway)
      gateway/federation.pem|key    the client certificate the gateway presents to departments
                                    (CN credit-gateway, OU credit-gateway-federation, and
                                    the one identity departments accept: SAN URI
                                    urn:credit-gateway:federation)
      departments/<id>.pem|key      each department adapter's server certificate
                                    (CN <id>.department, O department)
      agencies/<id>.pem|key         each agency's client certificate (CN <id>, O agency)
      officers/<id>.pem|key         security officers (CN <id>, O officer)
      auditors/<id>.pem|key         auditors (CN <id>, O auditor)
      finance/<id>.pem|key          finance staff (CN <id>, O finance)
      issuers/agency-token/         the agency-token issuer: jwks.json (public) and <kid>.key
      issuers/consent/              the consent issuer: jwks.json (public) and <kid>.key

Every server certificate names ``DNS:localhost`` and ``IP:127.0.0.1`` so that loopback tests
verify host names for real. Private keys are PKCS#8 PEM created with mode 0600 (never wider,
not even for an instant: the file is opened with that mode). The token issuers each get an
Ed25519 key (EdDSA, the one they sign with) and an ECDSA P-256 key (ES256) so that a JWKS with
two keys, and hence key rotation, is exercised from the first day.

**Who may read a department.** Departments accept exactly one client identity, the URI SAN
:data:`FEDERATION_IDENTITY` (``urn:credit-gateway:federation``), and never a common name: any
holder of a certificate from the CA can choose its CN (an agency registered as
``credit-gateway`` could), but only the federation certificate carries that URI. Every other
client certificate made here carries ``urn:credit-gateway:<O>:<id>`` (one more segment, so no
id can spell the federation identity), and ids in :data:`RESERVED_NAMES`, or equal to a
department's id, are refused. A URI SAN, rather than a new extended key usage, because it is
the SPIFFE-style workload identity every TLS stack can show and check, and it needs no
private OID arc; a department wanting more may also give ``--client-ca`` a CA that issues
only the federation certificate.

An organisation replaces all of this with its own CA; ``certs/README.md`` says how.

Why one module (some 700 lines): the whole development PKI (CA, leaves, issuers,
manifest and the ``certs`` command) reads top to bottom in one place, and nothing in
production imports it; what production needs of certificates is :mod:`gateway.auth.certs`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.auth.certs import (
    FEDERATION_IDENTITY,
    GATEWAY_CN,
    GATEWAY_FEDERATION_OU,
    RESERVED_NAMES,
    ROLE_ORGANIZATIONS,
    _b64url,
    cert_thumbprint,
    cert_thumbprint_pem,
    reserved_name_problem,
)
from gateway.auth.registry import load_registry
from gateway.cli.console import path_arg
from gateway.errors import ConfigError

__all__ = [
    "DEV_AGENCY_ISSUER",
    "DEV_CONSENT_ISSUER",
    "FEDERATION_IDENTITY",
    "GATEWAY_CN",
    "GATEWAY_FEDERATION_OU",
    "MANIFEST_NAME",
    "RESERVED_NAMES",
    "ROLE_ORGANIZATIONS",
    "IssuerKeys",
    "Pki",
    "cert_thumbprint",
    "cert_thumbprint_pem",
    "certs_main",
    "init_pki",
    "issue_crl",
    "load_pki",
    "reserved_name_problem",
]

#: The manifest :func:`load_pki` reads; also the mark that a directory is ours (``force``).
MANIFEST_NAME = "pki.json"
#: ``iss`` of agency tokens in the development PKI.
DEV_AGENCY_ISSUER = "urn:credit-gateway:dev:agency-token-issuer"
#: ``iss`` of consent tokens in the development PKI.
DEV_CONSENT_ISSUER = "urn:credit-gateway:dev:consent-issuer"
# Long enough for a demo machine to live with, short enough to be obviously not production.
_CA_DAYS = 3650
_LEAF_DAYS = 825
# Client certificates carry SAN URI urn:credit-gateway:<O>:<id> (see _issue_leaf): one segment
# more than FEDERATION_IDENTITY, so no principal's certificate can carry that identity.
_URI_PREFIX = "urn:credit-gateway:"
# Issued a little in the past so that a peer whose clock runs slightly behind still accepts it.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class IssuerKeys:
    """One token issuer: its ``iss``, its public JWKS and its private keys by ``kid``.

    ``signing_kid`` is the key new tokens are signed with (Ed25519); the others are in the
    JWKS so that tokens signed before or after a rotation still verify.
    """

    issuer: str
    jwks: Path
    keys: dict[str, Path]
    signing_kid: str

    def key(self, kid: str | None = None) -> Path:
        """The private key file for ``kid`` (default: the signing key).

        Raises:
            KeyError: no such kid.
        """
        return self.keys[kid or self.signing_kid]


@dataclass(frozen=True)
class Pki:
    """Paths of a PKI made by :func:`init_pki` (or read back by :func:`load_pki`)."""

    root: Path
    departments: tuple[str, ...]
    principals: dict[str, tuple[str, ...]]  # role directory -> ids
    agency_token: IssuerKeys
    consent: IssuerKeys

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (PEM)."""
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (PKCS#8 PEM, mode 0600)."""
        return self.root / "ca.key"

    @property
    def gateway_server_cert(self) -> Path:
        """The gateway's TLS server certificate (PEM)."""
        return self.root / "gateway" / "server.pem"

    @property
    def gateway_server_key(self) -> Path:
        """The gateway's TLS server key (PKCS#8 PEM, mode 0600)."""
        return self.root / "gateway" / "server.key"

    @property
    def gateway_client_cert(self) -> Path:
        """The gateway's federation client certificate (PEM, SAN URI FEDERATION_IDENTITY)."""
        return self.root / "gateway" / "federation.pem"

    @property
    def gateway_client_key(self) -> Path:
        """The gateway's federation client key (PKCS#8 PEM, mode 0600)."""
        return self.root / "gateway" / "federation.key"

    def department_cert(self, dept: str) -> Path:
        """A department adapter's server certificate (PEM).

        Raises:
            ConfigError: ``dept`` is not in this PKI.
        """
        return self._member("departments", dept, ".pem", self.departments)

    def department_key(self, dept: str) -> Path:
        """A department adapter's server key (PKCS#8 PEM, mode 0600).

        Raises:
            ConfigError: ``dept`` is not in this PKI.
        """
        return self._member("departments", dept, ".key", self.departments)

    def agency_cert(self, agency_id: str) -> Path:
        """An agency's client certificate (PEM)."""
        return self.principal_cert("agencies", agency_id)

    def agency_key(self, agency_id: str) -> Path:
        """An agency's client key (PKCS#8 PEM, mode 0600)."""
        return self.principal_key("agencies", agency_id)

    def officer_cert(self, officer_id: str) -> Path:
        """A security officer's client certificate (PEM)."""
        return self.principal_cert("officers", officer_id)

    def officer_key(self, officer_id: str) -> Path:
        """A security officer's client key (PKCS#8 PEM, mode 0600)."""
        return self.principal_key("officers", officer_id)

    def auditor_cert(self, auditor_id: str) -> Path:
        """An auditor's client certificate (PEM)."""
        return self.principal_cert("auditors", auditor_id)

    def principal_cert(self, role_dir: str, ident: str) -> Path:
        """Certificate of a principal; ``role_dir`` is a key of :data:`ROLE_ORGANIZATIONS`.

        Raises:
            KeyError: the PKI has no such principal (a typo should not read as "file missing").
        """
        return self._member(role_dir, ident, ".pem", self.principals.get(role_dir, ()))

    def principal_key(self, role_dir: str, ident: str) -> Path:
        """Private key of a principal. Raises KeyError as :meth:`principal_cert`."""
        return self._member(role_dir, ident, ".key", self.principals.get(role_dir, ()))

    def _member(self, folder: str, ident: str, suffix: str, known: Sequence[str]) -> Path:
        if ident not in known:
            raise KeyError(f"{folder}/{ident}: not in this PKI")
        return self.root / folder / f"{ident}{suffix}"

    def read(self, path: Path) -> bytes:
        """The bytes of one of this PKI's files (helper for ``grpc.ssl_*_credentials``)."""
        return path.read_bytes()


# --- key and certificate making ------------------------------------------------------


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL + mode at creation: the key is never readable by others, not even briefly,
    # and an existing file is never silently replaced.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    # The umask may have narrowed the mode further; it can never have widened it, but
    # set it explicitly so that the documented mode is exactly what is on disk.
    path.chmod(0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o644)


def _name(cn: str, *, o: str | None = None, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


@dataclass(frozen=True)
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _make_ca(now: dt.datetime) -> _Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name("credit-gateway development CA", o="credit-gateway (development only)")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Ca(key, cert)


def _issue_leaf(
    ca: _Ca,
    subject: x509.Name,
    *,
    server: bool,
    now: dt.datetime,
    client_uri: str | None = None,
    server_name: str | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    if server:
        # Loopback names only: the development PKI is for one machine. TLS host-name checks
        # stay on in every test because the certificate really names what the client dials.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    # A department's own name, which the gateway checks, so that one
                    # department's key cannot answer for another.
                    *([x509.DNSName(server_name)] if server_name else []),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    x509.IPAddress(ipaddress.IPv6Address("::1")),
                ]
            ),
            critical=False,
        )
    elif client_uri is not None:
        # RFC 5280 profiles (and strict verifiers such as cryptography's) want a SAN on every
        # end-entity certificate; the gateway itself identifies clients by subject CN and O.
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(client_uri)]),
            critical=False,
        )
    return key, builder.sign(ca.key, hashes.SHA256())


def _write_leaf(
    folder: Path, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    _write_public(folder / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write_private(folder / f"{stem}.key", key)


def _jwk(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> dict[str, str]:
    """The public JWK of ``key`` with an RFC 7638 thumbprint as ``kid`` suffix."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        alg, label = "EdDSA", "ed25519"
    else:
        numbers = key.public_key().public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
        alg, label = "ES256", "es256"
    # RFC 7638: SHA-256 over the required members, sorted, no white space. A kid derived
    # from the key cannot collide across re-initialised PKIs, and stays readable.
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    kid = f"{label}-{_b64url(hashlib.sha256(canonical).digest())[:16]}"
    return {**members, "kid": kid, "alg": alg, "use": "sig"}


def _make_issuer(folder: Path, issuer: str) -> IssuerKeys:
    folder.mkdir(parents=True)
    signing = ed25519.Ed25519PrivateKey.generate()
    second = ec.generate_private_key(ec.SECP256R1())
    jwks: list[dict[str, str]] = []
    keys: dict[str, Path] = {}
    for key in (signing, second):
        jwk = _jwk(key)
        path = folder / f"{jwk['kid']}.key"
        _write_private(path, key)
        keys[jwk["kid"]] = path
        jwks.append(jwk)
    jwks_path = folder / "jwks.json"
    _write_public(jwks_path, (json.dumps({"keys": jwks}, indent=2) + "\n").encode())
    return IssuerKeys(issuer=issuer, jwks=jwks_path, keys=keys, signing_kid=jwks[0]["kid"])


# --- the directory ---------------------------------------------------------------------


def _check_ids(
    kind: str, ids: Sequence[str], *, departments: Sequence[str] | None = None
) -> tuple[str, ...]:
    seen: set[str] = set()
    for ident in ids:
        # Ids become file names and certificate CNs: keep them to a safe, boring alphabet.
        if not ident or not all(c.isascii() and (c.isalnum() or c in "_-") for c in ident):
            raise ConfigError(kind, f"invalid id {ident!r}: use ASCII letters, digits, _ and -")
        if departments is not None:
            problem = reserved_name_problem(ident, departments)
            if problem is not None:
                raise ConfigError(kind, problem)
        if ident in seen:
            raise ConfigError(kind, f"duplicate id {ident!r}")
        seen.add(ident)
    return tuple(ids)


def init_pki(
    out_dir: Path,
    *,
    departments: Sequence[str],
    agencies: Sequence[str],
    officers: Sequence[str],
    auditors: Sequence[str],
    finance: Sequence[str] = (),
    force: bool = False,
    agency_token_issuer: str = DEV_AGENCY_ISSUER,
    consent_issuer: str = DEV_CONSENT_ISSUER,
) -> Pki:
    """Create a development PKI in ``out_dir`` (layout in the module docstring).

    ``out_dir`` may be missing or empty. A non-empty directory is refused unless ``force``;
    with ``force`` it is replaced only if it holds a ``pki.json`` (a PKI this function made),
    so that a mistyped path never deletes somebody's files. The new PKI is built in a sibling
    temporary directory and moved into place, so a failure leaves the old one untouched.

    Raises:
        ConfigError: ``out_dir`` exists and is not empty (without ``force``), or is not a PKI
            made here (with ``force``), or an id is invalid, repeated or reserved (see
            :func:`reserved_name_problem`: ``--agencies credit-gateway`` is refused).
    """
    out_dir = Path(out_dir)
    dept_ids = _check_ids("departments", departments)
    # A principal named like the gateway or a department could be taken for it by whoever
    # still identifies peers by name; refuse it before any certificate is made.
    principals = {
        "agencies": _check_ids("agencies", agencies, departments=dept_ids),
        "officers": _check_ids("officers", officers, departments=dept_ids),
        "auditors": _check_ids("auditors", auditors, departments=dept_ids),
        "finance": _check_ids("finance", finance, departments=dept_ids),
    }
    replace = False
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(str(out_dir), "exists and is not a directory")
        if any(out_dir.iterdir()):
            if not force:
                raise ConfigError(
                    str(out_dir), "directory is not empty; pass force=True (--force) to replace it"
                )
            if not (out_dir / MANIFEST_NAME).is_file():
                raise ConfigError(
                    str(out_dir),
                    f"has no {MANIFEST_NAME}: not a PKI made by credit-gateway, refusing to"
                    " replace it even with --force",
                )
            replace = True
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        now = dt.datetime.now(dt.UTC)
        manifest = _build(staging, now, dept_ids, principals, agency_token_issuer, consent_issuer)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it 0700; the public files should be readable
        if replace:
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            staging.rename(out_dir)
            shutil.rmtree(old)
        else:
            with contextlib.suppress(FileNotFoundError):
                out_dir.rmdir()  # empty (checked above); rename needs the name free
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_pki(out_dir)


def _build(
    root: Path,
    now: dt.datetime,
    departments: tuple[str, ...],
    principals: dict[str, tuple[str, ...]],
    agency_token_issuer: str,
    consent_issuer: str,
) -> dict[str, Any]:
    ca = _make_ca(now)
    _write_public(root / "ca.pem", ca.cert.public_bytes(serialization.Encoding.PEM))
    _write_private(root / "ca.key", ca.key)

    gw = root / "gateway"
    gw.mkdir()
    _write_leaf(gw, "server", *_issue_leaf(ca, _name(GATEWAY_CN), server=True, now=now))
    _write_leaf(
        gw,
        "federation",
        *_issue_leaf(
            ca,
            _name(GATEWAY_CN, ou=GATEWAY_FEDERATION_OU),
            server=False,
            now=now,
            client_uri=FEDERATION_IDENTITY,
        ),
    )

    (root / "departments").mkdir()
    for dept in departments:
        subject = _name(f"{dept}.department", o="department")
        leaf = _issue_leaf(ca, subject, server=True, now=now, server_name=f"{dept}.department")
        _write_leaf(root / "departments", dept, *leaf)

    for role_dir, ids in principals.items():
        (root / role_dir).mkdir()
        for ident in ids:
            org = ROLE_ORGANIZATIONS[role_dir]
            uri = f"{_URI_PREFIX}{org}:{ident}"
            leaf = _issue_leaf(ca, _name(ident, o=org), server=False, now=now, client_uri=uri)
            _write_leaf(root / role_dir, ident, *leaf)

    issuers = {}
    for label, iss in (("agency-token", agency_token_issuer), ("consent", consent_issuer)):
        keys = _make_issuer(root / "issuers" / label, iss)
        issuers[label] = {
            "issuer": iss,
            "jwks": f"issuers/{label}/jwks.json",
            "signing_kid": keys.signing_kid,
            "keys": {kid: f"issuers/{label}/{p.name}" for kid, p in keys.keys.items()},
        }
    return {
        "format": 1,
        "created": now.isoformat(timespec="seconds"),
        "departments": list(departments),
        "principals": {k: list(v) for k, v in principals.items()},
        "issuers": issuers,
    }


def _issuer_from(root: Path, data: dict[str, Any]) -> IssuerKeys:
    return IssuerKeys(
        issuer=str(data["issuer"]),
        jwks=root / data["jwks"],
        keys={str(kid): root / p for kid, p in data["keys"].items()},
        signing_kid=str(data["signing_kid"]),
    )


def load_pki(root: Path) -> Pki:
    """Read back a PKI made by :func:`init_pki` from its ``pki.json``.

    Raises:
        ConfigError: no manifest, or one this version cannot read.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
        issuers = data["issuers"]
        return Pki(
            root=root,
            departments=tuple(data["departments"]),
            principals={k: tuple(v) for k, v in data["principals"].items()},
            agency_token=_issuer_from(root, issuers["agency-token"]),
            consent=_issuer_from(root, issuers["consent"]),
        )
    except FileNotFoundError:
        raise ConfigError(str(path), "missing: run `credit-gateway certs init` first") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(str(path), f"unreadable PKI manifest ({exc!r})") from None


# --- CLI -------------------------------------------------------------------------------


def issue_crl(
    pki: Pki,
    *,
    certs: Sequence[Path] = (),
    serials: Sequence[int] = (),
    days: int = 7,
    now: dt.datetime | None = None,
) -> bytes:
    """A CRL (PEM) signed by the development CA listing ``certs`` (PEM files) and ``serials``,
    valid ``days`` days: what ``credit-gateway controls revoke-cert --crl`` takes.

    Raises:
        ConfigError: a certificate file cannot be read, or the CA key cannot be loaded.
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        listed = list(serials) + [
            x509.load_pem_x509_certificate(p.read_bytes()).serial_number for p in certs
        ]
    except (OSError, ValueError) as exc:
        raise ConfigError("certs", f"cannot make the CRL: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("ca_key", "the development CA key is not a P-256 key")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
    )
    for serial in dict.fromkeys(listed):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def certs_main(
    argv: list[str],
    *,
    default_departments: Sequence[str] = (),
    registry_path: Path | None = None,
) -> int:
    """``credit-gateway certs init DIR [--departments a,b] [--agencies ...] [--force]``.

    Lists not given on the command line come from the agency registry (``--registry``,
    default ``policies/agencies.toml``): every agency, officer, auditor and finance member
    gets a certificate. Departments default to ``default_departments``, which the main CLI
    passes from its department configuration. Returns the exit status (0 ok, 1 refused,
    2 usage error) and prints errors to stderr.
    """
    parser = argparse.ArgumentParser(prog="credit-gateway certs", description=certs_main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a development CA, certificates and issuer keys")
    init.add_argument("dir", type=path_arg)
    init.add_argument("--departments", type=_csv, help="comma-separated department ids")
    init.add_argument("--agencies", type=_csv, help="comma-separated agency ids")
    init.add_argument("--officers", type=_csv, help="comma-separated security officer ids")
    init.add_argument("--auditors", type=_csv, help="comma-separated auditor ids")
    init.add_argument("--finance", type=_csv, help="comma-separated finance staff ids")
    init.add_argument("--registry", type=path_arg, default=registry_path, help="agency registry")
    init.add_argument("--force", action="store_true", help="replace an existing PKI")
    crl = sub.add_parser("crl", help="a CRL of the development CA revoking certificates")
    crl.add_argument("dir", type=path_arg, help="the PKI folder")
    crl.add_argument(
        "--cert", type=path_arg, action="append", default=[], help="a certificate to list"
    )
    crl.add_argument(
        "--serial", action="append", default=[], help="a hex serial to list (repeatable)"
    )
    crl.add_argument("--days", type=int, default=7, help="valid this many days (default 7)")
    crl.add_argument("--out", type=path_arg, required=True, help="write the CRL (PEM) here")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    if args.command == "crl":
        try:
            serials = [int(s.lower().removeprefix("0x").replace(":", ""), 16) for s in args.serial]
        except ValueError:
            print("credit-gateway certs: --serial must be hex", file=sys.stderr)
            return 2
        try:
            data = issue_crl(load_pki(args.dir), certs=args.cert, serials=serials, days=args.days)
            args.out.write_bytes(data)
        except (ConfigError, OSError) as exc:
            print(f"credit-gateway certs: {exc}", file=sys.stderr)
            return 1
        print(f"CRL written to {args.out}")
        return 0

    try:
        lists: dict[str, list[str]] = {}
        for role in ("agencies", "officers", "auditors", "finance"):
            given = getattr(args, role)
            if given is None:
                given = list(load_registry(args.registry).ids(role))
            lists[role] = given
        pki = init_pki(
            args.dir,
            departments=args.departments if args.departments is not None else default_departments,
            agencies=lists["agencies"],
            officers=lists["officers"],
            auditors=lists["auditors"],
            finance=lists["finance"],
            force=args.force,
        )
    except ConfigError as exc:
        print(f"credit-gateway certs: {exc}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{len(v)} {k}" for k, v in pki.principals.items())
    print(
        f"PKI written to {pki.root}: CA, gateway, {len(pki.departments)} departments, {summary};"
        f" agency-token issuer {pki.agency_token.issuer} signing kid {pki.agency_token.signing_kid}"
    )
    return 0
