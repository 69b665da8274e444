"""From a version's file texts to a decider: parse, validate, test.

    loaded = load_version(version, purposes=("lending", ...))   # raises ConfigError
    problems = validate_files(files, purposes=...)               # a list, never raises
    cases, failures = run_tests(loaded, recipe)                  # the policy test matrix
    decider = recipe.build(loaded)                               # a PolicyDecider

Everything reuses the loaders the gateway starts with
(:func:`gateway.domain.catalog.parse_catalog`, :func:`gateway.auth.registry.parse_registry`,
:func:`gateway.billing.prices.parse_prices`, :func:`gateway.pipeline.limits.parse_limits`,
:func:`gateway.policy.parse_policy_set`), so a version that validates here is one the
gateway would have accepted from files on disk.

The decider of version *n* reports ``policy_version`` ``v<n>-<hash>`` (:func:`version_label`):
the store's number, so that an auditor finds the version a query was decided under, and the
content hash of model, policy and catalog, so that two gateways deciding alike say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.auth.registry import DEFAULT_REGISTRY_PATH, Registry, Role, parse_registry
from gateway.auth.tokens import TrustedIssuer
from gateway.billing.prices import PriceList, default_prices_path, parse_prices
from gateway.domain.catalog import Catalog, default_catalog_path, parse_catalog
from gateway.domain.files import parse_toml, policies_path
from gateway.errors import ConfigError, GatewayError
from gateway.pipeline.decision import Decider
from gateway.pipeline.limits import UNLIMITED, Limits, parse_limits
from gateway.policy import DEFAULT_MODEL_PATH, DEFAULT_POLICY_PATH, PolicyDecider, PolicySet
from gateway.policy.consent import ConsentVerifier, load_revocations
from gateway.policy.decider import DEFAULT_CREDIT_DEPARTMENTS
from gateway.policy.rules import parse_policy_set
from gateway.policy.testing import DEFAULT_MATRIX_PATH, load_cases, run_matrix
from gateway.policyadmin.store import FILE_NAMES, PolicyVersion, check_files
from gateway.screening.measures import MEASURES_FILE, default_measures_path, parse_measures_text

#: The shipped rate limits (``policies/limits.toml``).
DEFAULT_LIMITS_PATH = policies_path("limits.toml")

__all__ = [
    "DEFAULT_LIMITS_PATH",
    "DeciderRecipe",
    "LoadedVersion",
    "load_version",
    "read_disk_files",
    "run_tests",
    "validate_files",
    "version_label",
    "version_number",
]

#: At most this many policy problems are collected (each costs a re-parse).
_MAX_PROBLEMS = 50


def version_label(number: int, policy_hash: str) -> str:
    """What queries decided under version ``number`` carry as ``policy_version``."""
    return f"v{number}-{policy_hash}"


def version_number(label: str) -> int | None:
    """The store number in a :func:`version_label`, or None (a decider not from the store)."""
    head, sep, _ = label.partition("-")
    if sep and head.startswith("v") and head[1:].isdigit():
        return int(head[1:])
    return None


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    """A version's files, parsed and cross-checked."""

    number: int
    catalog: Catalog
    registry: Registry
    prices: PriceList
    policy: PolicySet
    files: Mapping[str, str]
    #: The agencies' rate limits (:data:`~gateway.pipeline.limits.UNLIMITED` for a version
    #: without ``limits.toml``).
    limits: Limits = UNLIMITED


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _toml(files: Mapping[str, str], name: str) -> dict[str, Any]:
    return parse_toml(files[name], name)


def _in(name: str, err: ConfigError) -> ConfigError:
    # The parsers name keys inside a file; say which file too.
    return err if err.key.startswith(name) else ConfigError(f"{name}:{err.key}", err.problem)


def _parse_parts(
    files: Mapping[str, str], purposes: Collection[str]
) -> tuple[Catalog, Registry, PriceList, Limits]:
    try:
        catalog = parse_catalog(_toml(files, "catalog.toml"), digest=_digest(files["catalog.toml"]))
    except ConfigError as err:
        raise _in("catalog.toml", err) from None
    try:
        # The version's own departments are reserved names for its principals.
        registry = parse_registry(
            _toml(files, "agencies.toml"), departments=tuple(catalog.departments)
        )
    except ConfigError as err:
        raise _in("agencies.toml", err) from None
    try:
        prices = parse_prices(_toml(files, "prices.toml"))
        prices.check_catalog(catalog)
    except ConfigError as err:
        raise _in("prices.toml", err) from None
    limits = UNLIMITED
    if "limits.toml" in files:
        try:
            limits = parse_limits(
                _toml(files, "limits.toml"), agencies=registry.ids(Role.AGENCY), purposes=purposes
            )
        except ConfigError as err:
            raise _in("limits.toml", err) from None
    if MEASURES_FILE in files:
        # The screening measures catalog travels with the version (gateway.screening).
        try:
            parse_measures_text(files[MEASURES_FILE], catalog=catalog)
        except ConfigError as err:
            raise _in(MEASURES_FILE, err) from None
    return catalog, registry, prices, limits


def load_version(version: PolicyVersion, *, purposes: Collection[str]) -> LoadedVersion:
    """Parse and cross-check every file of ``version``.

    Raises:
        ConfigError: the first problem; the key names the file (``policy.csv:12``,
            ``catalog.toml:departments.tax...``).
        InvalidArgumentError: the file set itself is wrong (see
            :func:`gateway.policyadmin.store.check_files`).
    """
    files = version.files
    check_files(files)
    catalog, registry, prices, limits = _parse_parts(files, purposes)
    policy = parse_policy_set(
        files["model.conf"],
        files["policy.csv"],
        catalog,
        purposes=purposes,
        agencies=registry.ids(Role.AGENCY),
    )
    policy = dataclasses.replace(policy, version=version_label(version.number, policy.version))
    for name in files:
        if name.startswith("tests/"):
            _check_test_file(name, files[name])
    return LoadedVersion(
        number=version.number,
        catalog=catalog,
        registry=registry,
        prices=prices,
        policy=policy,
        files=files,
        limits=limits,
    )


