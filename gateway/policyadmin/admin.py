"""The policy workflow of one gateway process: draft, validate, test, diff, replay,
approve, activate, rollback; and following activations made by other processes.

    admin = PolicyAdministrator(store, recipe, serving=Serving(catalog, catalog_text,
                                registry_text), audit=auditor)
    decider = admin.initial_decider(disk_files)   # start-up: the active version (seeded once)
    await admin.start(gateway.install_decider, meter=gateway.meter)   # polls the store
    await admin.activate("officer_a", 3, "ticket 4711")               # hot switch

Rules (each refusal is a :class:`~gateway.errors.GatewayError` and an audit record):

* a version is approved by a security officer other than its author (four eyes:
  PERMISSION_DENIED, reason ``FOUR_EYES``);
* ``activate`` takes only an approved version that loads, validates and passes the policy
  test matrix now (not when it was last checked: the shipped test cases may have grown);
  ``rollback`` re-activates a version that was active before, re-validated but not held to
  today's tests, so that an emergency return is never blocked by a newer test case;
* a version that fails to load leaves the active one serving: the new decider is built and
  warmed before anything is switched;
* the audit record of an activation is appended before the switch: no record, no change.

The agency registry of a version must equal the one the gateway serves for a hot switch
(``REGISTRY_CHANGED``): the authenticators hold it from start-up. A version may change the
catalog (add or retire departments and datasets) hot when the gateway can serve it: the
config names an address for each of its departments (else ``DEPARTMENT_NOT_CONFIGURED``,
naming them), and the gateway passed ``install_catalog`` to :meth:`start` (else
``CATALOG_CHANGED``: deploy with a restart); the new catalog is installed just before the
decider, and departments added are checked in the background before they are asked.
At start-up the gateway's own catalog and registry prevail (with a warning) over an active
version's.
Prices and rate limits are switched with the policy (the meter reads its price list per
query; the limiter, :attr:`PolicyAdministrator.limiter`, takes the version's ``limits.toml``).

Why one module (some 730 lines): each step of the workflow runs on one
:class:`PolicyAdministrator`, under its one lock, with its one audit writer and its one hot
switch, and the rules above are kept in its methods; storage, loading and the diff and replay
analysis are already modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.audit.auditor import QueryAuditor
from gateway.audit.errors import RecordError
from gateway.audit.log import AuditLog
from gateway.audit.records import decode_record
from gateway.audit.schema import PolicyAdminRecord, QueryRecord
from gateway.billing import Meter
from gateway.domain.catalog import Catalog
from gateway.errors import (
    ConfigError,
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from gateway.pipeline.decision import Decider
from gateway.pipeline.freetext import holds_identifier
from gateway.pipeline.limits import RateLimiter
from gateway.policy import PolicyDecider
from gateway.policyadmin.analysis import FieldChange, Flip, diff_versions, replay_records, warm
from gateway.policyadmin.errors import PolicyWorkflowError
from gateway.policyadmin.loading import (
    DeciderRecipe,
    LoadedVersion,
    load_version,
    run_tests,
    validate_files,
)
from gateway.policyadmin.store import (
    BOOTSTRAP_AUTHOR,
    FILE_NAMES,
    OPTIONAL_FILE_NAMES,
    Approval,
    CheckResult,
    PolicyVersion,
    VersionStore,
)

__all__ = [
    "AUDIT_KIND",
    "MAX_REPLAY",
    "PolicyAdministrator",
    "RecordSource",
    "Serving",
    "VersionView",
    "query_records",
]

log = logging.getLogger(__name__)

AUDIT_KIND = PolicyAdminRecord.KIND
MAX_REPLAY = 10_000
T = TypeVar("T")

#: ``(last) -> [(log index, record)]``: the latest query records, newest first.
RecordSource = Callable[[int], Awaitable[list[tuple[int, Mapping[str, Any]]]]]


def query_records(audit_log: AuditLog) -> RecordSource:
    """A :data:`RecordSource` over the live audit log: walks back from the newest entry,
    skipping other kinds of record, reading at most 20 entries per query wanted (a log of
    billing and admin events cannot make a replay scan the whole log)."""

    async def latest(last: int) -> list[tuple[int, Mapping[str, Any]]]:
        found: list[tuple[int, Mapping[str, Any]]] = []
        index = audit_log.size - 1
        floor = max(index - 20 * last - 1000, -1)
        while index > floor and len(found) < last:
            leaf = await audit_log.read_leaf(index)
            if leaf is not None:
                try:
                    record = decode_record(leaf, canonical=False)
                except RecordError:
                    record = {}
                if record.get("kind") == QueryRecord.KIND:
                    found.append((index, record))
            index -= 1
        return found

    return latest


@dataclass(frozen=True, slots=True)
class Serving:
    """What the running gateway serves and a hot switch cannot change."""

    catalog: Catalog
    catalog_text: str
    registry_text: str
    #: Departments the gateway config has an address for (a catalog change may name only
    #: these); None: catalog changes need a restart.
    departments: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class VersionView:
    """A version with its approval, last checks and whether it is active."""

    version: PolicyVersion
    approval: Approval | None
    validated: CheckResult | None
    tested: CheckResult | None
    active: bool


class PolicyAdministrator:
    """See the module docstring. Every public coroutine raises :class:`GatewayError`
    subclasses only: NotFoundError (no such version), InvalidArgumentError (bad files or
    arguments), PermissionDeniedError (four eyes), PolicyWorkflowError (the workflow forbids
    it now), PolicyStoreError, AuditUnavailableError."""

    def __init__(
        self,
        store: VersionStore,
        recipe: DeciderRecipe,
        *,
        serving: Serving,
        audit: QueryAuditor | None = None,
        records: RecordSource | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self.recipe = recipe
        self._serving = serving
        self._audit = audit
        self._records = records
        self._poll_interval_s = poll_interval_s
        self._install: Callable[[Decider], None] | None = None
        self._install_catalog: Callable[[Catalog], None] | None = None
        self._meter: Meter | None = None
        #: The query path's rate limiter: an activation switches its limits too.
        self.limiter: RateLimiter | None = None
        #: The version this process serves (None: not from the store yet).
        self.installed: int | None = None
        #: Its parsed files (prices for the meter at start-up).
        self.current: LoadedVersion | None = None
        self._lock = asyncio.Lock()  # one activation at a time in this process
        self._poller: asyncio.Task[None] | None = None
        self._poll_failed: int | None = None

    # --- life cycle ---------------------------------------------------------------------

    def initial_decider(self, disk_files: Mapping[str, str]) -> PolicyDecider:
        """The decider of the active version, seeding version 1 from ``disk_files`` (author
        ``bootstrap``) if the store has none. Synchronous: start-up, before serving.

        Raises:
            ConfigError: the active version does not load against the served catalog.
            PolicyStoreError: the store cannot be read or written.
        """
        active = self.store.active()
        if active is None:
            version = self.store.add_version(
                disk_files,
                author=BOOTSTRAP_AUTHOR,
                reason="seeded from the policy files on disk at first start",
                parent=None,
            )
            try:
                active = self.store.activate(
                    version.number, BOOTSTRAP_AUTHOR, "first start", action="bootstrap"
                )
            except PolicyWorkflowError:
                # Another gateway process seeded the store first; follow it. Our seed stays
                # an unapproved version nobody can activate.
                active = self.store.active()
                assert active is not None
        version = self.store.version(active.version)
        files = dict(version.files)
        own_catalog = self._catalog_served_hot(version)
        for name, text, what in (
            ("catalog.toml", self._serving.catalog_text, "catalog"),
            ("agencies.toml", self._serving.registry_text, "agency registry"),
        ):
            if name == "catalog.toml" and own_catalog:
                continue
            if files[name] != text:
                log.warning(
                    "active policy version %d was drafted for another %s than the gateway "
                    "serves; deciding with the served one",
                    version.number,
                    what,
                )
                files[name] = text
        served = PolicyVersion(
            version.number,
            version.content_hash,
            version.author,
            version.reason,
            version.created_at,
            version.parent,
            files,
        )
        try:
            loaded = load_version(served, purposes=self.recipe.purposes)
        except GatewayError as err:
            raise ConfigError(
                "policy.store",
                f"active policy version {version.number} does not load: {err.message}",
            ) from None
        if own_catalog and loaded.catalog.digest != self._serving.catalog.digest:
            log.info(
                "active policy version %d changed the catalog while serving; serving its "
                "catalog, not the file's",
                version.number,
            )
            self._serving = dataclasses.replace(
                self._serving, catalog=loaded.catalog, catalog_text=files["catalog.toml"]
            )
        self.installed = version.number
        self.current = loaded
        return self.recipe.build(loaded)

    def _catalog_served_hot(self, version: PolicyVersion) -> bool:
        """Whether start-up serves the active version's own catalog: one activated hot
        (adding or retiring departments) stays in force across a restart when the config
        names every department's address; otherwise the file's catalog prevails."""
        known = self._serving.departments
        if known is None or version.files["catalog.toml"] == self._serving.catalog_text:
            return False
        try:
            loaded = load_version(version, purposes=self.recipe.purposes)
        except GatewayError:
            return False  # reported by the load with the served catalog
        return all(d in known for d in loaded.catalog.departments)

    @property
    def serving(self) -> Serving:
        """What this gateway serves now: the catalog changes with hot activations."""
        return self._serving

    async def start(
        self,
        install: Callable[[Decider], None],
        *,
        meter: Meter | None,
        install_catalog: Callable[[Catalog], None] | None = None,
    ) -> None:
        """Serve: activations now switch ``install``'s target (and, for a version with
        another catalog, call ``install_catalog`` first; without it such versions are
        refused); poll the store so that activations made by other gateway processes are
        followed."""
        self._install = install
        self._install_catalog = install_catalog
        self._meter = meter
        if self._poll_interval_s > 0 and self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="policy-store-poll")

    async def close(self) -> None:
        """Stop polling and close the store."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await asyncio.to_thread(self.store.close)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            if self._lock.locked():
                continue  # an activation of our own is under way
            try:
                await self.follow()
            except Exception:  # the poll must survive anything; the next tick retries
                log.exception("policy store poll failed")

    async def follow(self) -> bool:
        """Install the store's active version if it is not the one served (activated by
        another process). Returns whether it switched. A version that fails to load is
        logged once and the current one keeps serving."""
        async with self._lock:
            active = await asyncio.to_thread(self.store.active)
            if active is None or active.version in (self.installed, self._poll_failed):
                return False
            try:
                loaded, decider = await asyncio.to_thread(self._prepare, active.version)
            except GatewayError as err:
                self._poll_failed = active.version
                log.error(
                    "policy version %d, activated elsewhere, does not load here; version %s "
                    "keeps serving: %s",
                    active.version,
                    self.installed,
                    err.message,
                )
                return False
            self._switch(loaded, decider)
            log.info("following activation of policy version %d", active.version)
            return True

    # --- helpers -------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def _record(self, action: str, officer: str, **fields: Any) -> None:
        if self._audit is None:
            return
        # Free text enters the record only through the free-text screen (as written, or
        # as a keyed pseudonym), whatever the outcome: the reason, the file names a draft
        # brings, and the officer id (in development mode a header names it).
        free = self._audit.free_text
        if "reason" in fields:
            fields["reason"] = free(fields["reason"])
        if "files" in fields:
            fields["files"] = tuple(free(name) for name in fields["files"])
        record = PolicyAdminRecord(action=action, officer=free(officer), **fields).to_json()
        kind = record.pop("kind")  # the log's writer adds kind, time and gateway
        await self._audit.append_event(kind, record)

    async def _refused(self, action: str, officer: str, err: GatewayError, **fields: Any) -> None:
        # A refused step is on the record too; if even that fails, the caller still gets
        # the original refusal.
        with contextlib.suppress(GatewayError):
            await self._record(action, officer, outcome="refused", error=err.reason, **fields)
            err.audited = self._audit is not None  # the gRPC edge need not record it again

    async def record_refusal(self, action: str, officer: str, err: GatewayError) -> None:
        """Put a refused attempt on the audit record (never raises)."""
        await self._refused(action, officer, err)

    def _view(self, number: int) -> VersionView:
        version = self.store.version(number)
        active = self.store.active()
        return VersionView(
            version,
            self.store.approval(number),
            self.store.last_check(number, "validate"),
            self.store.last_check(number, "test"),
            active is not None and active.version == number,
        )

    async def view(self, number: int) -> VersionView:
        """Raises NotFoundError, PolicyStoreError."""
        return await self._run(self._view, number)

    async def views(self) -> list[VersionView]:
        """Every version, newest first. Raises PolicyStoreError."""

        def all_views() -> list[VersionView]:
            return [self._view(v.number) for v in reversed(self.store.versions())]

        return await self._run(all_views)

    def _load(self, number: int) -> LoadedVersion:
        try:
            return load_version(self.store.version(number), purposes=self.recipe.purposes)
        except ConfigError as err:
            raise PolicyWorkflowError(
                f"version {number} does not load: {err.message}", reason="LOAD_FAILED"
            ) from None

    def _base(self, number: int) -> int:
        if number:
            return number
        active = self.store.active()
        if active is None:
            raise NotFoundError("no active policy version")
        return active.version

    # --- the workflow ------------------------------------------------------------------

    async def draft(self, officer: str, files: Mapping[str, str], reason: str) -> VersionView:
        """Store ``files`` (completed from the active version) as a new version."""

        def do() -> VersionView:
            _screen("reason", reason)
            for name in files:
                _screen("files", name)
            active = self.store.active()
            merged = dict(files)
            if active is not None:
                current = self.store.version(active.version)
                for name in (*FILE_NAMES, *OPTIONAL_FILE_NAMES):
                    if name in current.files:
                        merged.setdefault(name, current.files[name])
            version = self.store.add_version(
                merged,
                author=officer,
                reason=reason,
                parent=active.version if active else None,
            )
            return self._view(version.number)

        try:
            view = await self._run(do)
        except GatewayError as err:
            await self._refused("draft", officer, err, reason=reason)
            raise
        await self._record(
            "draft",
            officer,
            outcome="ok",
            version=view.version.number,
            parent=view.version.parent or 0,
            content_hash=view.version.content_hash,
            files=sorted(files),
            reason=reason,
        )
        return view

    async def validate(self, officer: str, number: int) -> tuple[VersionView, list[str]]:
        """Validate a version; returns its problems (empty: valid) and records the result."""

        def do() -> tuple[VersionView, list[str]]:
            version = self.store.version(number)
            problems = validate_files(version.files, purposes=self.recipe.purposes)
            self.store.record_check(number, "validate", problems)
            return self._view(number), problems

        view, problems = await self._run(do)
        await self._record(
            "validate", officer, outcome="ok", version=number, problems=len(problems)
        )
        return view, problems

    def _test(self, number: int) -> tuple[int, list[str]]:
        loaded = self._load(number)
        try:
            cases, failures = run_tests(loaded, self.recipe)
        except ConfigError as err:
            cases, failures = 0, [f"test files: {err.message}"]
        self.store.record_check(number, "test", failures)
        return cases, failures

    async def test(self, officer: str, number: int) -> tuple[VersionView, int, list[str]]:
        """Run the policy test matrix against a version; returns (view, cases, failures)
        and records the result. A version that does not load fails its tests."""

        def do() -> tuple[VersionView, int, list[str]]:
            try:
                cases, failures = self._test(number)
            except PolicyWorkflowError as err:
                self.store.record_check(number, "test", [err.message])
                return self._view(number), 0, [err.message]
            return self._view(number), cases, failures

        view, cases, failures = await self._run(do)
        await self._record(
            "test", officer, outcome="ok", version=number, cases=cases, failures=len(failures)
        )
        return view, cases, failures

    async def diff(
        self, officer: str, number: int, *, base: int = 0, with_consent: bool = False
    ) -> tuple[int, list[FieldChange], int]:
        """Fields that become visible or hidden per agency from ``base`` (default: the active
        version) to ``number``. Returns (base, changes, combinations compared)."""

        def do() -> tuple[int, list[FieldChange], int]:
            base_number = self._base(base)
            changes, compared = diff_versions(
                self._load(base_number), self._load(number), self.recipe, with_consent=with_consent
            )
            return base_number, changes, compared

        base_number, changes, compared = await self._run(do)
        await self._record(
            "diff", officer, outcome="ok", version=number, base=base_number, changes=len(changes)
        )
        return base_number, changes, compared

    async def replay(self, officer: str, number: int, last: int) -> tuple[int, list[Flip]]:
        """Re-decide the latest ``last`` audited queries under ``number``.

        Raises:
            InvalidArgumentError: ``last`` out of range, or no audit log to read.
        """
        if not 1 <= last <= MAX_REPLAY:
            raise InvalidArgumentError("last", f"must be from 1 to {MAX_REPLAY}")
        if self._records is None:
            raise InvalidArgumentError("version", "this gateway keeps no audit log to replay")
        loaded = await self._run(self._load, number)
        records = await self._records(last)
        replayed, flips = await self._run(replay_records, records, loaded, self.recipe)
        await self._record(
            "replay", officer, outcome="ok", version=number, replayed=replayed, flips=len(flips)
        )
        return replayed, flips

    async def approve(self, officer: str, number: int, reason: str) -> VersionView:
        """Approve a version drafted by another officer.

        No record, no approval: the audit record is appended first (after the
        same checks the store makes), so an approval never exists unrecorded.
        Raises NotFoundError, PermissionDeniedError (``FOUR_EYES``),
        PolicyWorkflowError (``ALREADY_APPROVED``), AuditUnavailableError.
        """

        def check() -> str:
            _screen("reason", reason)
            version = self.store.version(number)
            if officer == version.author:
                raise PermissionDeniedError(
                    f"four eyes: {officer} drafted version {number} and cannot approve it; "
                    "another security officer must",
                    reason="FOUR_EYES",
                )
            if self.store.approval(number) is not None:
                raise PolicyWorkflowError(
                    f"version {number} is already approved", reason="ALREADY_APPROVED"
                )
            return version.author

        def do() -> VersionView:
            self.store.approve(number, officer, reason)  # checks again, under its own lock
            return self._view(number)

        try:
            author = await self._run(check)
        except GatewayError as err:
            await self._refused("approve", officer, err, version=number, reason=reason)
            raise
        await self._record(
            "approve", officer, outcome="ok", version=number, author=author, reason=reason
        )
        try:
            return await self._run(do)
        except GatewayError as err:
            # Lost a race with another approval after the record: say so on the record.
            await self._refused("approve", officer, err, version=number, reason=reason)
            raise

    async def activate(
        self, officer: str, number: int, reason: str, *, rollback: bool = False
    ) -> tuple[VersionView, int, str]:
        """Check, build and switch to ``number``. Returns (view, previous version, the
        policy_version queries now carry). On any refusal the active version keeps serving.

        Raises:
            PolicyWorkflowError: already active (``ALREADY_ACTIVE``), not approved
                (``NOT_APPROVED``), never active before (rollback: ``NOT_PREVIOUSLY_ACTIVE``),
                does not load (``LOAD_FAILED``), invalid (``VALIDATION_FAILED``), tests fail
                (``TESTS_FAILED``), rollback further than the last change
                (``NOT_PREVIOUS_VERSION``), other catalog or registry than served
                (``CATALOG_CHANGED``, ``REGISTRY_CHANGED``).
        """
        action = "rollback" if rollback else "activate"
        if not reason.strip():
            raise InvalidArgumentError("reason", "required: say why")
        async with self._lock:
            previous = 0
            try:
                _screen("reason", reason)
                active = await self._run(self.store.active)
                previous = active.version if active else 0
                loaded, decider = await self._run(self._check_activation, number, rollback)
                # No record, no change: if the audit log refuses, nothing is switched.
                await self._record(
                    action,
                    officer,
                    outcome="ok",
                    version=number,
                    previous=previous,
                    policy_version=loaded.policy.version,
                    reason=reason,
                )
                await self._run(lambda: self.store.activate(number, officer, reason, action=action))
            except GatewayError as err:
                await self._refused(
                    action, officer, err, version=number, previous=previous, reason=reason
                )
                raise
            self._switch(loaded, decider)
            view = await self._run(self._view, number)
        log.info("policy version %d %sd by %s", number, action, officer)
        return view, previous, loaded.policy.version

    def _check_activation(self, number: int, rollback: bool) -> tuple[LoadedVersion, Decider]:
        store = self.store
        version = store.version(number)
        active = store.active()
        if active is not None and active.version == number:
            raise PolicyWorkflowError(
                f"version {number} is already active", reason="ALREADY_ACTIVE"
            )
        history = store.activations()
        if rollback:
            if not any(a.version == number for a in history):
                raise PolicyWorkflowError(
                    f"version {number} was never active: rollback returns to an earlier "
                    "version; use activate",
                    reason="NOT_PREVIOUSLY_ACTIVE",
                )
            current = active.version if active is not None else None
            previous = next((a.version for a in reversed(history) if a.version != current), None)
            if number != previous:
                # One officer may undo the last change in an emergency; going further
                # back could re-open a policy later tightened, so that takes four eyes.
                raise PolicyWorkflowError(
                    f"rollback returns only to the version active just before ({previous}); "
                    f"draft version {number}'s files again and have them approved",
                    reason="NOT_PREVIOUS_VERSION",
                )
        elif store.approval(number) is None:
            raise PolicyWorkflowError(
                f"version {number} (by {version.author}) is not approved: another security "
                "officer must approve it first",
                reason="NOT_APPROVED",
            )
        problems = validate_files(version.files, purposes=self.recipe.purposes)
        store.record_check(number, "validate", problems)
        if problems:
            raise PolicyWorkflowError(
                f"version {number} is invalid ({len(problems)} problems; first: {problems[0]}); "
                "the active version keeps serving",
                reason="VALIDATION_FAILED",
            )
        if not rollback:
            cases, failures = self._test(number)
            if failures:
                raise PolicyWorkflowError(
                    f"version {number} fails {len(failures)} of {cases} policy test cases "
                    f"(first: {failures[0]}); the active version keeps serving",
                    reason="TESTS_FAILED",
                )
        return self._prepare(number)

    def _prepare(self, number: int) -> tuple[LoadedVersion, Decider]:
        """Load, build and warm a version's decider (in a thread: compiling costs)."""
        loaded = self._load(number)
        if loaded.catalog.digest != self._serving.catalog.digest:
            self._check_catalog_change(number, loaded.catalog)
        # Here, not only at activation: a process following another's activation
        # must refuse it too, since its authenticators hold the registry it started with.
        if self.store.version(number).files["agencies.toml"] != self._serving.registry_text:
            raise PolicyWorkflowError(
                f"version {number} changes the agency registry, which the authenticators hold: "
                "deploy it with a restart, not a hot switch",
                reason="REGISTRY_CHANGED",
            )
        try:
            decider = self.recipe.build(loaded)
        except ConfigError as err:
            raise PolicyWorkflowError(
                f"version {number}: {err.message}", reason="LOAD_FAILED"
            ) from None
        started = time.perf_counter()
        # Compile before the switch, so that the first queries after it are cache hits.
        warm(decider, loaded, self.recipe.purposes)
        log.debug("warmed policy version %d in %.3f s", number, time.perf_counter() - started)
        return loaded, decider

    def _check_catalog_change(self, number: int, catalog: Catalog) -> None:
        """Raise PolicyWorkflowError unless this gateway can switch to ``catalog`` hot."""
        known = self._serving.departments
        if known is None or self._install_catalog is None:
            raise PolicyWorkflowError(
                f"version {number} changes the data catalog, which this gateway cannot "
                "switch while serving: deploy it with a restart, not a hot switch",
                reason="CATALOG_CHANGED",
            )
        unknown = sorted(d for d in catalog.departments if d not in known)
        if unknown:
            # Department ids are catalog names, not identifiers of anyone.
            raise PolicyWorkflowError(
                f"version {number}'s catalog names department(s) {', '.join(unknown)} that "
                "the gateway config has no address for: add [departments.<id>] address to "
                "the config (a restart) before activating it",
                reason="DEPARTMENT_NOT_CONFIGURED",
            )

    def _switch(self, loaded: LoadedVersion, decider: Decider) -> None:
        if loaded.catalog.digest != self._serving.catalog.digest:
            # Departments added are checked before they are asked; the decider below
            # may already name them (their sections say unavailable until then).
            assert self._install_catalog is not None  # _check_catalog_change
            self._install_catalog(loaded.catalog)
            self._serving = dataclasses.replace(
                self._serving,
                catalog=loaded.catalog,
                catalog_text=loaded.files["catalog.toml"],
            )
        if self._install is not None:
            self._install(decider)
        if self._meter is not None:
            # The meter reads its price list per query: one reference assignment.
            self._meter.prices = loaded.prices
        if self.limiter is not None:
            self.limiter.configure(loaded.limits)
        self.installed = loaded.number
        self.current = loaded
        self._poll_failed = None


def _screen(field: str, text: str) -> None:
    """Refuse free text holding an identifier: the policy store keeps reasons and
    file names for good, in clear, and lists them to every officer. The rule is the
    query fields' (:func:`~gateway.pipeline.freetext.holds_identifier`): a ticket id
    or UUID is not refused for the check-valid digit pattern about one random hex id
    in thirty holds (it was, at random, before).

    Raises InvalidArgumentError naming ``field``, never repeating the text.
    """
    if holds_identifier(text):
        raise InvalidArgumentError(
            field,
            "must not contain a resident identity number or unified social credit code "
            "(the text is not repeated)",
        )
