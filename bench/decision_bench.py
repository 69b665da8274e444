"""Policy decisions/s, cached and uncached, with 1,000 and 10,000 policy lines.

Run ``python -m bench.decision_bench [--lines 1000 10000] [--decisions N]``. A script, not a
test. For each policy size it generates a valid policy over the real catalog (synthetic
agencies and roles, every kind of object pattern, allow and deny lines, all purposes and
modes), then reports:

* load: parsing and validating the policy (and the version hash);
* direct Casbin: one ``enforce`` on the whole policy (what every field would cost without
  compilation);
* uncached: a decision with every cache cleared first (per-(agency, purpose) enforcer built,
  every field asked of Casbin in both modes);
* compiled: the decision cache cleared but the per-dataset answers kept (a new combination
  of datasets, consent scope or mode for a known agency and purpose);
* cached: decisions served from the cache, without and with a consent token (the token is
  verified from the consent cache, then bound to the query), with p50 and p99 latency.
  Target: p99 < 20 us.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time
from collections.abc import Callable, Sequence

from gateway.auth.registry import AgencyKind, Principal, Registry, Role, Status
from gateway.domain.catalog import Catalog, Dataset, Tier, load_catalog
from gateway.domain.purposes import load_purposes
from gateway.pipeline.decision import QueryFacts, _legal_block
from gateway.policy import PolicyDecider
from gateway.policy.consent import ConsentVerifier, issue_consent
from gateway.policy.rules import DEFAULT_MODEL_PATH, PolicySet, parse_policy_set
from gateway.policy.testing import MatrixIssuer
from protos.credit.v1 import query_pb2

SUBJECT_IDS = {"person": "360426199101010071", "enterprise": "91350200MA2YJ1XR9G"}
TIERS = [t.value for t in Tier if t is not Tier.STATE_SECRET]


def _registry(n: int) -> Registry:
    agencies = {
        f"agency{i:04d}": Principal(
            id=f"agency{i:04d}",
            role=Role.AGENCY,
            name_zh="机构",
            name_en="Agency",
            status=Status.ACTIVE,
            certificate_cn=f"agency{i:04d}",
            kind=AgencyKind.FINANCIAL_INSTITUTION,
        )
        for i in range(n)
    }
    return Registry({Role.AGENCY: agencies})


def _policy(catalog: Catalog, lines: int, agencies: Sequence[str], rng: random.Random) -> str:
    purposes = list(load_purposes())
    roles = [f"role:r{i:04d}" for i in range(max(lines // 20, 4))]
    out = [f"g, {a}, {rng.choice(roles)}" for a in agencies]
    out += [f"g, {rng.choice(agencies)}, {r}" for r in roles]  # every role is held
    out += [f"g, {rng.choice(agencies)}, {rng.choice(roles)}" for _ in range(len(agencies) // 2)]
    fields = [
        (ds, f)
        for ds in catalog.datasets()
        for f in ds.fields.values()
        if _legal_block(f.tier, f.prohibited) is None
    ]
    while len(out) < lines:
        ds, f = rng.choice(fields)
        kind = rng.random()
        tier = rng.choice(TIERS)
        if kind < 0.3:
            obj = "*"
        elif kind < 0.55:
            obj = f"{ds.department}/*"
        elif kind < 0.85:
            obj = f"{ds.department}/{ds.name}/*"
        else:
            obj, tier = f"{ds.department}/{ds.name}/{f.name}", f.tier.value
        eft = "deny" if rng.random() < 0.1 else "allow"
        mode = rng.choice(["free", "paid", "any"])
        out.append(f"p, {rng.choice(roles)}, {obj}, {tier}, {rng.choice(purposes)}, {mode}, {eft}")
    return "\n".join(out) + "\n"


def _facts(
    catalog: Catalog,
    agencies: Sequence[str],
    rng: random.Random,
    n: int,
    tokens: dict[tuple[str, str, str], str] | None = None,
) -> list[QueryFacts]:
    purposes = list(load_purposes())
    by_type = {st: [d for d in catalog.datasets() if st in d.subject_types] for st in SUBJECT_IDS}
    everything = {st: tuple(ds) for st, ds in by_type.items()}
    facts: list[QueryFacts] = []
    for _ in range(n):
        subject = rng.choice(list(SUBJECT_IDS))
        datasets: tuple[Dataset, ...] = (
            everything[subject]
            if rng.random() < 0.5
            else tuple(rng.sample(by_type[subject], rng.randint(1, 4)))
        )
        agency, purpose = rng.choice(agencies), rng.choice(purposes)
        facts.append(
            QueryFacts(
                agency_id=agency,
                subject_type=subject,
                purpose=purpose,
                mode=rng.choice([query_pb2.QUERY_MODE_FREE, query_pb2.QUERY_MODE_PAID]),
                datasets=datasets,
                today=dt.date(2026, 11, 1),
                consent_token=(tokens or {}).get((agency, purpose, subject), ""),
                subject_id=SUBJECT_IDS[subject],
            )
        )
    return facts


def _rate(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed, n


def _latencies(decider: PolicyDecider, facts: Sequence[QueryFacts], rounds: int) -> list[int]:
    out: list[int] = []
    clock = time.perf_counter_ns
    decide = decider.decide
    for _ in range(rounds):
        for f in facts:
            t0 = clock()
            decide(f)
            out.append(clock() - t0)
    return out


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def run(lines: int, decisions: int, seed: int) -> None:
    rng = random.Random(seed)
    catalog = load_catalog()
    agencies = [f"agency{i:04d}" for i in range(200)]
    registry = _registry(len(agencies))
    text = _policy(catalog, lines, agencies, rng)
    model = DEFAULT_MODEL_PATH.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    policy: PolicySet = parse_policy_set(
        model, text, catalog, purposes=tuple(load_purposes()), agencies=registry.ids(Role.AGENCY)
    )
    load_ms = (time.perf_counter() - t0) * 1000
    issuer = MatrixIssuer()
    decider = PolicyDecider(catalog, policy, ConsentVerifier([issuer.trusted]), cache_size=4096)
    print(f"\n== {len(text.splitlines()):,} policy lines ({len(policy.grants):,} p, "
          f"{len(policy.links):,} g), version {policy.version}")  # fmt: skip
    print(f"  load + validate            {load_ms:10.1f} ms")

    probe = _facts(catalog, agencies, rng, 5)
    times = []
    for f in probe:
        ds = f.datasets[0]
        field = next(iter(ds.fields.values()))
        obj = f"{ds.department}/{ds.name}/{field.name}"
        t = time.perf_counter()
        decider.enforce(f.agency_id, obj, field.tier.value, f.purpose, "free")
        times.append(time.perf_counter() - t)
    per_enforce = statistics.median(times[1:])  # the first builds the enforcer
    fields = statistics.mean(sum(len(d.fields) for d in f.datasets) for f in probe)
    direct_rate = 1 / (per_enforce * 2 * fields)
    print(f"  direct Casbin enforce      {per_enforce * 1e3:10.2f} ms per field and mode "
          f"(~{direct_rate:,.1f} decisions/s at {fields:.0f} fields)")  # fmt: skip

    pool = _facts(catalog, agencies, rng, 400)
    i = 0

    def uncached() -> None:
        nonlocal i
        decider.clear_caches()
        decider.decide(pool[i % len(pool)])
        i += 1

    rate, n = _rate(uncached, 3.0)
    print(f"  uncached                   {rate:10,.0f} decisions/s  ({n} decisions)")

    for f in pool:  # compile every (agency, purpose, dataset) of the pool
        decider.decide(f)

    def compiled() -> None:
        nonlocal i
        decider.clear_caches(compiled=False)
        decider.decide(pool[i % len(pool)])
        i += 1

    rate, n = _rate(compiled, 2.0)
    print(f"  compiled, decision missed  {rate:10,.0f} decisions/s  ({n} decisions)")

    hot = pool[:200]
    for f in hot:
        decider.decide(f)
    start = time.perf_counter()
    lat = _latencies(decider, hot, max(1, decisions // len(hot)))
    rate = len(lat) / (time.perf_counter() - start)
    print(f"  cached                     {rate:10,.0f} decisions/s  "
          f"p50 {_pct(lat, 0.5):5.1f} us  p99 {_pct(lat, 0.99):5.1f} us")  # fmt: skip

    tokens = {}
    for f in hot:
        key = (f.agency_id, f.purpose, f.subject_type)
        if key not in tokens:
            tokens[key] = issue_consent(
                issuer.key,
                issuer.kid,
                issuer=issuer.issuer,
                subject_type=f.subject_type,
                subject_id=f.subject_id,
                grantee=f.agency_id,
                purpose=f.purpose,
                scope=["tier:personal_privacy", "tier:commercial_secret"],
            )
    with_consent = [
        QueryFacts(**{**{k: getattr(f, k) for k in f.__dataclass_fields__},
                      "consent_token": tokens[(f.agency_id, f.purpose, f.subject_type)]})
        for f in hot
    ]  # fmt: skip
    for f in with_consent:
        decider.decide(f)
    start = time.perf_counter()
    lat = _latencies(decider, with_consent, max(1, decisions // len(hot)))
    rate = len(lat) / (time.perf_counter() - start)
    print(f"  cached, with consent token {rate:10,.0f} decisions/s  "
          f"p50 {_pct(lat, 0.5):5.1f} us  p99 {_pct(lat, 0.99):5.1f} us")  # fmt: skip
    info = decider.cache_info()
    print(f"  cache: {info['decisions']} decisions, {info['dataset_rules']} dataset rule sets")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--decisions", type=int, default=200_000, help="cached decisions timed")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    for lines in args.lines:
        run(lines, args.decisions, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
