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
from types import MappingProxyType

from gateway.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from gateway.policyadmin.errors import PolicyStoreError, PolicyWorkflowError

__all__ = [
    "BOOTSTRAP_AUTHOR",
    "FILE_NAMES",
    "MAX_VERSION_BYTES",
    "OPTIONAL_FILE_NAMES",
    "Activation",
    "Approval",
    "CheckResult",
    "PolicyVersion",
    "StoreRefusal",
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
#: The kinds of check result a version records.
CHECK_KINDS = ("validate", "test")
#: How a version became active.
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


class StoreRefusal(Exception):
    """Raised by a backend's storage hook when the database itself refused the row (a
    trigger, a constraint, a lost race): :class:`VersionStore` turns it into the workflow
    error the step calls for. Carries no driver text (it names the schema)."""


class VersionStore(ABC):
    """Where policy versions live. Implementations are thread-safe and synchronous: async
    callers run them in a thread.

    The workflow's rules are written once, here, in the public methods: required author and
    reason, the file set (:func:`check_files`), the content hash checked on every read, four
    eyes, one approval, known check kinds, only an approved (or the bootstrap) version
    activated. A backend implements only storage: the ``_insert_*`` and ``_read_*`` hooks
    and the plain reads (:meth:`versions`, :meth:`approval`, :meth:`last_check`,
    :meth:`active`, :meth:`activations`). Its hooks raise :class:`StoreRefusal` when the
    database refuses a row (its own copy of the rules: triggers, constraints) and
    :class:`~gateway.policyadmin.errors.PolicyStoreError` when it cannot be reached.
    """

    # --- the rules ---------------------------------------------------------------------------

    def add_version(
        self,
        files: Mapping[str, str],
        *,
        author: str,
        reason: str,
        parent: int | None,
        now: datetime | None = None,
    ) -> PolicyVersion:
        """Store ``files`` as the next version (numbers have no gaps).

        Raises:
            InvalidArgumentError: see :func:`check_files`; an empty author or reason.
            PolicyWorkflowError: the store refused the row, e.g. an unknown ``parent``
                (``VERSION_REFUSED``).
            PolicyStoreError: the store cannot be written.
        """
        check_files(files)
        if not author:
            raise InvalidArgumentError("author", "required")
        if not reason.strip():
            raise InvalidArgumentError("reason", "required: say why the policy changes")
        at = now or now_utc()
        digest = content_hash(files)
        try:
            number = self._insert_version(
                digest, author, reason, at, parent, canonical_files(files)
            )
        except StoreRefusal:
            raise PolicyWorkflowError(
                "the version cannot be stored: the store refused it (unknown parent?)",
                reason="VERSION_REFUSED",
            ) from None
        return PolicyVersion(
            number, digest, author, reason, at, parent, MappingProxyType(dict(files))
        )

    def version(self, number: int) -> PolicyVersion:
        """The version ``number``, its content checked against its hash.

        Raises NotFoundError for an unknown number; PolicyStoreError when the store cannot
        be read or the content does not match its hash (edited below the database)."""
        version = self._read_version(number)
        if version is None:
            raise NotFoundError(f"no policy version {number}")
        if content_hash(version.files) != version.content_hash:
            raise PolicyStoreError(f"policy version {number}: content does not match its hash")
        return version

    def approve(
        self, number: int, officer: str, reason: str, *, now: datetime | None = None
    ) -> Approval:
        """Record the second officer's approval.

        Raises:
            NotFoundError: no such version.
            PermissionDeniedError: ``officer`` is the author (reason ``FOUR_EYES``).
            PolicyWorkflowError: already approved (``ALREADY_APPROVED``), or the store
                refused it (``APPROVAL_REFUSED``: a race lost to another approval).
            PolicyStoreError: the store cannot be written.
        """
        version = self.version(number)
        if officer == version.author:
            raise PermissionDeniedError(
                f"four eyes: {officer} drafted version {number} and cannot approve it; "
                "another security officer must",
                reason="FOUR_EYES",
            )
        if self.approval(number) is not None:
            raise PolicyWorkflowError(
                f"version {number} is already approved", reason="ALREADY_APPROVED"
            )
        at = now or now_utc()
        try:
            self._insert_approval(number, officer, reason, at)
        except StoreRefusal:
            # Lost a race with another approval, or the database caught what we did not.
            raise PolicyWorkflowError(
                f"version {number} cannot be approved: the store refused it",
                reason="APPROVAL_REFUSED",
            ) from None
        return Approval(number, officer, reason, at)

    def record_check(
        self, number: int, kind: str, problems: Sequence[str], *, now: datetime | None = None
    ) -> CheckResult:
        """Append a validation (``validate``) or test (``test``) result.

        Raises ValueError for another ``kind``; NotFoundError; PolicyStoreError (the store
        cannot be written, or refused the row)."""
        if kind not in CHECK_KINDS:
            raise ValueError(f"unknown check kind {kind!r}")
        self.version(number)
        at = now or now_utc()
        try:
            self._insert_check(number, kind, json.dumps(list(problems), ensure_ascii=False), at)
        except StoreRefusal:
            raise PolicyStoreError(f"the check of version {number} was refused") from None
        return CheckResult(number, kind, tuple(problems), at)

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
            ValueError: ``action`` is not one of bootstrap, activate, rollback.
            NotFoundError: no such version.
            PolicyWorkflowError: not approved (``NOT_APPROVED``), or a bootstrap activation
                when something was activated before (``ALREADY_BOOTSTRAPPED``).
            PolicyStoreError: the store cannot be written.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown activation action {action!r}")
        self.version(number)
        if action == "bootstrap" and self.active() is not None:
            # Only the very first activation seeds; the database refuses a racing second.
            raise PolicyWorkflowError(
                f"version {number} cannot be activated: the store refused it",
                reason="ALREADY_BOOTSTRAPPED",
            )
        # The bootstrap version stands approved by whoever deployed the files it was seeded
        # from: a rollback may return to it.
        if (
            action != "bootstrap"
            and self.approval(number) is None
            and not any(a.version == number and a.action == "bootstrap" for a in self.activations())
        ):
            raise PolicyWorkflowError(
                f"version {number} is not approved: another security officer must approve it first",
                reason="NOT_APPROVED",
            )
        at = now or now_utc()
        try:
            seq = self._insert_activation(number, officer, reason, action, at)
        except StoreRefusal:
            raise PolicyWorkflowError(
                f"version {number} cannot be activated: the store refused it",
                reason="ALREADY_BOOTSTRAPPED" if action == "bootstrap" else "NOT_APPROVED",
            ) from None
        return Activation(seq, number, officer, reason, action, at)

    # --- storage (each backend) ---------------------------------------------------------------

    @abstractmethod
    def _insert_version(
        self,
        digest: str,
        author: str,
        reason: str,
        at: datetime,
        parent: int | None,
        files_json: str,
    ) -> int:
        """Insert the next version (number = the highest + 1, no gaps, even with several
        processes drafting at once); return its number. Raises StoreRefusal,
        PolicyStoreError."""

    @abstractmethod
    def _read_version(self, number: int) -> PolicyVersion | None:
        """The stored row of version ``number`` as it is (None: none). Raises
        PolicyStoreError."""

    @abstractmethod
    def _insert_approval(self, number: int, officer: str, reason: str, at: datetime) -> None:
        """Insert the approval row. Raises StoreRefusal, PolicyStoreError."""

    @abstractmethod
    def _insert_check(self, number: int, kind: str, problems_json: str, at: datetime) -> None:
        """Append a check row. Raises StoreRefusal, PolicyStoreError."""

    @abstractmethod
    def _insert_activation(
        self, number: int, officer: str, reason: str, action: str, at: datetime
    ) -> int:
        """Append an activation row (seq = the highest + 1, one at a time across
        processes) and tell other processes where the backend can; return its seq. Raises
        StoreRefusal, PolicyStoreError."""

    @abstractmethod
    def versions(self) -> list[PolicyVersion]:
        """Every version, oldest first. Raises PolicyStoreError."""

    @abstractmethod
    def approval(self, number: int) -> Approval | None:
        """Raises PolicyStoreError."""

    @abstractmethod
    def last_check(self, number: int, kind: str) -> CheckResult | None:
        """Raises PolicyStoreError."""

    @abstractmethod
    def active(self) -> Activation | None:
        """The latest activation (None: never seeded). Raises PolicyStoreError."""

    @abstractmethod
    def activations(self) -> list[Activation]:
        """The activation history, oldest first. Raises PolicyStoreError."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Release the store's resources."""
