"""Agency identity: the registry, certificate-bound tokens and the per-call authenticator.

* :mod:`gateway.auth.registry`: ``policies/agencies.toml`` -> :class:`Registry`;
* :mod:`gateway.auth.tokens`: :class:`TokenVerifier` (RFC 8705-bound JWTs) and minting;
* :mod:`gateway.auth.authenticator`: :class:`Authenticator` -> :class:`Identity` per RPC.

The development PKI that produces the certificates and issuer keys is :mod:`gateway.pki`.
"""

from gateway.auth.authenticator import Authenticator, CallerAuthenticator, Identity
from gateway.auth.registry import AgencyKind, Principal, Registry, Role, Status, load_registry
from gateway.auth.tokens import TokenVerifier, TrustedIssuer, VerifiedToken, issue_token

__all__ = [
    "AgencyKind",
    "Authenticator",
    "CallerAuthenticator",
    "Identity",
    "Principal",
    "Registry",
    "Role",
    "Status",
    "TokenVerifier",
    "TrustedIssuer",
    "VerifiedToken",
    "issue_token",
    "load_registry",
]
