"""The closed sets of words the gateway uses across steps, as enums instead of bare strings.

Each member is a :class:`~enum.StrEnum`: it equals, hashes, formats and encodes (JSON, audit
records) as its value, so records and metric labels read as before. Standard library only.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Mode", "SubjectType"]


class SubjectType(StrEnum):
    """Whom a query is about."""

    #: An enterprise, by its unified social credit code (GB 32100-2015).
    ENTERPRISE = "enterprise"
    #: A natural person, by the resident identity number (GB 11643-1999).
    PERSON = "person"


class Mode(StrEnum):
    """How a query is paid for: free (government duties) or paid (commercial use)."""

    FREE = "free"
    PAID = "paid"
