"""Build a :class:`~gateway.server.Gateway` with all its parts from a config."""

from __future__ import annotations

from gateway.auth import (
    Authenticator,
    CallerAuthenticator,
    TokenVerifier,
    TrustedIssuer,
    load_registry,
)
from gateway.config import AuthConfig, Config
from gateway.identity import Authenticator as AuthenticatorSeam
from gateway.server import Gateway

__all__ = ["build_authenticator", "build_gateway"]


def build_authenticator(auth: AuthConfig) -> AuthenticatorSeam:
    """Registry + trusted issuers -> the per-call authenticator. Raises ConfigError."""
    verifier = TokenVerifier(
        [TrustedIssuer.from_jwks_file(i.issuer, i.jwks) for i in auth.issuers],
        audience=auth.audience,
    )
    return CallerAuthenticator(Authenticator(load_registry(auth.registry), verifier))


async def build_gateway(config: Config) -> Gateway:
    """The production wiring: authenticator, decider and audit log from the
    configuration's sections. Raises :class:`~gateway.errors.ConfigError`."""
    authenticator = build_authenticator(config.auth) if config.auth is not None else None
    return Gateway(config, authenticator=authenticator)
