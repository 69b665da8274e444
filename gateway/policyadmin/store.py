"""Policy versions: immutable, numbered, hashed, attributed; exactly one active.

    store = SQLiteVersionStore(Path("policy-versions.sqlite"))
    v = store.add_version(files, author="officer_a", reason="grant bank tax arrears")
    store.approve(v.number, "officer_b", "reviewed the diff")      # four eyes
    store.activate(v.number, "officer_a", "ticket 4711")
    store.active().version                                          # v.number

A version is the text of the five files that decide who sees what (:data:`FILE_NAMES`), the
agencies' rate limits (``limits.toml``, optional: versions drafted before it existed lack it),
plus any policy test files a draft brings (``tests/<name>.toml``). Its ``content_hash`` is the
SHA-256 of their canonical JSON. "Active" is not a flag that could be set twice: it is the
newest row of an append-only activation history, so exactly one version is active once the
store has been seeded.

The SQLite schema defends the rules itself (triggers), so that a hand-written ``UPDATE`` in
the sqlite3 shell cannot rewrite history either: versions, approvals, check results and
activations cannot be updated or deleted; an approval by the version's author is refused; a
version is activated only once approved (the bootstrap version excepted, and only as the
very first activation; a rollback may return to it). The store checks the same rules first,
to raise clear errors.

:class:`VersionStore` is the interface; :class:`SQLiteVersionStore` the embedded one (WAL, a
``BEGIN IMMEDIATE`` per write, safe for several gateway processes on one host sharing the
file); :class:`gateway.stores.postgres.policy_versions.PgVersionStore` the shared one (many
processes on many hosts; activations propagate by LISTEN/NOTIFY). Both pass one contract
suite (``tests/contract/test_policy_versions_contract.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import InvalidArgumentError

__all__ = [
    "BOOTSTRAP_AUTHOR",
    "FILE_NAMES",
    "MAX_VERSION_BYTES",
    "OPTIONAL_FILE_NAMES",
    "Activation",
    "Approval",
    "CheckResult",
    "PolicyVersion",
    "VersionStore",
    "canonical_files",
    "check_files",
    "content_hash",
    "now_utc",
]

#: The files every version holds.
FILE_NAMES = ("model.conf", "policy.csv", "catalog.toml", "prices.toml", "agencies.toml")
#: Files a version may hold besides :data:`FILE_NAMES` (versions drafted before a file
#: existed lack it; the loader then applies its default: no rate limits).
OPTIONAL_FILE_NAMES = ("limits.toml", "measures.toml")
#: Extra policy test files a version may carry.
_TEST_FILE = re.compile(r"^tests/[A-Za-z0-9_-]{1,64}\.toml$")
#: A bound on one version's files: a policy of tens of thousands of lines is ~2 MiB.
MAX_VERSION_BYTES = 16 * 1024 * 1024
BOOTSTRAP_AUTHOR = "bootstrap"
CHECK_KINDS = ("validate", "test")
ACTIONS = ("bootstrap", "activate", "rollback")


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One stored policy version: its number, content hash (SHA-256 of its files), author,
    reason, draft time (UTC) and files by name."""

    number: int
    content_hash: str
    author: str
    reason: str
    created_at: datetime
    #: The version active when this one was drafted (None: the first).
    parent: int | None
    files: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Approval:
    """A second officer's approval of a version (four-eyes rule)."""

    version: int
    officer: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of validating (``validate``) or testing (``test``) a version; no problems
    means passed."""

    version: int
    kind: str  # validate | test
    problems: tuple[str, ...]
    at: datetime

    @property
    def passed(self) -> bool:
        """True if the check found no problem."""
        return not self.problems


@dataclass(frozen=True, slots=True)
class Activation:
    """One row of the activation history: which version became active, by whom, why and when
    (UTC)."""

    seq: int
    version: int
    officer: str
    reason: str
    action: str  # bootstrap | activate | rollback
    at: datetime


def check_files(files: Mapping[str, str]) -> None:
    """Refuse a file set no version may hold.

    Raises:
        InvalidArgumentError: an unknown file name, a missing required file, a file that
            is not text, or more than :data:`MAX_VERSION_BYTES` in all.
    """
    total = 0
    for name, text in files.items():
        if name not in FILE_NAMES + OPTIONAL_FILE_NAMES and not _TEST_FILE.match(name):
            known = ", ".join(FILE_NAMES + OPTIONAL_FILE_NAMES)
            raise InvalidArgumentError(
                "files", f"unknown file {name[:80]!r}: one of {known} or tests/<name>.toml"
            )
        if "\0" in text:
            raise InvalidArgumentError("files", f"{name} is not text")
        total += len(text.encode("utf-8"))
    missing = [n for n in FILE_NAMES if n not in files]
    if missing:
        raise InvalidArgumentError("files", f"missing: {', '.join(missing)}")
    if total > MAX_VERSION_BYTES:
        raise InvalidArgumentError("files", f"{total} bytes; at most {MAX_VERSION_BYTES}")


def _canonical(files: Mapping[str, str]) -> bytes:
    return json.dumps(
        dict(files), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def canonical_files(files: Mapping[str, str]) -> str:
    """The canonical JSON text of ``files`` (sorted names, UTF-8), as every backend stores
    it: :func:`content_hash` is the SHA-256 of exactly this text."""
    return _canonical(files).decode("utf-8")


def content_hash(files: Mapping[str, str]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``files`` (sorted names, UTF-8)."""
    return hashlib.sha256(_canonical(files)).hexdigest()


