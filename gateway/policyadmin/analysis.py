"""What a draft would change: ``diff`` (what each agency would see) and ``replay`` (how the
latest audited queries would have been decided).

    changes, compared = diff_versions(active, draft, recipe, with_consent=True)
    replayed, flips = replay_records(records, draft, recipe)

**Diff** asks both deciders about every (agency, purpose, mode, subject type) over every
dataset of that subject type, without consent and, with ``with_consent``, with a consent
covering every department (minted by a throw-away issuer both deciders trust), and reports
per combination the fields that become visible and those that become hidden. A self-query
purpose is asked as a self-query. Cheap: a few hundred decisions per decider, each compiled
once.

**Replay** rebuilds each audited query's facts from its record (agency, purpose, mode,
subject type, the datasets its sections name) and compares, per field, whether the policy
granted it then and whether the draft grants it now. The record holds no consent token, so
"granted" means granted by the policy: a field withheld only for want of consent counted as
granted then, and the draft is asked with a consent covering everything. The law's blocks
(prohibited items, state secrets) are never granted. Whether a query was a self-query (the
subject querying itself, ``QueryFacts.is_self``) is a decision input too: a record's
``self_query`` flag where it has one; otherwise a ``self_query``-purpose record that was
granted nothing was a refused self-query (another subject's) and one granted anything was
the subject's own (a refused one grants nothing whatever the policy, so asking it as one
would report every field as a false change). A dataset that returned no records and
had nothing withheld leaves no trace in the record and is not replayed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.audit.schema import QueryRecord
from gateway.auth.registry import Role
from gateway.domain.catalog import Catalog, Dataset
from gateway.pipeline.decision import Decider, Decision, QueryFacts
from gateway.policy import SELF_QUERY_PURPOSE
from gateway.policy.consent import issue_consent
from gateway.policy.testing import MatrixIssuer
from gateway.policyadmin.loading import DeciderRecipe, LoadedVersion
from protos.credit.v1 import query_pb2

__all__ = ["FieldChange", "Flip", "diff_versions", "replay_records", "warm"]

_MODES = {"free": query_pb2.QUERY_MODE_FREE, "paid": query_pb2.QUERY_MODE_PAID}
_SUBJECT_TYPES = ("enterprise", "person")
# Valid identifiers (check digits hold) standing for "the subject": consents bind to one.
_SUBJECT_IDS = {"enterprise": "91350200MA2YJ1XR9G", "person": "360426199101010071"}
_CONSENT_REASON = "consent_required"
_NOT_GRANTABLE = frozenset({"prohibited_item", "state_secret"})


@dataclass(frozen=True, slots=True)
class FieldChange:
    """What one combination would see differently under the draft."""

    agency: str
    purpose: str
    mode: str
    subject_type: str
    consent: bool
    visible: tuple[str, ...]  # dept/dataset/field newly visible
    hidden: tuple[str, ...]  # dept/dataset/field no longer visible


@dataclass(frozen=True, slots=True)
class Flip:
    """An audited query whose decision the draft would change."""

    log_index: int
    request_id: str
    agency: str
    purpose: str
    mode: str
    subject_type: str
    decided_under: str
    granted: tuple[str, ...]  # granted by the draft, not then
    denied: tuple[str, ...]  # granted then, not by the draft


def _visible(decision: Decision) -> frozenset[str]:
    return frozenset(
        f"{dept}/{ds}/{f}"
        for dept, dd in decision.departments.items()
        for ds, fields in dd.allowed.items()
        for f in fields
    )


def _policy_granted(decision: Decision) -> frozenset[str]:
    """Visible, or withheld only for want of consent."""
    withheld = frozenset(
        f"{dept}/{w.dataset}/{w.field}"
        for dept, dd in decision.departments.items()
        for w in dd.withheld
        if w.reason == query_pb2.WITHHOLD_REASON_CONSENT_REQUIRED
    )
    return _visible(decision) | withheld


class _Consents:
    """Full-scope consents from a throw-away issuer, one per (agency, purpose, subject)."""

    def __init__(self, departments: Iterable[str]) -> None:
        self.issuer = MatrixIssuer()
        self._scope = sorted(f"{d}/*" for d in set(departments))
        self._tokens: dict[tuple[str, str, str], str] = {}

    def token(self, agency: str, purpose: str, subject_type: str) -> str:
        key = (agency, purpose, subject_type)
        token = self._tokens.get(key)
        if token is None:
            token = self._tokens[key] = issue_consent(
                self.issuer.key,
                self.issuer.kid,
                issuer=self.issuer.issuer,
                subject_type=subject_type,
                subject_id=_SUBJECT_IDS[subject_type],
                grantee=agency,
                purpose=purpose,
                scope=self._scope,
                lifetime_s=3600,
            )
        return token


def _facts(
    agency: str,
    purpose: str,
    mode: int,
    subject_type: str,
    datasets: tuple[Dataset, ...],
    token: str,
    *,
    is_self: bool | None = None,
) -> QueryFacts:
    """``is_self`` None: every ``self_query`` asked as the subject's own (diff and warm-up)."""
    return QueryFacts(
        agency_id=agency,
        subject_type=subject_type,
        purpose=purpose,
        mode=mode,
        datasets=datasets,
        today=dt.date.today(),
        is_self=purpose == SELF_QUERY_PURPOSE if is_self is None else is_self,
        consent_token=token,
        subject_id=_SUBJECT_IDS[subject_type],
    )