def _check_test_file(name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        path.write_text(text, encoding="utf-8")
        load_cases(path)


def validate_files(files: Mapping[str, str], *, purposes: Collection[str]) -> list[str]:
    """Every problem of a file set, as ``<file>:<where>: <problem>`` lines (empty: valid).

    The policy loader stops at the first bad line; to list them all, each refused line is
    blanked and the policy parsed again (line numbers stay put), up to 50 problems.
    Never raises for a bad file.
    """
    try:
        check_files(files)
    except GatewayError as err:
        return [err.message]
    problems: list[str] = []
    try:
        catalog, registry, _, _ = _parse_parts(files, purposes)
    except ConfigError as err:
        return [err.message]
    lines = files["policy.csv"].splitlines()
    while len(problems) < _MAX_PROBLEMS:
        try:
            parse_policy_set(
                files["model.conf"],
                "\n".join(lines),
                catalog,
                purposes=purposes,
                agencies=registry.ids(Role.AGENCY),
            )
            break
        except ConfigError as err:
            problems.append(err.message)
            where, _, line = err.key.rpartition(":")
            if where != "policy.csv" or not line.isdigit() or not lines[int(line) - 1]:
                break  # a model problem, or one a blank line would not cure
            lines[int(line) - 1] = ""
    for name in sorted(files):
        if name.startswith("tests/"):
            try:
                _check_test_file(name, files[name])
            except ConfigError as err:
                problems.append(f"{name}: {err.message}")
    return problems


@dataclass(frozen=True)
class DeciderRecipe:
    """What the gateway's configuration adds to a version to make its decider: who may
    issue consents, the revocation list, the purposes."""

    purposes: tuple[str, ...]
    consent_issuers: tuple[TrustedIssuer, ...] = ()
    consent_audience: str | None = None
    revocations: Path | None = None
    credit_departments: tuple[str, ...] = DEFAULT_CREDIT_DEPARTMENTS
    cache_size: int = 4096
    #: Where the shipped policy test cases live (run against every version).
    matrix: Path = DEFAULT_MATRIX_PATH
    clock: Callable[[], float] = time.time

    def build(
        self,
        loaded: LoadedVersion,
        *,
        issuers: Sequence[TrustedIssuer] | None = None,
        revoked: Collection[str] = (),
    ) -> PolicyDecider:
        """The decider of ``loaded``. ``issuers`` replaces the configured consent issuers
        (the test matrix brings its own).

        Raises:
            ConfigError: the revocation file cannot be read.
        """
        verifier = ConsentVerifier(
            self.consent_issuers if issuers is None else issuers,
            audience=self.consent_audience if issuers is None else None,
            revoked=load_revocations(self.revocations) | frozenset(revoked),
            clock=self.clock,
        )
        return PolicyDecider(
            loaded.catalog,
            loaded.policy,
            verifier,
            credit_departments=self.credit_departments,
            cache_size=self.cache_size,
        )


def run_tests(loaded: LoadedVersion, recipe: DeciderRecipe) -> tuple[int, list[str]]:
    """Run the shipped test matrix (``recipe.matrix``) and the version's own
    ``tests/*.toml`` against ``loaded``. Returns (cases run, failures).

    Raises:
        ConfigError: a test file is malformed.
    """

    def factory(issuers: Sequence[TrustedIssuer], revoked: frozenset[str]) -> Decider:
        return recipe.build(loaded, issuers=issuers, revoked=revoked)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shipped = sorted(recipe.matrix.glob("*.toml")) if recipe.matrix.is_dir() else []
        for path in shipped:
            (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        for name, text in loaded.files.items():
            if name.startswith("tests/"):
                # Prefixed: a draft's case file adds to the shipped ones, never hides one.
                (folder / f"version-{Path(name).name}").write_text(text, encoding="utf-8")
        paths = sorted(folder.glob("*.toml"))
        if not paths:
            return 0, []
        cases = sum(len(load_cases(p)) for p in paths)
        failures = run_matrix(factory, folder, catalog=loaded.catalog, registry=loaded.registry)
    return cases, [str(f) for f in failures]


def read_disk_files(
    *,
    model: Path | None = None,
    policy: Path | None = None,
    catalog: Path | None = None,
    prices: Path | None = None,
    registry: Path | None = None,
    limits: Path | None = None,
    measures: Path | None = None,
) -> dict[str, str]:
    """The seven files of a version, read from disk (defaults: the shipped ``policies/``).
    For seeding version 1 and for ``credit-gateway policy draft``.

    Raises:
        ConfigError: a file cannot be read or is not UTF-8.
    """
    paths = dict(
        zip(
            (*FILE_NAMES, "limits.toml", MEASURES_FILE),
            (
                model or DEFAULT_MODEL_PATH,
                policy or DEFAULT_POLICY_PATH,
                catalog or default_catalog_path(),
                prices or default_prices_path(),
                registry or DEFAULT_REGISTRY_PATH,
                limits or DEFAULT_LIMITS_PATH,
                measures or default_measures_path(),
            ),
            strict=True,
        )
    )
    out: dict[str, str] = {}
    for name, path in paths.items():
        try:
            out[name] = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(str(path), "not UTF-8 text") from None
    return out
