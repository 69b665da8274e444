"""Agency identity: the registry, certificate-bound tokens and the per-call authenticator.

* :mod:`gateway.auth.registry`: ``policies/agencies.toml`` -> :class:`Registry`;
* :mod:`gateway.auth.tokens`: :class:`TokenVerifier` (RFC 8705-bound JWTs) and minting;
* :mod:`gateway.auth.authenticator`: :class:`Authenticator` -> :class:`Identity` per RPC;
* :mod:`gateway.auth.keys`: weak Ed25519 public keys refused as trust anchors (standard
  library only, for the auditors' tool too).

Thumbprints and reserved names: :mod:`gateway.auth.certs`. The development PKI that
issues certificates and issuer keys is :mod:`gateway.dev.pki` (never imported here).

The names below are imported on first use (PEP 562), so that ``import gateway.auth.keys``
pulls in neither PyJWT nor gRPC: the auditors' tool may depend on ``cryptography`` and the
standard library alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.auth.authenticator import Authenticator, CallerAuthenticator, Identity
    from gateway.auth.registry import (
        AgencyKind,
        Principal,
        Registry,
        Role,
        Status,
        load_registry,
    )
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

_HOME = {
    "Authenticator": "authenticator",
    "CallerAuthenticator": "authenticator",
    "Identity": "authenticator",
    "AgencyKind": "registry",
    "Principal": "registry",
    "Registry": "registry",
    "Role": "registry",
    "Status": "registry",
    "load_registry": "registry",
    "TokenVerifier": "tokens",
    "TrustedIssuer": "tokens",
    "VerifiedToken": "tokens",
    "issue_token": "tokens",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'gateway.auth' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gateway.auth.{home}"), name)
    globals()[name] = value  # once: later lookups never come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