def _datasets(catalog: Catalog, subject_type: str) -> tuple[Dataset, ...]:
    return tuple(d for d in catalog.datasets() if subject_type in d.subject_types)


def diff_versions(
    base: LoadedVersion,
    draft: LoadedVersion,
    recipe: DeciderRecipe,
    *,
    with_consent: bool = False,
) -> tuple[list[FieldChange], int]:
    """Per agency, purpose, mode, subject type (and consent), the fields that become visible
    or hidden from ``base`` to ``draft``. Returns (changes, combinations compared).

    Raises:
        ConfigError: the revocation file cannot be read (building a decider).
    """
    consents = _Consents([*base.catalog.departments, *draft.catalog.departments])
    trusted = [consents.issuer.trusted]
    sides = [(v, recipe.build(v, issuers=trusted)) for v in (base, draft)]
    agencies = sorted(set(base.registry.ids(Role.AGENCY)) | set(draft.registry.ids(Role.AGENCY)))
    changes: list[FieldChange] = []
    compared = 0
    for agency in agencies:
        for purpose in recipe.purposes:
            for mode_name, mode in _MODES.items():
                for subject_type in _SUBJECT_TYPES:
                    for consent in (False, True) if with_consent else (False,):
                        token = consents.token(agency, purpose, subject_type) if consent else ""
                        seen = [
                            _visible(
                                decider.decide(
                                    _facts(
                                        agency,
                                        purpose,
                                        mode,
                                        subject_type,
                                        _datasets(version.catalog, subject_type),
                                        token,
                                    )
                                )
                            )
                            for version, decider in sides
                        ]
                        compared += 1
                        if seen[0] != seen[1]:
                            changes.append(
                                FieldChange(
                                    agency,
                                    purpose,
                                    mode_name,
                                    subject_type,
                                    consent,
                                    tuple(sorted(seen[1] - seen[0])),
                                    tuple(sorted(seen[0] - seen[1])),
                                )
                            )
    return changes, compared


def warm(decider: Decider, version: LoadedVersion, purposes: Iterable[str]) -> int:
    """Ask ``decider`` once per agency, purpose, mode and subject type over every dataset,
    so that its compiled rules are cached before it serves. Returns the decisions made."""
    made = 0
    for agency in version.registry.ids(Role.AGENCY):
        for purpose in purposes:
            for mode in _MODES.values():
                for subject_type in _SUBJECT_TYPES:
                    datasets = _datasets(version.catalog, subject_type)
                    decider.decide(_facts(agency, purpose, mode, subject_type, datasets, ""))
                    made += 1
    return made


def _recorded(record: QueryRecord, catalog: Catalog) -> tuple[tuple[Dataset, ...], set[str]]:
    """The datasets a query record names, and the fields the policy granted then."""
    datasets: dict[tuple[str, str], Dataset] = {}
    not_granted: set[str] = set()
    if record.departments is None:
        return (), set()
    for dept, section in record.departments.items():
        names = list(section.datasets)
        for w in section.withheld:
            names.append(w.dataset)
            if w.reason != _CONSENT_REASON:
                not_granted.add(f"{dept}/{w.dataset}/{w.field}")
    for name in names:
        ds = catalog.dataset(dept, name)
        if ds is not None:
            datasets[(dept, name)] = ds
    fields = {f"{d.department}/{d.name}/{f}" for d in datasets.values() for f in d.fields}
    return tuple(datasets.values()), fields - not_granted


def replay_records(
    records: Iterable[tuple[int, Mapping[str, Any]]],
    draft: LoadedVersion,
    recipe: DeciderRecipe,
) -> tuple[int, list[Flip]]:
    """Re-decide audited query records ``(log index, record)`` under ``draft``; returns
    (queries replayed, the ones whose decision flips). Records of other kinds, refused
    queries and records naming no dataset are skipped.

    Raises:
        ConfigError: the revocation file cannot be read (building the decider).
    """
    consents = _Consents(draft.catalog.departments)
    decider: Decider = recipe.build(draft, issuers=[consents.issuer.trusted])
    replayed = 0
    flips: list[Flip] = []
    for index, raw in records:
        if raw.get("kind") != QueryRecord.KIND:
            continue
        record = QueryRecord.from_json(raw)
        if record.outcome not in ("ok", "partial"):
            continue
        mode = _MODES.get(record.mode)
        subject_type = record.subject_type
        if mode is None or subject_type not in _SUBJECT_IDS:
            continue
        datasets, before = _recorded(record, draft.catalog)
        if not datasets:
            continue
        agency, purpose = record.agency_id, record.purpose
        token = consents.token(agency, purpose, subject_type)
        flag = record.self_query
        is_self = flag if flag is not None else purpose == SELF_QUERY_PURPOSE and bool(before)
        decision = decider.decide(
            _facts(agency, purpose, mode, subject_type, datasets, token, is_self=is_self)
        )
        after = _policy_granted(decision)
        replayed += 1
        if before != after:
            flips.append(
                Flip(
                    log_index=index,
                    request_id=record.request_id,
                    agency=agency,
                    purpose=purpose,
                    mode=record.mode,
                    subject_type=subject_type,
                    decided_under=record.policy_version or "",
                    granted=tuple(sorted(after - before)),
                    denied=tuple(sorted(before - after)),
                )
            )
    return replayed, flips
