"""What a query may see: the decision model and the catalog-only decider.

A :class:`Decision` says, per department, which fields of which datasets may
be asked for, and which are withheld and why. Deciders implement
:class:`Decider`. :class:`CatalogDecider` is the policy-free baseline: every
catalog field except state secrets and prohibited items. The Casbin decider
(``gateway.policy``) replaces it with per-agency grants; the pipeline does not
change.

Before deciding, a query citing a legal basis has it resolved by a :class:`BasisResolver`
(:class:`gateway.policy.legal.LegalBases`): the tiers it opens become
:attr:`QueryFacts.legal_tiers`. A consent a decision rests on is kept by a
:class:`ConsentKeeper` (:class:`gateway.subject.consents.ConsentArchive`) before any
department is asked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.domain.catalog import Catalog, Dataset, Tier
from protos.credit.v1 import query_pb2

__all__ = [
    "BasisResolver",
    "CatalogDecider",
    "ConsentKeeper",
    "Decider",
    "Decision",
    "DepartmentDecision",
    "QueryFacts",
    "ResolvedBasis",
    "SwitchableDecider",
    "Withheld",
]


@dataclass(frozen=True, slots=True)
class Withheld:
    """A field the decision withholds from the answer, and why."""

    dataset: str
    field: str
    reason: query_pb2.WithholdReason.ValueType
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DepartmentDecision:
    """What one department may be asked: datasets and fields allowed, fields withheld."""

    #: dataset -> fields that may be asked for; never an empty tuple.
    allowed: Mapping[str, tuple[str, ...]]
    withheld: tuple[Withheld, ...] = ()
    #: ``allowed`` as sets, for the per-record check after the fan-out;
    #: computed once per decision, and decisions are cached.
    allowed_sets: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sets = {ds: frozenset(fields) for ds, fields in self.allowed.items()}
        object.__setattr__(self, "allowed_sets", sets)


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision for one query: per department, under one policy version."""

    policy_version: str
    departments: Mapping[str, DepartmentDecision]
    consent_id: str = ""
    #: How often the consent has been used, this query included (0: no consent counted).
    consent_uses: int = 0
    #: The consent's expiry (Unix seconds; 0 without a consent), for the consent archive.
    consent_expires_at: int = 0
    #: Set when a consent granted a field and its use is still to be counted in the live
    #: controls store: a blocking call (one durable write, milliseconds) returning this
    #: decision with the use counted, or the decision for a spent consent. Call it once,
    #: off the event loop, before anything is asked (:func:`with_consent_counted`).
    #: Raises ControlsStoreError.
    count_use: Callable[[], Decision] | None = field(default=None, compare=False, repr=False)

    @property
    def allowed_fields(self) -> dict[str, Mapping[str, tuple[str, ...]]]:
        """department -> dataset -> fields that may be returned."""
        return {dept: dd.allowed for dept, dd in self.departments.items()}


def with_consent_counted(decision: Decision) -> Decision:
    """``decision`` with its consent use counted (blocking; see :attr:`Decision.count_use`),
    or ``decision`` itself when there is nothing to count. Raises ControlsStoreError."""
    return decision if decision.count_use is None else decision.count_use()


@dataclass(frozen=True, slots=True)
class QueryFacts:
    """What a decider may look at: who asks, about what kind of subject, why.

    The subject's identifier is deliberately absent except for the one
    comparison a self-query needs (``is_self``), so decisions cache well.
    """

    agency_id: str
    subject_type: str
    purpose: str
    mode: int  # query_pb2.QueryMode
    datasets: tuple[Dataset, ...]
    today: dt.date
    is_self: bool = False
    consent_token: str = ""
    #: Only for checking a consent's binding to the subject; never a cache key.
    subject_id: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    #: Tiers a legal basis the agency may cite opens without consent (Art. 18 "except where
    #: the law provides otherwise"); resolved before deciding by
    #: :meth:`gateway.policy.legal.LegalBases.resolve`. Empty: no basis cited.
    legal_tiers: frozenset[Tier] = frozenset()


class ResolvedBasis(Protocol):
    """A legal basis the caller may cite (:class:`gateway.policy.legal.LegalBasis`)."""

    @property
    def code(self) -> str:
        """The published code."""
        ...

    @property
    def tiers(self) -> frozenset[Tier]:
        """The tiers it opens without consent."""
        ...

    def confidential_until(self, query_date: dt.date) -> str:
        """YYYY-MM-DD from which the query is shown to the subject; "" if never hidden."""
        ...


