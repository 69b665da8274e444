"""Errors of the audit package, kept free of gRPC.

The auditors' tool (``credit-audit``) must run with nothing but the standard
library and ``cryptography``, and :mod:`gateway.errors` imports gRPC. So the
audit package has its own small hierarchy rooted at :class:`AuditError`; the
gateway-facing :class:`gateway.audit.log.AuditLog` wraps these into
:class:`gateway.errors.AuditUnavailableError` at its boundary.

>>> try:
...     raise LogIntegrityError("leaf hash does not match the record", index=7)
... except AuditError as err:
...     print(err)
index 7: leaf hash does not match the record
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "BadSignatureError",
    "KeyFormatError",
    "LogIntegrityError",
    "NoteError",
    "ProofError",
    "RecordError",
    "StorageError",
    "UnverifiedNoteError",
]


class AuditError(Exception):
    """Base of every error raised by :mod:`gateway.audit`."""


class RecordError(AuditError, ValueError):
    """A record cannot be encoded as canonical JSON (a float, a non-string key...)."""


class KeyFormatError(AuditError, ValueError):
    """A signer or verifier key string (or key file) is malformed."""


class NoteError(AuditError):
    """A signed note or checkpoint is malformed, or a known key's signature is bad."""


class UnverifiedNoteError(NoteError):
    """No signature on the note is from a trusted key (unknown keys are ignored)."""


class BadSignatureError(NoteError):
    """A signature line names a trusted key, but the signature does not verify."""


class ProofError(AuditError):
    """A Merkle inclusion or consistency proof does not verify, or cannot be made."""


class StorageError(AuditError):
    """The log's storage could not be read or written."""


class LogIntegrityError(AuditError):
    """The stored log disagrees with itself or with a signed checkpoint.

    ``index`` is the first log index known to be bad (``None`` when the problem
    is not tied to one entry, such as a malformed checkpoint row).
    """

    def __init__(self, problem: str, *, index: int | None = None) -> None:
        self.problem = problem
        self.index = index
        super().__init__(problem if index is None else f"index {index}: {problem}")
