"""The Casbin decider: per department, the fields a query may see, and why the rest may not.

For every field of every requested dataset the outcome is decided in this order:

1. the law (``decision._legal_block``): an Art. 14 prohibited item -> ``PROHIBITED_ITEM``, a
   state secret -> ``STATE_SECRET``, whatever the policy says;
2. purpose ``self_query`` is for the subject's own records only: a query with that purpose
   that is not a self-query (``QueryFacts.is_self``) -> ``NOT_GRANTED``;
3. the policy (Casbin, ``enforce(agency, "dept/dataset/field", tier, purpose, mode)``): not
   granted in the query's mode but in the other one -> ``PAID_MODE_REQUIRED`` or
   ``FREE_MODE_REQUIRED``; in neither -> ``NOT_GRANTED``;
4. consent, for consent-bound fields (personal privacy and commercial secret tiers, Art. 14
   ``consent_item`` fields, enterprise credit data of the credit departments: Art. 40(3)):
   without a valid consent bound to this agency, purpose and subject and covering the field
   -> ``CONSENT_REQUIRED`` with a detail naming the problem (missing, expired, revoked, other
   agency, other purpose, other subject, out of scope, invalid). A self-query needs no
   consent: the subject is the one who would give it. Nor does a consent-bound field of a
   tier that the query's legal basis opens (``QueryFacts.legal_tiers``, resolved by
   :mod:`gateway.policy.legal`): the law stands in for the consent, the policy must still
   grant the field.

**Speed.** pycasbin's ``enforce`` evaluates the matcher against every policy line (~12 us a
line: 12 ms with a thousand lines), far too slow per field per query. So:

* per (agency, purpose) the decider builds a small enforcer holding only the lines whose
  subject is the agency or one of its roles and whose purpose is that purpose, and the role
  links reachable from the agency (:meth:`PolicySet.window`; exact, because the model is
  required to have ``g(r.sub, p.sub) && r.purpose == p.purpose`` as top-level conjuncts: no
  other line can match, no other link can matter);
* per (agency, purpose, dataset) it asks that enforcer once per field (once per tier when no
  line names single fields of the dataset), in both modes, and keeps the answers;
* per (agency, purpose, mode, subject type, self-query, consent scope or problem, datasets) it
  keeps the finished :class:`~gateway.pipeline.decision.Decision`.

All three caches are bounded LRUs and belong to one policy version (``version``: a content
hash of model, policy and catalog); a new policy is a new decider. The consent id is not part
of the cache key (that would make one entry per subject): the cached decision is copied with
the id filled in. pycasbin remains the source of truth: :meth:`PolicyDecider.enforce` asks the
whole policy directly, and a property test checks that cached decisions agree with it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Generic, TypeVar

import casbin

from gateway.auth.registry import Registry, Role, load_registry
from gateway.auth.tokens import TrustedIssuer
from gateway.controls import ControlsSnapshot, ControlsStore
from gateway.domain.catalog import Catalog, Dataset, Tier
from gateway.domain.purposes import load_purposes
from gateway.pipeline.decision import (
    CONSENT_TIERS,
    Decision,
    DepartmentDecision,
    QueryFacts,
    Withheld,
    _legal_block,
)
from gateway.policy.consent import (
    MISSING,
    ConsentCheck,
    ConsentProblem,
    ConsentVerifier,
    load_revocations,
)
from gateway.policy.rules import ENGINE_LOCK, PolicySet, load_policy_set
from protos.credit.v1 import query_pb2

__all__ = ["SELF_QUERY_PURPOSE", "PolicyDecider", "build_decider"]

SELF_QUERY_PURPOSE = "self_query"
#: Departments whose enterprise datasets are credit (信贷) information: consent-bound even
#: where the tier alone would not say so (Art. 40(3)).
DEFAULT_CREDIT_DEPARTMENTS = ("pbccrc",)
_FREE = query_pb2.QUERY_MODE_FREE
_PAID = query_pb2.QUERY_MODE_PAID
_R = query_pb2.WithholdReason

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A bounded mapping, least recently used out first. The caller holds the lock."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


#: A consent with ``max_uses`` used that many times already.
_SPENT = ConsentCheck(None, ConsentProblem.SPENT, "the consent has been used up")
#: The consent outcome of a self-query: none needed, the subject is the one who would give it.
_SELF = ConsentCheck(None, None, "a self-query needs no consent")


@dataclass(frozen=True, slots=True)
class _FieldRule:
    """What the policy and the law say about one field for one (agency, purpose)."""

    name: str
    tier: Tier
    block: tuple[query_pb2.WithholdReason.ValueType, str] | None
    free: bool
    paid: bool
    consent_bound: bool


@dataclass(slots=True)
class _AgencyPurpose:
    """The part of the policy that can apply to one agency and one purpose."""

    enforcer: casbin.Enforcer | None  # None: no line can match, everything is denied
    #: Datasets ``(dept, dataset)`` some line of which names single fields.
    field_level: frozenset[tuple[str, str]]


class PolicyDecider:
    """Decides with a validated :class:`~gateway.policy.rules.PolicySet` (see module doc).

    Thread-safe. ``decide`` on a cached key costs a consent-cache lookup (if a token is
    sent), building the key, and one dict lookup.
    """

    def __init__(
        self,
        catalog: Catalog,
        policy: PolicySet,
        consent: ConsentVerifier,
        *,
        credit_departments: Collection[str] = DEFAULT_CREDIT_DEPARTMENTS,
        cache_size: int = 4096,
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.consent = consent
        self.version = policy.version
        self._credit = frozenset(credit_departments)
        self._full: casbin.Enforcer | None = None
        self._lock = threading.Lock()
        # Compiling calls Casbin, which is not thread-safe; it has its own (re-entrant) lock
        # so that cache hits never wait for a compilation.
        self._compile_lock = threading.RLock()
        self._decisions: _Lru[Hashable, tuple[Decision, bool]] = _Lru(cache_size)
        self._rules: _Lru[tuple[str, str, str, str], tuple[_FieldRule, ...]] = _Lru(cache_size * 4)
        self._scopes: _Lru[tuple[str, str], _AgencyPurpose] = _Lru(max(cache_size // 4, 64))
        # Datasets keys: by identity of the requested tuple, and interned by value so that
        # equal keys are one object (tuple comparison then short-circuits on identity).
        self._ds_keys: dict[int, tuple[tuple[Dataset, ...], tuple[tuple[str, str], ...]]] = {}
        self._ds_interned: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        self._controls: ControlsStore | None = None

    def attach_controls(self, controls: ControlsStore | None) -> None:
        """Use the live controls store: consents it revokes are refused on the next query
        (cached verifications dropped at once), and every use of a consent is counted in it,
        a consent with ``max_uses`` being withheld once spent (``consent revoked/spent``).
        A gateway attaches its store to each decider it installs."""
        self._controls = controls
        self.consent.attach_controls(controls)
        if controls is not None:
            controls.add_listener(self._controls_changed)

    def _controls_changed(self, old: ControlsSnapshot, new: ControlsSnapshot) -> None:
        revoked = new.revoked_consents - old.revoked_consents
        if revoked:
            self.consent.forget(revoked)

    # --- the source of truth -----------------------------------------------------------

    def enforce(self, agency: str, obj: str, tier: str, purpose: str, mode: str) -> bool:
        """Ask the whole policy directly (slow: every line is evaluated). For tests, tools
        and the property test; queries are decided from the caches."""
        with self._compile_lock:
            if self._full is None:
                self._full = self.policy.enforcer()
            with ENGINE_LOCK:
                return bool(self._full.enforce(agency, obj, tier, purpose, mode))

    # --- caches ----------------------------------------------------------------------------

    def clear_caches(self, *, compiled: bool = True) -> None:
        """Forget every finished decision and, with ``compiled``, the per-dataset answers and
        per-(agency, purpose) enforcers too (benchmarks; a new policy gets a new decider)."""
        with self._compile_lock, self._lock:
            self._decisions.clear()
            if compiled:
                self._rules.clear()
                self._scopes.clear()

    def cache_info(self) -> dict[str, int]:
        """Sizes and hit counts of the decision cache, for metrics and tests."""
        with self._lock:
            return {
                "decisions": len(self._decisions),
                "decision_hits": self._decisions.hits,
                "decision_misses": self._decisions.misses,
                "dataset_rules": len(self._rules),
            }

    def reload_revocations(self, path: Path | None = None, extra: Iterable[str] = ()) -> None:
        """Re-read the revocation list; effective at the next query, cached consents included.

        Raises:
            ConfigError: see :func:`gateway.policy.consent.load_revocations` (the old list stays).
        """
        self.consent.set_revoked(load_revocations(path) | frozenset(extra))

    # --- deciding --------------------------------------------------------------------------

    def decide(self, facts: QueryFacts) -> Decision:
        """The decision for one query. Never raises for a bad consent (its fields are
        withheld). Never writes: a consent use to count is left to the caller, off the
        event loop (:attr:`Decision.count_use`, a durable write in the live controls store).

        Raises:
            ControlsStoreError: a live controls store is attached and cannot be read
                (no consent can then be checked against its revocations).
        """
        waived = facts.is_self and facts.purpose == SELF_QUERY_PURPOSE
        if waived:
            check = _SELF
        elif not facts.consent_token:
            check = MISSING
        else:
            check = self.consent.check(
                facts.consent_token,
                agency=facts.agency_id,
                purpose=facts.purpose,
                subject_type=facts.subject_type,
                subject_id=facts.subject_id,
            )
        decision, used = self._cached(facts, check, waived)
        consent = check.consent
        if consent is None:
            return decision
        # Not dataclasses.replace: this is the hot path, and the constructor is 2x faster.
        if used and self._controls is not None:
            # Counted when the consent grants this query a field, before anything is asked
            # or disclosed (a use is an attempt): by the caller, because the count is a
            # durable write and decide() runs on the event loop.
            return Decision(
                decision.policy_version,
                decision.departments,
                consent.cid,
                0,
                int(consent.expires_at),
                functools.partial(
                    self._count_use,
                    facts,
                    waived,
                    consent.cid,
                    consent.max_uses,
                    int(consent.expires_at),
                    decision,
                ),
            )
        return Decision(
            decision.policy_version, decision.departments, consent.cid, 0, int(consent.expires_at)
        )

    def _count_use(
        self,
        facts: QueryFacts,
        waived: bool,
        cid: str,
        max_uses: int | None,
        expires_at: int,
        decision: Decision,
    ) -> Decision:
        """:attr:`Decision.count_use`: count one use, atomically in the store, so that
        concurrent queries in any process never exceed ``max_uses``; a spent consent gets
        the decision without it. Blocking. Raises ControlsStoreError."""
        assert self._controls is not None
        counted = self._controls.use_consent(cid, max_uses=max_uses, expires_at=expires_at)
        if counted is None:
            return self._cached(facts, _SPENT, waived)[0]
        return Decision(decision.policy_version, decision.departments, cid, counted, expires_at)

    def _cached(
        self, facts: QueryFacts, check: ConsentCheck, waived: bool
    ) -> tuple[Decision, bool]:
        """The decision for ``facts`` under ``check`` and whether a field was granted only
        through the consent, from the cache or computed."""
        consent = check.consent
        consent_key: Hashable = (
            consent.scope_key if consent is not None else (check.problem, check.message)
        )
        key = (
            facts.agency_id,
            facts.purpose,
            facts.mode,
            facts.subject_type,
            facts.is_self,
            consent_key,
            facts.legal_tiers,
            self._datasets_key(facts.datasets),
        )
        with self._lock:
            found = self._decisions.get(key)
        if found is None:
            found = self._compute(facts, check, waived)
            with self._lock:
                self._decisions.put(key, found)
        return found

    def _datasets_key(self, datasets: tuple[Dataset, ...]) -> tuple[tuple[str, str], ...]:
        # "Every dataset" queries reuse one tuple object (the validator's); remembering its
        # key by identity spares building and hashing a fresh one per query. The entry keeps
        # the tuple alive, so its id cannot be reused by another object meanwhile.
        known = self._ds_keys.get(id(datasets))
        if known is not None and known[0] is datasets:
            return known[1]
        key = tuple([(d.department, d.name) for d in datasets])
        with self._lock:
            if len(self._ds_interned) > 4096:
                self._ds_interned.clear()  # a bound on memory; equal keys still work
            key = self._ds_interned.setdefault(key, key)
            if len(self._ds_keys) >= 256:
                # Oldest out (dicts keep insertion order); the validator's shared tuples
                # come back at once if evicted.
                del self._ds_keys[next(iter(self._ds_keys))]
            self._ds_keys[id(datasets)] = (datasets, key)
        return key

    def _compute(
        self, facts: QueryFacts, check: ConsentCheck, waived: bool
    ) -> tuple[Decision, bool]:
        allowed: dict[str, dict[str, tuple[str, ...]]] = {}
        withheld: dict[str, list[Withheld]] = {}
        consent = check.consent
        purpose = facts.purpose
        self_only = purpose == SELF_QUERY_PURPOSE and not facts.is_self
        free = facts.mode == _FREE
        known_mode = facts.mode in (_FREE, _PAID)
        by_law = facts.legal_tiers
        used = False
        for ds in facts.datasets:
            dept = ds.department
            out = withheld.setdefault(dept, [])
            fields: list[str] = []
            for rule in self._dataset_rules(facts.agency_id, purpose, ds):
                if rule.block is not None:
                    out.append(Withheld(ds.name, rule.name, *rule.block))
                    continue
                if self_only:
                    out.append(
                        Withheld(
                            ds.name,
                            rule.name,
                            _R.WITHHOLD_REASON_NOT_GRANTED,
                            "purpose self_query is only for a subject querying itself",
                        )
                    )
                    continue
                granted = known_mode and (rule.free if free else rule.paid)
                if not granted:
                    out.append(Withheld(ds.name, rule.name, *_not_granted(rule, facts.mode)))
                    continue
                if rule.consent_bound and not waived and rule.tier not in by_law:
                    if consent is None:
                        out.append(
                            Withheld(
                                ds.name,
                                rule.name,
                                _R.WITHHOLD_REASON_CONSENT_REQUIRED,
                                check.detail,
                            )
                        )
                        continue
                    if not consent.covers(dept, ds.name, rule.tier):
                        out.append(
                            Withheld(
                                ds.name,
                                rule.name,
                                _R.WITHHOLD_REASON_CONSENT_REQUIRED,
                                f"consent out of scope: it covers neither {dept}/{ds.name} "
                                f"nor tier {rule.tier.value}",
                            )
                        )
                        continue
                    used = True  # granted through the consent
                fields.append(rule.name)
            if fields:
                allowed.setdefault(dept, {})[ds.name] = tuple(fields)
        departments = {
            dept: DepartmentDecision(
                MappingProxyType(allowed.get(dept, {})), tuple(withheld.get(dept, ()))
            )
            for dept in withheld
        }
        return Decision(self.version, MappingProxyType(departments)), used

    def _dataset_rules(self, agency: str, purpose: str, ds: Dataset) -> tuple[_FieldRule, ...]:
        key = (agency, purpose, ds.department, ds.name)
        with self._lock:
            rules = self._rules.get(key)
        if rules is not None:
            return rules
        with self._compile_lock:
            rules = self._compile_dataset(agency, purpose, ds)
        with self._lock:
            self._rules.put(key, rules)
        return rules

    def _agency_purpose(self, agency: str, purpose: str) -> _AgencyPurpose:
        # The caller holds the compile lock.
        found = self._scopes.get((agency, purpose))
        if found is not None:
            return found
        grants, links = self.policy.window(agency, purpose)
        field_level = frozenset(
            (parts[0], parts[1])
            for g in grants
            if len(parts := g.obj.split("/")) == 3 and parts[2] != "*"
        )
        # Only allow lines can make a field visible; with none, nothing matches.
        allows = any(g.eft == "allow" for g in grants)
        enforcer = self.policy.enforcer(grants, links) if allows else None
        found = _AgencyPurpose(enforcer, field_level)
        self._scopes.put((agency, purpose), found)
        return found

    def _compile_dataset(self, agency: str, purpose: str, ds: Dataset) -> tuple[_FieldRule, ...]:
        scope = self._agency_purpose(agency, purpose)
        per_field = (ds.department, ds.name) in scope.field_level
        credit = ds.department in self._credit and "enterprise" in ds.subject_types
        memo: dict[str, tuple[bool, bool]] = {}
        rules: list[_FieldRule] = []
        for f in ds.fields.values():
            block = _legal_block(f.tier, f.prohibited)
            free = paid = False
            if block is None and scope.enforcer is not None:
                # Without field-level lines every field of a tier matches the same lines.
                group = f.name if per_field else f.tier.value
                answer = memo.get(group)
                if answer is None:
                    obj = f"{ds.department}/{ds.name}/{f.name}"
                    enforcer = scope.enforcer
                    with ENGINE_LOCK:
                        answer = (
                            bool(enforcer.enforce(agency, obj, f.tier.value, purpose, "free")),
                            bool(enforcer.enforce(agency, obj, f.tier.value, purpose, "paid")),
                        )
                    memo[group] = answer
                free, paid = answer
            rules.append(
                _FieldRule(
                    name=f.name,
                    tier=f.tier,
                    block=block,
                    free=free,
                    paid=paid,
                    consent_bound=f.tier in CONSENT_TIERS or f.consent_item or credit,
                )
            )
        return tuple(rules)


def _not_granted(rule: _FieldRule, mode: int) -> tuple[query_pb2.WithholdReason.ValueType, str]:
    if mode == _FREE and rule.paid:
        return _R.WITHHOLD_REASON_PAID_MODE_REQUIRED, "granted only for paid queries"
    if mode == _PAID and rule.free:
        return _R.WITHHOLD_REASON_FREE_MODE_REQUIRED, "granted only for free queries"
    return _R.WITHHOLD_REASON_NOT_GRANTED, "not granted to this agency for this purpose"


def build_decider(
    catalog: Catalog,
    *,
    model: Path | None = None,
    policy: Path | None = None,
    consent_issuers: Sequence[TrustedIssuer] | Sequence[tuple[str, Path]] = (),
    consent_audience: str | None = None,
    revocations: Path | None = None,
    revoked: Iterable[str] = (),
    registry: Registry | None = None,
    purposes: Collection[str] | None = None,
    credit_departments: Collection[str] = DEFAULT_CREDIT_DEPARTMENTS,
    cache_size: int = 4096,
    clock: Callable[[], float] = time.time,
) -> PolicyDecider:
    """The public entry point: a :class:`PolicyDecider` from the policy files.

    Defaults: ``policies/model.conf``, ``policies/policy.csv``,
    ``policies/consent_revocations.toml``, ``policies/agencies.toml``,
    ``policies/purposes.toml``. ``consent_issuers`` are trusted consent issuers, as
    :class:`TrustedIssuer` or ``(iss, jwks_path)`` pairs (none: consent-bound fields are never
    disclosed except to self-queries). ``revoked`` adds consent ids to the revocation file's.

    Raises:
        ConfigError: any file is missing or invalid (the key names the file and line), or two
            consent issuers share an ``iss`` or a ``kid``.
    """
    registry = registry if registry is not None else load_registry()
    purpose_codes = purposes if purposes is not None else tuple(load_purposes())
    policy_set = load_policy_set(
        catalog,
        model=model,
        policy=policy,
        purposes=purpose_codes,
        agencies=registry.ids(Role.AGENCY),
    )
    issuers = [
        i if isinstance(i, TrustedIssuer) else TrustedIssuer.from_jwks_file(i[0], i[1])
        for i in consent_issuers
    ]
    verifier = ConsentVerifier(
        issuers,
        audience=consent_audience,
        revoked=load_revocations(revocations) | frozenset(revoked),
        clock=clock,
    )
    return PolicyDecider(
        catalog,
        policy_set,
        verifier,
        credit_departments=credit_departments,
        cache_size=cache_size,
    )
