"""Build a :class:`~gateway.server.Gateway` with all its parts from a config."""

from __future__ import annotations

import asyncio

from gateway.audit import Ed25519Signer, load_pseudonym_key
from gateway.audit.errors import AuditError
from gateway.audit.log import AuditLog
from gateway.auditing import QueryAuditor
from gateway.auth import (
    Authenticator,
    CallerAuthenticator,
    Role,
    TokenVerifier,
    TrustedIssuer,
    load_registry,
)
from gateway.config import AuditConfig, AuthConfig, Config
from gateway.errors import ConfigError
from gateway.server import Gateway

__all__ = ["build_gateway", "open_auditor"]


def _authenticator(auth: AuthConfig, roles: tuple[Role, ...]) -> Authenticator:
    verifier = TokenVerifier(
        [TrustedIssuer.from_jwks_file(i.issuer, i.jwks) for i in auth.issuers],
        audience=auth.audience,
    )
    return Authenticator(load_registry(auth.registry), verifier, roles=roles)


async def open_auditor(audit: AuditConfig) -> QueryAuditor:
    """Open the audit log named by the config. Raises ConfigError or AuditUnavailableError."""

    def keys() -> tuple[Ed25519Signer, bytes, list[str], list[Ed25519Signer]]:
        try:
            signer = Ed25519Signer.from_file(audit.key)
            co_signers = [Ed25519Signer.from_file(p) for p in audit.co_sign_keys]
            pkey = load_pseudonym_key(audit.pseudonym_key)
            trusted = [
                line.strip()
                for p in audit.trusted_keys
                for line in p.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        except (OSError, AuditError) as exc:
            raise ConfigError("audit.key", f"cannot load the audit keys: {exc}") from None
        return signer, pkey, trusted, co_signers

    signer, pkey, trusted, co_signers = await asyncio.to_thread(keys)
    audit_log = await AuditLog.open(audit.path, signer, trusted_keys=trusted, co_signers=co_signers)
    return QueryAuditor(audit_log, pkey, gateway_origin=audit_log.origin)


async def build_gateway(config: Config) -> Gateway:
    """The production wiring: authenticator, decider and audit log from the
    configuration's sections. Raises :class:`~gateway.errors.ConfigError`."""
    authenticator = None
    audit_auth = None
    if config.auth is not None:
        authenticator = CallerAuthenticator(_authenticator(config.auth, (Role.AGENCY,)))
        audit_auth = _authenticator(config.auth, (Role.AGENCY, Role.AUDITOR))
    auditor = await open_auditor(config.audit) if config.audit is not None else None
    return Gateway(
        config, authenticator=authenticator, audit=auditor, audit_authenticator=audit_auth
    )