class BasisResolver(Protocol):
    """The published legal bases (:class:`gateway.policy.legal.LegalBases`)."""

    def resolve(
        self,
        code: str,
        *,
        agency_id: str,
        agency_kind: str,
        purpose: str,
        case_reference: str,
    ) -> ResolvedBasis:
        """The basis if this agency may cite it for this purpose and case.

        Raises:
            InvalidArgumentError, PermissionDeniedError: it may not (the query is refused).
        """
        ...


class ConsentKeeper(Protocol):
    """The consent archive (Art. 18): a consent a query used, kept in signed form."""

    async def keep(
        self,
        consent_id: str,
        compact_jws: str,
        *,
        agency_id: str,
        subject_key: str,
        expires_at: int,
    ) -> None:
        """Archive the consent (idempotent); returns once it is durable.

        Raises:
            GatewayError: it could not be archived (the query is then refused).
        """
        ...


class Decider(Protocol):
    """Anything that decides a query from its facts (step 3)."""

    def decide(self, facts: QueryFacts) -> Decision:
        """The :class:`Decision` for ``facts``."""


def _legal_block(
    catalog_field_tier: Tier, prohibited: bool
) -> tuple[query_pb2.WithholdReason.ValueType, str] | None:
    """Rules no policy can override: state secrets never leave the department; the
    prohibited items of Decree 631 Art. 14 (religion, genes, fingerprints, blood type,
    disease and medical history) are never returned."""
    if prohibited:
        return query_pb2.WITHHOLD_REASON_PROHIBITED_ITEM, "Art. 14 prohibited item"
    if catalog_field_tier is Tier.STATE_SECRET:
        return query_pb2.WITHHOLD_REASON_STATE_SECRET, "state secret never leaves the department"
    return None


class SwitchableDecider:
    """The decider a running gateway uses, replaceable while it serves.

    Activating a policy version swaps the decider in one reference assignment:
    a query in flight finishes under the decision it already has, the next one
    gets the new version, and none is dropped.
    """

    def __init__(self, decider: Decider) -> None:
        self.current = decider

    def swap(self, decider: Decider) -> Decider:
        """Install ``decider``; returns the one it replaces."""
        old, self.current = self.current, decider
        return old

    def decide(self, facts: QueryFacts) -> Decision:
        """The decision of the decider currently in place."""
        return self.current.decide(facts)

    @property
    def version(self) -> str:
        """The policy version of the decider currently in place (``catalog-only`` without one)."""
        return str(getattr(self.current, "version", "catalog-only"))

    def cache_info(self) -> dict[str, int]:
        """The current decider's cache counters (hits, misses, size), or empty."""
        info = getattr(self.current, "cache_info", None)
        return dict(info()) if info is not None else {}


#: Tiers that need the subject's consent (Art. 18, Art. 40(3)).
CONSENT_TIERS = frozenset({Tier.PERSONAL_PRIVACY, Tier.COMMERCIAL_SECRET})

_CACHE_LIMIT = 4096


class CatalogDecider:
    """The public and government-shared parts of the catalog, nothing that
    needs consent, nothing the law forbids. A baseline that cannot over-share,
    for development and the federation tests; production uses the Casbin
    decider (:mod:`gateway.policy`)."""

    def __init__(self, catalog: Catalog, policy_version: str = "catalog-only") -> None:
        self._catalog = catalog
        self._version = policy_version
        self._cache: dict[tuple[tuple[str, str], ...], Decision] = {}

    def decide(self, facts: QueryFacts) -> Decision:
        """Never raises."""
        # Sorted, so that the order a caller lists datasets in makes no new entry.
        key = tuple(sorted((d.department, d.name) for d in facts.datasets))
        decision = self._cache.get(key)
        if decision is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()  # bounded; refilled from the hot keys at once
            decision = self._cache[key] = self._compute(facts.datasets)
        return decision

    def _compute(self, datasets: tuple[Dataset, ...]) -> Decision:
        allowed: dict[str, dict[str, tuple[str, ...]]] = {}
        withheld: dict[str, list[Withheld]] = {}
        for ds in datasets:
            fields: list[str] = []
            for f in ds.fields.values():
                block = _legal_block(f.tier, f.prohibited)
                if block is None and (f.tier in CONSENT_TIERS or f.consent_item):
                    block = (
                        query_pb2.WITHHOLD_REASON_CONSENT_REQUIRED,
                        "the catalog-only decider grants nothing that needs consent",
                    )
                if block is None:
                    fields.append(f.name)
                else:
                    withheld.setdefault(ds.department, []).append(Withheld(ds.name, f.name, *block))
            if fields:
                allowed.setdefault(ds.department, {})[ds.name] = tuple(fields)
        depts = {
            d: DepartmentDecision(allowed.get(d, {}), tuple(withheld.get(d, ())))
            for d in allowed.keys() | withheld.keys()
        }
        return Decision(self._version, depts)
