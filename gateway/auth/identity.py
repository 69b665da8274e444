"""Who is calling: the :class:`Caller` the query pipeline works with, and the seam
(:class:`CallerSource`) through which it is established.

Two names, two things: :class:`gateway.auth.authenticator.Identity` is any authenticated
principal (agency, officer, auditor, finance) behind a certificate and a token; a
:class:`Caller` is what the query pipeline needs of an agency. The production source,
:class:`gateway.auth.authenticator.CallerAuthenticator`, turns the one into the other.
:class:`InsecureDevAuthenticator` trusts an ``x-dev-agency-id`` header: it exists for
benchmarks of the bare federation path and must be switched on by a loudly named flag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import grpc

from gateway.errors import AuthenticationError
from gateway.pipeline.freetext import holds_identifier

__all__ = ["Caller", "CallerSource", "InsecureDevAuthenticator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the query pipeline sees it: the agency, its kind and, for a
    self-service certificate, the subject it speaks for.

    Built from an authenticated :class:`gateway.auth.authenticator.Identity` (the
    principal behind certificate and token) by :class:`CallerAuthenticator`.
    """

    agency_id: str
    kind: str
    cert_thumbprint: str = ""
    #: For a subject's own self-service certificate: the subject it speaks for.
    subject_id: str = ""
    #: ... and its type ("person" or "enterprise"): both must match for a self-query.
    subject_type: str = ""


class CallerSource(Protocol):
    """The seam the query pipeline authenticates through: anything that turns a call into a
    :class:`Caller`.
    """

    def authenticate(self, context: grpc.aio.ServicerContext[object, object]) -> Caller:
        """The :class:`Caller` of ``context``.

        Raises:
            AuthenticationError: the call carries no acceptable identity.
        """


class InsecureDevAuthenticator:
    """Trusts the ``x-dev-agency-id`` header. Never use outside development."""

    HEADER = "x-dev-agency-id"

    def __init__(self) -> None:
        log.warning("INSECURE: callers are identified by a header, not by certificate and token")

    def authenticate(self, context: grpc.aio.ServicerContext[object, object]) -> Caller:
        """The agency named by the ``x-dev-agency-id`` header.

        Raises:
            AuthenticationError: the header is missing or is not an agency name.
        """
        for key, value in context.invocation_metadata() or ():
            if key == self.HEADER and isinstance(value, str) and value:
                if holds_identifier(value):  # it becomes a metric label, a log field, a record
                    raise AuthenticationError(
                        f"{self.HEADER} must name an agency", reason="DEV_AGENCY_INVALID"
                    )
                return Caller(agency_id=value, kind="development")
        raise AuthenticationError(f"missing {self.HEADER} header", reason="DEV_AGENCY_MISSING")
