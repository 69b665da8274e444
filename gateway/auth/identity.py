"""Who is calling: the identity the query pipeline works with, and the seam
through which it is established.

The production :class:`Authenticator` (``gateway.auth``) checks the mutual-TLS
certificate and a certificate-bound JWT. :class:`InsecureDevAuthenticator`
trusts an ``x-dev-agency-id`` header: it exists for benchmarks of the bare
federation path and must be switched on by a loudly named flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import grpc

from gateway.errors import AuthenticationError
from gateway.pipeline.freetext import scan

__all__ = ["Authenticator", "Caller", "InsecureDevAuthenticator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    agency_id: str
    kind: str
    cert_thumbprint: str = ""
    #: For a subject's own self-service certificate: the subject it speaks for.
    subject_id: str = ""
    #: ... and its type ("person" or "enterprise"): both must match for a self-query.
    subject_type: str = ""


class Authenticator(Protocol):
    def authenticate(self, context: grpc.aio.ServicerContext[object, object]) -> Caller: ...


class InsecureDevAuthenticator:
    """Trusts the ``x-dev-agency-id`` header. Never use outside development."""

    HEADER = "x-dev-agency-id"

    def __init__(self) -> None:
        log.warning("INSECURE: callers are identified by a header, not by certificate and token")

    def authenticate(self, context: grpc.aio.ServicerContext[object, object]) -> Caller:
        for key, value in context.invocation_metadata() or ():
            if key == self.HEADER and isinstance(value, str) and value:
                if scan(value):  # it becomes a metric label, a log field, a record
                    raise AuthenticationError(
                        f"{self.HEADER} must name an agency", reason="DEV_AGENCY_INVALID"
                    )
                return Caller(agency_id=value, kind="development")
        raise AuthenticationError(f"missing {self.HEADER} header", reason="DEV_AGENCY_MISSING")