def now_utc() -> datetime:
    """The current time, timezone-aware UTC (every backend stamps rows with it)."""
    return datetime.now(UTC)


class VersionStore(ABC):
    """Where policy versions live. Implementations are thread-safe and synchronous: async
    callers run them in a thread."""

    @abstractmethod
    def add_version(
        self,
        files: Mapping[str, str],
        *,
        author: str,
        reason: str,
        parent: int | None,
        now: datetime | None = None,
    ) -> PolicyVersion:
        """Store ``files`` as the next version.

        Raises:
            InvalidArgumentError: see :func:`check_files`; an empty author or reason.
            PolicyStoreError: the store cannot be written.
        """

    @abstractmethod
    def version(self, number: int) -> PolicyVersion:
        """Raises NotFoundError for an unknown number, PolicyStoreError."""

    @abstractmethod
    def versions(self) -> list[PolicyVersion]:
        """Every version, oldest first. Raises PolicyStoreError."""

    @abstractmethod
    def approve(
        self, number: int, officer: str, reason: str, *, now: datetime | None = None
    ) -> Approval:
        """Record the second officer's approval.

        Raises:
            NotFoundError: no such version.
            PermissionDeniedError: ``officer`` is the author (reason ``FOUR_EYES``).
            PolicyWorkflowError: already approved (``ALREADY_APPROVED``).
            PolicyStoreError: the store cannot be written.
        """

    @abstractmethod
    def approval(self, number: int) -> Approval | None:
        """Raises PolicyStoreError."""

    @abstractmethod
    def record_check(
        self, number: int, kind: str, problems: Sequence[str], *, now: datetime | None = None
    ) -> CheckResult:
        """Append a validation or test result. Raises NotFoundError, PolicyStoreError."""

    @abstractmethod
    def last_check(self, number: int, kind: str) -> CheckResult | None:
        """Raises PolicyStoreError."""

    @abstractmethod
    def activate(
        self,
        number: int,
        officer: str,
        reason: str,
        *,
        action: str = "activate",
        now: datetime | None = None,
    ) -> Activation:
        """Make ``number`` the active version (a new row of the activation history).

        Raises:
            NotFoundError: no such version.
            PolicyWorkflowError: not approved (``NOT_APPROVED``), or a bootstrap activation
                when something was activated before (``ALREADY_BOOTSTRAPPED``).
            PolicyStoreError: the store cannot be written.
        """

    @abstractmethod
    def active(self) -> Activation | None:
        """The latest activation (None: never seeded). Raises PolicyStoreError."""

    @abstractmethod
    def activations(self) -> list[Activation]:
        """The activation history, oldest first. Raises PolicyStoreError."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release the store's resources."""
