"""The policy test matrix: cases kept as data, run against any decider.

Security officers write cases in TOML (``policies/tests/*.toml``) and run them against a
draft policy before it is activated (``run_matrix``, or ``credit-gateway policy test`` from
the command line); the unit tests run them against the shipped policy. A case::

    [[case]]
    name = "bank, lending, personal loans with a valid consent"
    agency = "bank"
    purpose = "lending"
    mode = "paid"                       # free | paid
    subject = "person"                  # person | enterprise
    datasets = ["pbccrc/personal_loans"]  # optional: default every dataset of the subject type
    consent = "valid"                   # none (default) | valid | expired | revoked |
                                        # other_agency | other_purpose | other_subject |
                                        # out_of_scope | invalid
    scope = ["pbccrc/personal_loans"]   # consent scope; default every requested dataset
    self = false                        # the subject queries itself (QueryFacts.is_self)
    visible = ["pbccrc/personal_loans/*"]
    withheld = { "pbccrc/overdue_records/*" = "consent_required" }
    detail = { "pbccrc/overdue_records/*" = "out of scope" }   # substring of the detail
    called = ["pbccrc"]                 # departments that must be asked
    not_called = ["market"]             # departments that must not be asked (nothing allowed)
    exact = true                        # default: every requested field must be covered

Keys of ``visible``, ``withheld`` and ``detail`` are patterns over the requested fields:
``dept/dataset/field``, ``dept/dataset/*``, ``dept/*`` or ``*``; the most specific pattern
covering a field says what is expected of it (``visible`` or a reason: not_granted,
consent_required, paid_mode_required, free_mode_required, prohibited_item, state_secret).
With ``exact`` every requested field must be covered and nothing else may be visible.

Consent tokens are minted by the runner with a throw-away issuer key that the decider
factory is asked to trust; ``revoked`` consents are put on the revocation list it is given.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.auth.registry import Registry, load_registry
from gateway.auth.tokens import TrustedIssuer
from gateway.domain.catalog import Catalog, Dataset, load_catalog
from gateway.domain.files import load_toml, policies_path
from gateway.errors import ConfigError
from gateway.pipeline.decision import Decider, Decision, QueryFacts
from gateway.policy.consent import issue_consent
from protos.credit.v1 import query_pb2

__all__ = [
    "CONSENT_STATES",
    "DEFAULT_MATRIX_PATH",
    "Case",
    "DeciderFactory",
    "Failure",
    "MatrixIssuer",
    "default_factory",
    "load_cases",
    "run_matrix",
]

DEFAULT_MATRIX_PATH = policies_path("tests")
CONSENT_STATES = (
    "none",
    "valid",
    "expired",
    "revoked",
    "other_agency",
    "other_purpose",
    "other_subject",
    "out_of_scope",
    "invalid",
)
#: (trusted consent issuers, revoked consent ids) -> the decider under test.
DeciderFactory = Callable[[Sequence[TrustedIssuer], frozenset[str]], Decider]

_REASONS: dict[str, int] = {
    k.removeprefix("WITHHOLD_REASON_").lower(): v
    for k, v in query_pb2.WithholdReason.items()
    if v != query_pb2.WITHHOLD_REASON_UNSPECIFIED
}
_REASON_NAMES = {v: k for k, v in _REASONS.items()}
_MODES = {"free": query_pb2.QUERY_MODE_FREE, "paid": query_pb2.QUERY_MODE_PAID}
# Identifiers with valid check characters (GB 32100-2015 unified social credit codes,
# GB 11643-1999 resident identity numbers): the queried subject and "another subject".
_SUBJECTS = {
    "enterprise": ("91350200MA2YJ1XR9G", "91110000600037341L"),
    "person": ("360426199101010071", "34052419800101001X"),
}
_ISSUER = "urn:credit-gateway:policy-matrix:consent-issuer"
_KEYS = {
    "name",
    "agency",
    "purpose",
    "mode",
    "subject",
    "datasets",
    "consent",
    "scope",
    "self",
    "visible",
    "withheld",
    "detail",
    "called",
    "not_called",
    "exact",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """One case that did not hold (or could not be run)."""

    source: str
    case: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.case}: {self.message}"


@dataclass(frozen=True, slots=True)
class Case:
    """One ``[[case]]`` of a matrix file, validated; the fields are the keys above.

    ``source`` is the file name; ``is_self`` is the ``self`` key; ``scope`` is None when the
    case names none (the consent then covers every requested dataset); ``withheld`` and
    ``detail`` map field patterns to a reason and to a substring of the detail.
    """

    source: str
    name: str
    agency: str
    purpose: str
    mode: str
    subject: str
    datasets: tuple[str, ...]
    consent: str
    scope: tuple[str, ...] | None
    is_self: bool
    visible: tuple[str, ...]
    withheld: Mapping[str, str]
    detail: Mapping[str, str]
    called: tuple[str, ...]
    not_called: tuple[str, ...]
    exact: bool


@dataclass
class MatrixIssuer:
    """A throw-away consent issuer (Ed25519), and an untrusted twin for ``invalid``."""

    key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    stranger: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    kid: str = "policy-matrix-1"
    issuer: str = _ISSUER

    @property
    def trusted(self) -> TrustedIssuer:
        """The issuer as the decider trusts it: ``key``'s public half as an EdDSA JWK."""
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA"}
        return TrustedIssuer.from_jwks(self.issuer, {"keys": [jwk]}, source="policy-matrix")


