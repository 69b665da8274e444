"""The stable ``ErrorInfo.reason`` codes of authentication and admission, in one place.

Clients and dashboards key on these strings; never rename one. UNAUTHENTICATED codes say the
caller has not proven who it is; PERMISSION_DENIED codes say it has, and is still refused.
"""

from __future__ import annotations

import enum

__all__ = ["AuthReason"]


class AuthReason(enum.StrEnum):
    """Why a caller was refused. The value is the ErrorInfo reason."""

    # UNAUTHENTICATED: the certificate
    CERT_MISSING = "CERT_MISSING"
    CERT_INVALID = "CERT_INVALID"
    CERT_REVOKED = "CERT_REVOKED"
    # UNAUTHENTICATED: the token
    MISSING = "TOKEN_MISSING"
    MALFORMED = "TOKEN_MALFORMED"
    CRIT_UNSUPPORTED = "TOKEN_CRIT_UNSUPPORTED"
    ALG_NOT_ALLOWED = "TOKEN_ALG_NOT_ALLOWED"
    UNKNOWN_KEY = "TOKEN_UNKNOWN_KEY"
    BAD_SIGNATURE = "TOKEN_BAD_SIGNATURE"
    CLAIM_MISSING = "TOKEN_CLAIM_MISSING"
    WRONG_ISSUER = "TOKEN_WRONG_ISSUER"
    WRONG_AUDIENCE = "TOKEN_WRONG_AUDIENCE"
    EXPIRED = "TOKEN_EXPIRED"
    NOT_YET_VALID = "TOKEN_NOT_YET_VALID"
    LIFETIME_TOO_LONG = "TOKEN_LIFETIME_TOO_LONG"
    CERT_MISMATCH = "TOKEN_CERT_MISMATCH"
    REPLAYED = "TOKEN_REPLAYED"
    # UNAUTHENTICATED: certificate and token name different principals
    SUBJECT_MISMATCH = "TOKEN_SUBJECT_MISMATCH"
    # PERMISSION_DENIED (the role-specific ones are built as f"{ROLE}_UNREGISTERED" etc.)
    ROLE_NOT_ALLOWED = "ROLE_NOT_ALLOWED"
    AGENCY_UNREGISTERED = "AGENCY_UNREGISTERED"
    AGENCY_SUSPENDED = "AGENCY_SUSPENDED"
