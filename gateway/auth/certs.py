"""What production needs to know about certificates: thumbprints and reserved names.

* :func:`cert_thumbprint`: the RFC 8705 section 3.1 ``x5t#S256`` confirmation that binds an
  agency token to the client certificate it is presented with;
* :data:`FEDERATION_IDENTITY`: the URI SAN of the gateway's federation (client) certificate,
  the only client identity a department adapter accepts;
* :data:`RESERVED_NAMES` and :func:`reserved_name_problem`: names no principal may take, so
  that no agency can pose as the gateway or a department;
* :data:`ROLE_ORGANIZATIONS`: the certificate ``O`` each kind of principal carries.

Issuing certificates is development tooling (:mod:`gateway.dev.pki`), which imports this
module; this module imports nothing from the gateway.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "FEDERATION_IDENTITY",
    "GATEWAY_CN",
    "GATEWAY_FEDERATION_OU",
    "RESERVED_NAMES",
    "ROLE_ORGANIZATIONS",
    "cert_thumbprint",
    "cert_thumbprint_pem",
    "reserved_name_problem",
]

#: The CN of the gateway's server and federation certificates.
GATEWAY_CN = "credit-gateway"
#: The OU that tells the gateway's client certificate apart from its server certificate.
GATEWAY_FEDERATION_OU = "credit-gateway-federation"
#: The URI SAN of the gateway's federation (client) certificate: the only client identity a
#: department adapter accepts (:mod:`adapters.sdk`). No other certificate the development
#: PKI issues has it.
FEDERATION_IDENTITY = "urn:credit-gateway:federation"
#: Names no agency, officer, auditor or finance member may take as id or certificate CN
#: (compared case-insensitively): the gateway's own names and the words of its federation
#: identity. Department ids are reserved too, where they are known.
RESERVED_NAMES = frozenset(
    {GATEWAY_CN, GATEWAY_FEDERATION_OU, "gateway", "federation", "department", "localhost"}
)
#: The certificate ``O`` each kind of principal carries, by role directory.
ROLE_ORGANIZATIONS: dict[str, str] = {
    "agencies": "agency",
    "officers": "officer",
    "auditors": "auditor",
    "finance": "finance",
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cert_thumbprint(cert_der: bytes) -> str:
    """The RFC 8705 ``x5t#S256`` of a certificate: base64url (no padding) SHA-256 of its DER.

    >>> cert_thumbprint(b"")
    '47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU'
    """
    return _b64url(hashlib.sha256(cert_der).digest())


def cert_thumbprint_pem(cert_pem: bytes) -> str:
    """:func:`cert_thumbprint` of a PEM certificate.

    Raises:
        ValueError: ``cert_pem`` is not a PEM certificate.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert_thumbprint(cert.public_bytes(serialization.Encoding.DER))


def reserved_name_problem(name: str, departments: Sequence[str] = ()) -> str | None:
    """Why ``name`` may not be a principal's id or certificate CN, or None.

    Reserved: :data:`RESERVED_NAMES`, a department id or its server name
    (``<dept>.department``), anything ending in ``.department``, and any ``urn:`` name (the
    shape of the identities certificates carry), all compared case-insensitively.
    """
    folded = name.casefold()
    depts = {d.casefold() for d in departments}
    if folded in RESERVED_NAMES:
        return f"{name!r} is reserved for the gateway itself (federation and server names)"
    if folded in depts or folded.endswith(".department"):
        return f"{name!r} is a department's name"
    if folded.startswith("urn:"):
        return f"{name!r} has the shape of a certificate identity (urn:...)"
    return None