def default_factory(
    catalog: Catalog | None = None,
    *,
    model: Path | None = None,
    policy: Path | None = None,
    registry: Registry | None = None,
) -> DeciderFactory:
    """A factory building :func:`gateway.policy.build_decider` over the given (draft) files."""
    from gateway.policy.decider import build_decider  # the decider imports nothing from here

    cat = catalog or load_catalog()

    def factory(issuers: Sequence[TrustedIssuer], revoked: frozenset[str]) -> Decider:
        return build_decider(
            cat,
            model=model,
            policy=policy,
            consent_issuers=issuers,
            revoked=revoked,
            registry=registry,
        )

    return factory


def _strs(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key}", "must be a list of strings")
    return tuple(value)


def _table(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, str]:
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{where}.{key}", "must be a table of strings")
    return value


def load_cases(path: Path) -> list[Case]:
    """Read the cases of one TOML file.

    Raises:
        ConfigError: the file cannot be read or parsed, or a case is malformed (the key names
            it, e.g. ``demo.toml:case[3].mode``).
    """
    doc = load_toml(path)
    raw_cases = doc.get("case")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise ConfigError(f"{path.name}:case", "no [[case]] tables")
    cases: list[Case] = []
    for i, raw in enumerate(raw_cases):
        where = f"{path.name}:case[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(where, "must be a table")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown key")
        for key in ("name", "agency", "purpose"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ConfigError(f"{where}.{key}", "required, a non-empty string")
        mode = raw.get("mode", "free")
        if mode not in _MODES:
            raise ConfigError(f"{where}.mode", "must be free or paid")
        subject = raw.get("subject", "enterprise")
        if subject not in _SUBJECTS:
            raise ConfigError(f"{where}.subject", "must be enterprise or person")
        consent = raw.get("consent", "none")
        if consent not in CONSENT_STATES:
            raise ConfigError(f"{where}.consent", f"must be one of {', '.join(CONSENT_STATES)}")
        withheld = _table(raw, "withheld", where)
        for pattern, reason in withheld.items():
            if reason not in _REASONS:
                raise ConfigError(
                    f"{where}.withheld.{pattern}",
                    f"unknown reason {reason!r} (one of {', '.join(_REASONS)})",
                )
        for flag in ("self", "exact"):
            if not isinstance(raw.get(flag, False), bool):
                raise ConfigError(f"{where}.{flag}", "must be true or false")
        cases.append(
            Case(
                source=path.name,
                name=raw["name"],
                agency=raw["agency"],
                purpose=raw["purpose"],
                mode=mode,
                subject=subject,
                datasets=_strs(raw, "datasets", where),
                consent=consent,
                scope=_strs(raw, "scope", where) if "scope" in raw else None,
                is_self=raw.get("self", False),
                visible=_strs(raw, "visible", where),
                withheld=withheld,
                detail=_table(raw, "detail", where),
                called=_strs(raw, "called", where),
                not_called=_strs(raw, "not_called", where),
                exact=raw.get("exact", True),
            )
        )
    return cases


def _specificity(pattern: str) -> int:
    if pattern == "*":
        return 0
    parts = pattern.split("/")
    if len(parts) == 2 and parts[1] == "*":
        return 1
    if len(parts) == 3 and parts[2] == "*":
        return 2
    if len(parts) == 3:
        return 3
    return -1


def _covers(pattern: str, fid: str) -> bool:
    if pattern.endswith("*"):
        return fid.startswith(pattern[:-1])
    return fid == pattern


def _resolve(patterns: Mapping[str, str], fid: str) -> tuple[str, str] | None:
    best: tuple[int, str, str] | None = None
    for pattern, value in patterns.items():
        if _covers(pattern, fid):
            s = _specificity(pattern)
            if best is None or s > best[0]:
                best = (s, pattern, value)
    return None if best is None else (best[1], best[2])


class _Runner:
    def __init__(self, catalog: Catalog, registry: Registry, issuer: MatrixIssuer) -> None:
        self.catalog = catalog
        self.registry = registry
        self.issuer = issuer
        self.revoked: set[str] = set()

    def datasets(self, case: Case) -> tuple[Dataset, ...]:
        if not case.datasets:
            return tuple(d for d in self.catalog.datasets() if case.subject in d.subject_types)
        out: list[Dataset] = []
        for ref in case.datasets:
            dept, _, name = ref.partition("/")
            ds = self.catalog.dataset(dept, name)
            if ds is None:
                raise ValueError(f"dataset {ref} is not in the catalog")
            if case.subject not in ds.subject_types:
                raise ValueError(f"dataset {ref} holds no {case.subject} subjects")
            out.append(ds)
        return tuple(out)

    def token(self, case: Case, datasets: Sequence[Dataset]) -> str:
        if case.consent == "none":
            return ""
        subject_id, other_subject = _SUBJECTS[case.subject]
        scope = list(case.scope) if case.scope is not None else []
        if not scope:
            scope = (
                ["none/none"]
                if case.consent == "out_of_scope"
                else sorted({f"{d.department}/{d.name}" for d in datasets})
            )
        now = time.time()
        key = self.issuer.stranger if case.consent == "invalid" else self.issuer.key
        cid = f"matrix-{len(self.revoked)}-{int(now * 1000)}-{id(case)}"
        if case.consent == "revoked":
            self.revoked.add(cid)
        return issue_consent(
            key,
            self.issuer.kid,
            issuer=self.issuer.issuer,
            subject_type=case.subject,
            subject_id=other_subject if case.consent == "other_subject" else subject_id,
            grantee="another_agency" if case.consent == "other_agency" else case.agency,
            purpose="another_purpose" if case.consent == "other_purpose" else case.purpose,
            scope=scope,
            lifetime_s=90 * 86400,
            cid=cid,
            now=now - 100 * 86400 if case.consent == "expired" else now,
        )

    def facts(self, case: Case, datasets: tuple[Dataset, ...], token: str) -> QueryFacts:
        return QueryFacts(
            agency_id=case.agency,
            subject_type=case.subject,
            purpose=case.purpose,
            mode=_MODES[case.mode],
            datasets=datasets,
            today=dt.date.today(),
            is_self=case.is_self,
            consent_token=token,
            subject_id=_SUBJECTS[case.subject][0],
        )


def _check(case: Case, datasets: Sequence[Dataset], decision: Decision) -> list[str]:
    problems: list[str] = []
    visible: set[str] = set()
    withheld: dict[str, tuple[str, str]] = {}
    for dept, dd in decision.departments.items():
        for ds_name, fields in dd.allowed.items():
            visible.update(f"{dept}/{ds_name}/{f}" for f in fields)
        for w in dd.withheld:
            name = _REASON_NAMES.get(w.reason, str(w.reason))
            withheld[f"{dept}/{w.dataset}/{w.field}"] = (name, w.detail)
    expected: dict[str, str] = dict.fromkeys(case.visible, "visible")
    for pattern, reason in case.withheld.items():
        if pattern in expected:
            problems.append(f"pattern {pattern} is both visible and withheld")
        expected[pattern] = reason
    for pattern in [*expected, *case.detail]:
        if _specificity(pattern) < 0:
            problems.append(f"pattern {pattern!r} is not dept/dataset/field, dept/dataset/*, ...")
    if problems:
        return problems
    requested = [f"{d.department}/{d.name}/{f}" for d in datasets for f in d.fields]
    for fid in requested:
        want = _resolve(expected, fid)
        got = "visible" if fid in visible else withheld.get(fid, ("absent", ""))[0]
        if want is None:
            if case.exact:
                problems.append(f"{fid}: not covered by the case (it is {got})")
            continue
        if got != want[1]:
            problems.append(f"{fid}: expected {want[1]} (by {want[0]}), got {got}")
            continue
        # A detail pattern speaks of withheld fields only; visible ones have no detail.
        wanted_detail = _resolve(case.detail, fid) if got != "visible" else None
        if wanted_detail is not None and wanted_detail[1] not in withheld.get(fid, ("", ""))[1]:
            problems.append(
                f"{fid}: detail {withheld.get(fid, ('', ''))[1]!r} does not contain "
                f"{wanted_detail[1]!r}"
            )
    extra = visible - set(requested)
    if extra:
        problems.append(f"visible but not requested: {', '.join(sorted(extra))}")
    asked = {dept for dept, dd in decision.departments.items() if dd.allowed}
    for dept in case.called:
        if dept not in asked:
            problems.append(f"department {dept} would not be asked")
    for dept in case.not_called:
        if dept in asked:
            problems.append(f"department {dept} would be asked")
    return problems


def run_matrix(
    decider_factory: DeciderFactory,
    path: Path | None = None,
    *,
    catalog: Catalog | None = None,
    registry: Registry | None = None,
) -> list[Failure]:
    """Run every case of ``path`` (a TOML file, or a folder of them; default
    ``policies/tests``) against the decider ``decider_factory`` builds. Returns the failures
    (empty: every case holds).

    The factory is called once, with the matrix's throw-away consent issuer and the ids of
    the consents the cases revoke.

    Raises:
        ConfigError: a case file is malformed (see :func:`load_cases`), or the factory raises
            it (an invalid draft policy).
    """
    path = path or DEFAULT_MATRIX_PATH
    files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
    if not files:
        raise ConfigError(str(path), "no policy test files (*.toml)")
    cat = catalog or load_catalog()
    runner = _Runner(cat, registry or load_registry(), MatrixIssuer())
    prepared: list[tuple[Case, tuple[Dataset, ...], str]] = []
    failures: list[Failure] = []
    for file in files:
        for case in load_cases(file):
            try:
                datasets = runner.datasets(case)
            except ValueError as exc:
                failures.append(Failure(case.source, case.name, str(exc)))
                continue
            prepared.append((case, datasets, runner.token(case, datasets)))
    decider = decider_factory([runner.issuer.trusted], frozenset(runner.revoked))
    for case, datasets, token in prepared:
        decision = decider.decide(runner.facts(case, datasets, token))
        failures.extend(
            Failure(case.source, case.name, p) for p in _check(case, datasets, decision)
        )
    return failures
