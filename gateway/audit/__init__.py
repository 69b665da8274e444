"""The signed, append-only audit log: library and auditors' tool.

Every query the gateway answers is first appended here, durably, as a
canonical JSON record; the records form an RFC 6962 Merkle tree whose heads
are published as Ed25519-signed C2SP checkpoints, so an auditor holding only
the log and the public key can prove that nothing was changed, removed or
reordered.

The gateway uses :class:`gateway.audit.log.AuditLog` (imported from its module:
it depends on :mod:`gateway.errors`, hence gRPC)::

    from gateway.audit import Ed25519Signer, pseudonymize
    from gateway.audit.log import AuditLog

    signer = Ed25519Signer.from_file("audit.key")   # credit-audit keygen ...
    log = await AuditLog.open("var/audit.db", signer)
    receipt = await log.append({
        "kind": "query", "agency_id": "bank-001", "purpose": "lending",
        "time": "2025-03-01T08:00:00Z",
        "subject_pseudonym": pseudonymize(pkey, "person", subject_id),
    })
    ...
    await log.close()

Everything importable from this package itself needs only the standard
library and ``cryptography`` (the auditors' tool, :mod:`gateway.audit.cli`,
relies on that):

* :mod:`~gateway.audit.records`: canonical JSON and pseudonyms;
* :mod:`~gateway.audit.merkle`: RFC 6962/9162 trees and proofs;
* :mod:`~gateway.audit.note`, :mod:`~gateway.audit.checkpoint`: keys, signed
  notes, checkpoints, tlog-proofs;
* :mod:`~gateway.audit.store`: the storage interfaces and in-memory storage (the SQLite
  file: :mod:`gateway.stores.sqlite.audit`; PostgreSQL: :mod:`gateway.stores.postgres.audit`);
* :mod:`~gateway.audit.verify`: whole-log verification.
"""

from typing import Any

from gateway.audit.checkpoint import (
    Checkpoint,
    TlogProof,
    open_checkpoint,
    sign_checkpoint,
    verify_tlog_proof,
)
from gateway.audit.errors import (
    AuditError,
    BadSignatureError,
    KeyFormatError,
    LogIntegrityError,
    NoteError,
    ProofError,
    RecordError,
    StorageError,
    UnverifiedNoteError,
)
from gateway.audit.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from gateway.audit.note import (
    Ed25519Signer,
    Note,
    Signer,
    Verifier,
    generate_key,
    load_verifiers,
    open_note,
    sign_note,
    write_key_files,
)
from gateway.audit.records import (
    canonical_json,
    decode_record,
    encode_record,
    generate_pseudonym_key,
    load_pseudonym_key,
    pseudonymize,
    write_pseudonym_key,
)
from gateway.audit.store import AuditStore, MemoryStore
from gateway.audit.verify import VerifyReport, verify_log

__all__ = [
    "EMPTY_ROOT",
    "AuditError",
    "AuditStore",
    "BadSignatureError",
    "Checkpoint",
    "Ed25519Signer",
    "KeyFormatError",
    "LogIntegrityError",
    "MemoryStore",
    "MerkleTree",
    "Note",
    "NoteError",
    "ProofError",
    "RecordError",
    "SQLiteStore",
    "Signer",
    "StorageError",
    "TlogProof",
    "UnverifiedNoteError",
    "Verifier",
    "VerifyReport",
    "canonical_json",
    "decode_record",
    "encode_record",
    "generate_key",
    "generate_pseudonym_key",
    "leaf_hash",
    "load_pseudonym_key",
    "load_verifiers",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "open_reader",
    "pseudonymize",
    "root_from_leaf_hashes",
    "sign_checkpoint",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_tlog_proof",
    "write_key_files",
    "write_pseudonym_key",
]


def __getattr__(name: str) -> Any:
    """``SQLiteStore`` and ``open_reader`` live in :mod:`gateway.stores.sqlite.audit`
    (beside the PostgreSQL backend); imported on first use, because that module
    imports this package's store interface."""
    if name in ("SQLiteStore", "open_reader"):
        from gateway.stores.sqlite import audit

        return getattr(audit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
