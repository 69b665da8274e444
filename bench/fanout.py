"""A seven-department query through the gateway against a bare proxy that fans out to
the same seven departments (issue 13), measured in one run.

The departments are the shipped catalog's seven (bench/_federation.py: in memory, every
field filled, two records per dataset), in one process both sides share. The agency is
``ndrc`` asking about one enterprise for ``administrative_licensing`` in free mode under
the shipped policy: every department is asked, for the public and government-shared
fields the policy allows, and the answer withholds the consent-bound ones with reasons.
The bare proxy (bench/_fanout_proxy.py) sends each department the very Lookup the
gateway sends (computed here with the gateway's own decider) and joins the answers'
bytes, parsing nothing: the ceiling. Both run with mutual TLS on both hops; the gateway
runs everything a deployment runs (bound tokens, live controls, replay store, limits
that never bind, durable audit log, ledger), as in bench.overhead.

    python -m bench.fanout [--rounds 3] [--seconds 4] [--concurrency 32]

Printed: medians of OK queries/s and of server CPU microseconds per query, the
gateway/bare ratios, and the answer size. Any answer not OK voids the run (exit 1).
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import statistics
import tempfile
from collections import Counter
from pathlib import Path

import policies
from bench import _procs
from bench.overhead import (
    ThreadSplit,
    _gateway_toml,
    _measure,
    _mint,
    _seed_policy_store,
    fresh_ids,
)
from gateway.cli.connect import build_request
from gateway.dev.devstack import ensure_audit_keys
from gateway.dev.pki import init_pki
from gateway.domain.catalog import load_catalog
from gateway.pipeline.decision import QueryFacts
from gateway.policy.decider import build_decider
from protos.credit.v1 import adapter_pb2, common_pb2, query_pb2

SUBJECT = "91350200MA2YJ1XR9G"
AGENCY = "ndrc"
PURPOSE = "administrative_licensing"


def _lookups(requests: Path, addresses: dict[str, str]) -> int:
    """Write each department's Lookup (as the gateway asks it) and address for the
    bare proxy; returns how many fields are asked in all."""
    catalog = load_catalog()
    decision = build_decider(catalog).decide(
        QueryFacts(
            agency_id=AGENCY,
            subject_type="enterprise",
            purpose=PURPOSE,
            mode=query_pb2.QUERY_MODE_FREE,
            datasets=tuple(ds for d in catalog.departments.values() for ds in d.datasets.values()),
            today=dt.date.today(),
        )
    )
    asked = 0
    for dept, address in addresses.items():
        allowed = decision.departments[dept].allowed if dept in decision.departments else {}
        req = adapter_pb2.LookupRequest(request_id="bench", agency_id=AGENCY, purpose=PURPOSE)
        req.subject.type, req.subject.id = common_pb2.SUBJECT_TYPE_ENTERPRISE, SUBJECT
        for ds, fields in sorted(allowed.items()):
            req.wanted.add(dataset=ds, fields=list(fields))
            asked += len(fields)
        (requests / f"{dept}.addr").write_text(address)
        (requests / f"{dept}.bin").write_bytes(req.SerializeToString())
    return asked


def lift_free_quotas(prices: Path) -> None:
    """Raise every free daily quota of the price list at ``prices`` (the shipped one gives
    ``ndrc`` 1,000 queries a day) to a billion, in place. Raises RuntimeError when the list
    has none to raise: a bench that ran into the shipped quota would measure refusals."""
    text = prices.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^daily_quota = \d+$", "daily_quota = 1000000000", text)
    text, m = re.subn(r"(?m)^ndrc = \d+$", "ndrc = 1000000000", text)
    if not n or not m:
        raise RuntimeError(f"{prices}: no free quota found to lift")
    prices.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 1 if any answer was not OK (the figures are then not valid)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)
    query = build_request(enterprise=SUBJECT, purpose=PURPOSE)
    shipped = Path(policies.__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("catalog.toml", "prices.toml", "policy.csv", "measures.toml"):
            shutil.copy(shipped / name, work / name)
        # The shipped free quotas (ndrc: 1,000 a day) would refuse most of the load.
        lift_free_quotas(work / "prices.toml")
        departments = sorted(load_catalog().departments)
        pki = init_pki(
            work / "pki", departments=departments, agencies=[AGENCY], officers=[], auditors=[]
        )
        tls = (
            pki.ca_cert.read_bytes(),
            pki.agency_key(AGENCY).read_bytes(),
            pki.agency_cert(AGENCY).read_bytes(),
        )
        metadata = (("authorization", f"Bearer {_mint(pki)}"),)
        pki_args = ["--pki", str(work / "pki")]
        audit = ensure_audit_keys(work / "audit")
        fed, listing = _procs.start(
            ["-m", "bench._federation", "--subject", SUBJECT, *pki_args], timeout_s=60
        )
        addresses = dict(item.split("=", 1) for item in listing.split(","))
        requests = work / "requests"
        requests.mkdir()
        asked = _lookups(requests, addresses)
        procs = [fed]
        try:
            proxy, proxy_addr = _procs.start(
                ["-m", "bench._fanout_proxy", "--requests", str(requests), *pki_args]
            )
            procs.append(proxy)
            (work / "gateway.toml").write_text(
                _gateway_toml(
                    work, "", pki, audit, True, departments=addresses,
                    catalog=work / "catalog.toml",
                ),
                encoding="utf-8",
            )  # fmt: skip
            _seed_policy_store(work)
            gw, gw_addr = _procs.start(
                [
                    "-m",
                    "bench._gateway",
                    "--config",
                    str(work / "gateway.toml"),
                    "--threads-file",
                    str(work / "threads.json"),
                ],
                ready="serving on",
                timeout_s=60,
            )
            procs.append(gw)
            bare: list[tuple[float, float]] = []
            gate: list[tuple[float, float]] = []
            bare_failed: Counter[str] = Counter()
            gate_failed: Counter[str] = Counter()
            split = ThreadSplit()
            payload = query.SerializeToString()
            for _ in range(args.rounds):
                bare.append(
                    _measure(proxy.pid, proxy_addr, "/credit.v1.QueryService/Query", payload,
                             metadata, args, tls, failed=bare_failed, threads=split.bare)
                )  # fmt: skip
                gate.append(
                    _measure(gw.pid, gw_addr, "/credit.v1.QueryService/Query",
                             fresh_ids(query), metadata, args, tls, failed=gate_failed,
                             threads=split.gateway)
                )  # fmt: skip
            split.take(proxy.pid, gw, work / "threads.json")
        finally:
            _procs.stop(*reversed(procs))

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs) or float("nan")

    print(
        f"seven-department query ({len(addresses)} departments, {asked} fields asked), "
        "mutual TLS + bound tokens, live checks, durable audit log, free-quota ledger, "
        "a new request id per query; "
        f"concurrency {args.concurrency}, {args.rounds} rounds of {args.seconds:g}s"
    )
    print(f"{'':10}{'queries/s':>12}{'CPU us/query':>15}")
    print(f"{'bare':10}{med(bare, 0):12.0f}{med(bare, 1):15.0f}")
    print(f"{'gateway':10}{med(gate, 0):12.0f}{med(gate, 1):15.0f}")
    print(
        f"ratio gateway/bare: throughput {med(gate, 0) / med(bare, 0):.2f}, "
        f"CPU per query {med(gate, 1) / med(bare, 1):.2f}"
    )
    print("\n".join(split.lines))

    def counts(failed: Counter[str]) -> str:
        return ", ".join(f"{n} {code}" for code, n in sorted(failed.items())) or "0"

    print(f"not OK: bare {counts(bare_failed)}; gateway {counts(gate_failed)}")
    if bare_failed or gate_failed:
        print("NOT VALID: some answers were not OK; the figures above count only OK answers")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
