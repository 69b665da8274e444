"""A mix of queries as agencies send them (issue 13), through the gateway, against the
bare fan-out proxy over the same seven departments, in one run.

The seven departments are bench/_federation.py's (every field filled) for one
enterprise and one person; the gateway runs everything a deployment runs (mutual TLS,
bound tokens, live checks, durable audit log, ledger), under the shipped policy,
catalog and prices (free quotas lifted, limits that never bind). Of every ten
queries, six are the credit lead office's free public and government-shared look-up of
the enterprise (``ndrc``, administrative licensing), three a bank's paid, consent-bound
look-up of the person (``bank``, lending, a consent token for the personal-privacy tier
of the credit reference center: a consent verified and its use counted every time),
and one a refusal (an identifier with a wrong check character: INVALID_ARGUMENT, on
the audit record). The bare proxy fans every call out to the seven departments.

    python -m bench.mix [--rounds 3] [--seconds 4] [--concurrency 32]

Printed: queries/s and server CPU microseconds per query for the mix and for the bare
fan-out, medians over rounds, and the counts per kind. An answer other than the ones
expected voids the run (exit 1). Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc

import policies
from bench import _procs
from bench.fanout import AGENCY, PURPOSE, SUBJECT, _lookups, lift_free_quotas
from bench.overhead import _channel, _gateway_toml, _measure, _seed_policy_store
from gateway.cli.billing import billing_main
from gateway.cli.connect import build_request
from gateway.dev.devstack import AUDIENCE, ensure_audit_keys, mint_token
from gateway.dev.pki import Pki, init_pki
from gateway.domain.catalog import load_catalog
from gateway.policy.consent import issue_consent
from gateway.stores.sqlite.ledger import SQLiteLedger

PERSON = "11010519491231002X"
BAD_ID = "91350200MA2YJ1XR9H"  # wrong check character
KINDS = ("free public (ndrc)",) * 6 + ("paid with consent (bank)",) * 3 + ("refusal",)


def _requests(pki: Pki) -> dict[str, tuple[str, bytes, tuple[tuple[str, str], ...]]]:
    """kind -> (agency, request bytes template, metadata)."""
    consent = issue_consent(
        pki.consent.key(),
        pki.consent.signing_kid,
        issuer=pki.consent.issuer,
        subject_type="person",
        subject_id=PERSON,
        grantee="bank",
        purpose="lending",
        scope=["pbccrc/*", "tier:personal_privacy"],
        lifetime_s=86400,
        audience=AUDIENCE,
    )

    def md(agency: str) -> tuple[tuple[str, str], ...]:
        token = mint_token(pki, agency, pki.agency_cert(agency))
        return (("authorization", f"Bearer {token}"),)

    return {
        KINDS[0]: (
            AGENCY,
            build_request(enterprise=SUBJECT, purpose=PURPOSE).SerializeToString(),
            md(AGENCY),
        ),
        KINDS[6]: (
            "bank",
            build_request(
                person=PERSON, purpose="lending", mode="paid", consent_token=consent
            ).SerializeToString(),
            md("bank"),
        ),
        KINDS[9]: (
            AGENCY,
            build_request(enterprise=BAD_ID, purpose=PURPOSE).SerializeToString(),
            md(AGENCY),
        ),
    }


async def _drive_mix(
    address: str, pki: Pki, concurrency: int, seconds: float
) -> tuple[int, Counter[str], Counter[str]]:
    """(answers as expected, per kind, unexpected answers by kind and code)."""
    from protos.credit.v1 import query_pb2

    requests = _requests(pki)
    channels = {}
    for agency in {a for a, _, _ in requests.values()}:
        tls = (
            pki.ca_cert.read_bytes(),
            pki.agency_key(agency).read_bytes(),
            pki.agency_cert(agency).read_bytes(),
        )
        channels[agency] = _channel(address, tls)
    per_kind: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    calls = {
        kind: (channels[a].unary_unary("/credit.v1.QueryService/Query"), body, md)
        for kind, (a, body, md) in requests.items()
    }
    counter = 0
    done = 0

    async def one(kind: str) -> bool:
        call, body, md = calls[kind]
        req = query_pb2.QueryRequest.FromString(body)
        req.request_id = str(uuid.uuid4())
        try:
            await call(req.SerializeToString(), metadata=md, timeout=10)
        except grpc.aio.AioRpcError as err:
            if kind == KINDS[9] and err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return True
            unexpected[f"{kind}: {err.code().name}"] += 1
            return False
        if kind == KINDS[9]:
            unexpected[f"{kind}: answered"] += 1
            return False
        return True

    try:
        for kind in calls:  # warm up every path
            for _ in range(5):
                await one(kind)
        unexpected.clear()
        # The paid kind must really be consent-bound data delivered, not an answer with
        # every consent-bound field withheld (a consent that failed would still be "OK").
        call, body, md = calls[KINDS[6]]
        req = query_pb2.QueryRequest.FromString(body)
        req.request_id = str(uuid.uuid4())
        answer = query_pb2.QueryResponse.FromString(
            await call(req.SerializeToString(), metadata=md)
        )
        delivered = {s.department for s in answer.sections if any(d.records for d in s.datasets)}
        if "pbccrc" not in delivered:
            raise RuntimeError("the bank's consent was not honoured: nothing from pbccrc")
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal counter, done
            while time.perf_counter() < stop_at:
                kind = KINDS[counter % len(KINDS)]
                counter += 1
                if await one(kind):
                    done += 1
                    per_kind[kind] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for ch in channels.values():
            await ch.close()
    return done, per_kind, unexpected


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 1 if any answer was not the one expected (the run is void)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)
    shipped = Path(policies.__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("catalog.toml", "prices.toml", "policy.csv", "measures.toml"):
            shutil.copy(shipped / name, work / name)
        # The regular expressions once had a doubled backslash and lifted nothing:
        # ndrc's shipped 1,000 a day then refused the rest of a longer run.
        lift_free_quotas(work / "prices.toml")
        departments = sorted(load_catalog().departments)
        pki = init_pki(
            work / "pki",
            departments=departments,
            agencies=[AGENCY, "bank"],
            officers=[],
            auditors=[],
        )
        pki_args = ["--pki", str(work / "pki")]
        audit = ensure_audit_keys(work / "audit")
        fed, listing = _procs.start(
            ["-m", "bench._federation", "--subject", SUBJECT, "--person", PERSON, *pki_args],
            timeout_s=60,
        )
        addresses = dict(item.split("=", 1) for item in listing.split(","))
        requests = work / "requests"
        requests.mkdir()
        _lookups(requests, addresses)
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
                    consent_issuer=(pki.consent.issuer, pki.consent.jwks),
                ),
                encoding="utf-8",
            )  # fmt: skip
            _seed_policy_store(work)
            SQLiteLedger(work / "ledger.sqlite", create=True).close()
            out = io.StringIO()
            code = billing_main(
                ["--ledger", str(work / "ledger.sqlite"), "top-up", "bank", str(10**12),
                 "--reference", "bench", "--create", "--note", "bench"],
                out=out, err=out,
            )  # fmt: skip
            if code != 0:
                raise RuntimeError(f"top-up failed: {out.getvalue()}")
            gw, gw_addr = _procs.start(
                ["-m", "bench._gateway", "--config", str(work / "gateway.toml")],
                ready="serving on",
                timeout_s=60,
            )
            procs.append(gw)
            tls = (
                pki.ca_cert.read_bytes(),
                pki.agency_key(AGENCY).read_bytes(),
                pki.agency_cert(AGENCY).read_bytes(),
            )
            md = (("authorization", f"Bearer {mint_token(pki, AGENCY, pki.agency_cert(AGENCY))}"),)
            bare: list[tuple[float, float]] = []
            gate: list[tuple[float, float]] = []
            kinds: Counter[str] = Counter()
            unexpected: Counter[str] = Counter()
            bare_failed: Counter[str] = Counter()
            for _ in range(args.rounds):
                bare.append(
                    _measure(proxy.pid, proxy_addr, "/credit.v1.QueryService/Query", b"", md,
                             args, tls, failed=bare_failed)
                )  # fmt: skip
                cpu0 = _procs.cpu_seconds(gw.pid)
                t0 = time.perf_counter()
                n, per_kind, bad = asyncio.run(
                    _drive_mix(gw_addr, pki, args.concurrency, args.seconds)
                )
                elapsed = time.perf_counter() - t0
                cpu = _procs.cpu_seconds(gw.pid) - cpu0
                gate.append((n / elapsed, cpu / max(n, 1) * 1e6))
                kinds.update(per_kind)
                unexpected.update(bad)
        finally:
            _procs.stop(*reversed(procs))

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs) or float("nan")

    print(
        "mix of 6 free public look-ups (ndrc, enterprise), 3 paid consent-bound look-ups "
        "(bank, person), 1 refusal in 10, over seven departments; mutual TLS + bound "
        "tokens, live checks, durable audit log, ledger; a new request id per query; "
        f"concurrency {args.concurrency}, {args.rounds} rounds of {args.seconds:g}s"
    )
    print(f"{'':14}{'queries/s':>12}{'CPU us/query':>15}")
    print(f"{'bare fan-out':14}{med(bare, 0):12.0f}{med(bare, 1):15.0f}")
    print(f"{'gateway mix':14}{med(gate, 0):12.0f}{med(gate, 1):15.0f}")
    print(
        f"ratio gateway/bare: throughput {med(gate, 0) / med(bare, 0):.2f}, "
        f"CPU per query {med(gate, 1) / med(bare, 1):.2f}"
    )
    print("answered as expected: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    bad_all = unexpected + bare_failed
    if bad_all:
        print("NOT VALID: unexpected answers: " + ", ".join(f"{n} {k}" for k, n in bad_all.items()))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
