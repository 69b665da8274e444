"""Gateway overhead against a bare grpc.aio pass-through proxy.

Both stand in front of the same trivial department (bench/_department.py), in
their own processes; one load generator drives each in turn with the same
concurrency, alternating rounds so that a noisy neighbour hurts both alike.
Printed: medians of throughput and of server CPU time per query, and the
gateway/bare ratios. Not a test: nothing here asserts a time.

    python -m bench.overhead [--rounds 3] [--seconds 4] [--concurrency 32]
        [--no-replay-store] [--fresh-tokens]

The gateway runs with its replay store (``[auth] replay_store``) unless
``--no-replay-store``. An agency reuses one token for every query (the store is
written once, on its first use); ``--fresh-tokens`` sends a newly minted token
with every query instead, the worst case, where each query pays one fsynced
write. Run both ways and compare the ratios for the store's cost per query.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt

from bench import _procs
from bench._department import CATALOG, POLICY, PRICES
from gateway.auth import issue_token
from gateway.auth.tokens import load_signing_key
from gateway.cli.connect import build_request, open_channel
from gateway.dev.devstack import AUDIENCE, ensure_audit_keys
from gateway.dev.pki import DEV_AGENCY_ISSUER, Pki, cert_thumbprint_pem, init_pki
from protos.credit.v1 import adapter_pb2

SUBJECT = "91350200MA2YJ1XR9G"


def _channel(address: str, tls: tuple[bytes, bytes, bytes] | None) -> grpc.aio.Channel:
    if tls is None:
        return open_channel(address)[0]
    ca, key, cert = tls
    return open_channel(address, ca=ca, cert=cert, key=key)[0]


async def _drive(
    address: str,
    method: str,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    seconds: float,
    tls: tuple[bytes, bytes, bytes] | None,
    fresh: Iterator[tuple[tuple[str, str], ...]] | None = None,
) -> int:
    async with _channel(address, tls) as channel:
        call = channel.unary_unary(method)
        for _ in range(20):  # warm up the connection and both servers
            await call(payload, metadata=metadata, timeout=10)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                md = metadata if fresh is None else next(fresh)
                await call(payload, metadata=md, timeout=10)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done


def _measure(
    pid: int,
    address: str,
    method: str,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    args: argparse.Namespace,
    tls: tuple[bytes, bytes, bytes] | None,
    fresh: Iterator[tuple[tuple[str, str], ...]] | None = None,
) -> tuple[float, float]:
    cpu0 = _procs.cpu_seconds(pid)
    t0 = time.perf_counter()
    n = asyncio.run(
        _drive(address, method, payload, metadata, args.concurrency, args.seconds, tls, fresh)
    )
    elapsed = time.perf_counter() - t0
    cpu = _procs.cpu_seconds(pid) - cpu0
    return n / elapsed, cpu / n * 1e6  # queries/s, CPU microseconds per query


def _mint(pki: Pki) -> str:
    return issue_token(
        pki.agency_token.key(),
        pki.agency_token.signing_kid,
        issuer=DEV_AGENCY_ISSUER,
        audience=AUDIENCE,
        subject="ndrc",
        cert_thumbprint=cert_thumbprint_pem(pki.agency_cert("ndrc").read_bytes()),
    )


def _fresh_tokens(pki: Pki) -> Iterator[tuple[tuple[str, str], ...]]:
    """Endless new tokens (new jti each), minted as the workers ask:
    signing one is a few tens of microseconds, far below a query's cost."""
    key, alg = load_signing_key(pki.agency_token.key())
    kid = pki.agency_token.signing_kid
    thumb = cert_thumbprint_pem(pki.agency_cert("ndrc").read_bytes())
    while True:
        now = int(time.time())
        claims = {
            "iss": DEV_AGENCY_ISSUER, "aud": AUDIENCE, "sub": "ndrc", "iat": now,
            "exp": now + 600, "jti": uuid.uuid4().hex, "cnf": {"x5t#S256": thumb},
        }  # fmt: skip
        token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})
        yield (("authorization", f"Bearer {token}"),)


def _gateway_toml(
    work: Path,
    dept_addr: str,
    pki: Pki | None,
    audit: dict[str, Path] | None,
    billing: bool,
    replay_store: bool = True,
) -> str:
    lines = ["[gateway]", 'listen = "127.0.0.1:0"', f'catalog = "{work / "catalog.toml"}"']
    if pki is None or audit is None:
        # Plaintext, or a gateway without its audit log: both only in development mode.
        lines.append("insecure_dev_plaintext = true")
    if pki is not None:
        lines += [
            "[tls]",
            f'cert = "{pki.gateway_server_cert}"',
            f'key = "{pki.gateway_server_key}"',
            f'client_ca = "{pki.ca_cert}"',
            "[auth]",
            f'audience = "{AUDIENCE}"',
            *([f'replay_store = "{work / "replay.sqlite"}"'] if replay_store else []),
            "[[auth.issuers]]",
            f'issuer = "{pki.agency_token.issuer}"',
            f'jwks = "{pki.agency_token.jwks}"',
            "[federation]",
            f'ca = "{pki.ca_cert}"',
            f'client_cert = "{pki.gateway_client_cert}"',
            f'client_key = "{pki.gateway_client_key}"',
        ]
    if audit is not None:
        lines += [
            "[audit]",
            f'path = "{audit["log"]}"',
            f'key = "{audit["key"]}"',
            f'pseudonym_key = "{audit["pseudonym_key"]}"',
        ]
    if pki is not None:  # outside development mode the policy decides, as in production
        lines += ["[policy]", f'policy = "{work / "policy.csv"}"']
    if billing:
        lines += [
            "[billing]",
            f'ledger = "{work / "ledger.sqlite"}"',
            f'prices = "{work / "prices.toml"}"',
        ]
    lines += ["[departments.bench]", f'address = "{dept_addr}"']
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--plaintext", action="store_true", help="no TLS, no tokens (development mode)")
    p.add_argument("--no-audit", action="store_true", help="run the gateway without its audit log")
    p.add_argument("--no-billing", action="store_true", help="run the gateway without its ledger")
    p.add_argument(
        "--no-replay-store", action="store_true", help="seen jtis in memory only, not in a file"
    )
    p.add_argument(
        "--fresh-tokens", action="store_true", help="a newly minted token for every query"
    )
    args = p.parse_args(argv)

    lookup = adapter_pb2.LookupRequest(request_id="bench", agency_id="bench", purpose="lending")
    lookup.subject.type, lookup.subject.id = 1, SUBJECT
    lookup.wanted.add(dataset="profile", fields=["name", "rating"])
    query = build_request(enterprise=SUBJECT, purpose="administrative_licensing")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "catalog.toml").write_text(CATALOG, encoding="utf-8")
        (work / "prices.toml").write_text(PRICES, encoding="utf-8")
        (work / "policy.csv").write_text(POLICY, encoding="utf-8")
        pki = None
        tls = None
        metadata: tuple[tuple[str, str], ...] = (("x-dev-agency-id", "ndrc"),)
        pki_args: list[str] = []
        if not args.plaintext:
            pki = init_pki(
                work / "pki", departments=["bench"], agencies=["ndrc"], officers=[], auditors=[]
            )
            tls = (
                pki.ca_cert.read_bytes(),
                pki.agency_key("ndrc").read_bytes(),
                pki.agency_cert("ndrc").read_bytes(),
            )
            token = _mint(pki)
            metadata = (("authorization", f"Bearer {token}"),)
            pki_args = ["--pki", str(work / "pki")]
        audit = None if args.no_audit else ensure_audit_keys(work / "audit")
        dept, dept_addr = _procs.start(["-m", "bench._department", *pki_args])
        proxy, proxy_addr = _procs.start(["-m", "bench._proxy", "--upstream", dept_addr, *pki_args])
        (work / "gateway.toml").write_text(
            _gateway_toml(
                work, dept_addr, pki, audit, not args.no_billing, not args.no_replay_store
            ),
            encoding="utf-8",
        )
        fresh = None
        if args.fresh_tokens and pki is not None:
            fresh = _fresh_tokens(pki)
        try:
            gw, gw_addr = _procs.start(
                ["-m", "gateway.cli.gateway", "--log-level", "WARNING",
                 "serve", "--config", str(work / "gateway.toml")],
                ready="serving on",
            )  # fmt: skip
        except BaseException:
            _procs.stop(proxy, dept)  # not left running when the gateway cannot start
            raise
        try:
            bare: list[tuple[float, float]] = []
            gate: list[tuple[float, float]] = []
            for _ in range(args.rounds):
                bare.append(
                    _measure(proxy.pid, proxy_addr, "/credit.v1.DepartmentAdapter/Lookup",
                             lookup.SerializeToString(), metadata, args, tls)
                )  # fmt: skip
                gate.append(
                    _measure(gw.pid, gw_addr, "/credit.v1.QueryService/Query",
                             query.SerializeToString(), metadata, args, tls, fresh)
                )  # fmt: skip
        finally:
            _procs.stop(gw, proxy, dept)

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    mode = "plaintext" if args.plaintext else "mutual TLS + bound tokens"
    mode += ", no audit" if args.no_audit else ", durable audit log"
    mode += ", no ledger" if args.no_billing else ", free-quota ledger"
    if not args.plaintext:
        mode += ", jtis in memory" if args.no_replay_store else ", replay store"
        mode += ", a fresh token per query" if args.fresh_tokens else ", one token reused"
    print(
        f"one-department query, {mode}; concurrency {args.concurrency}, "
        f"{args.rounds} rounds of {args.seconds:g}s"
    )
    print(f"{'':10}{'queries/s':>12}{'CPU us/query':>15}")
    print(f"{'bare':10}{med(bare, 0):12.0f}{med(bare, 1):15.0f}")
    print(f"{'gateway':10}{med(gate, 0):12.0f}{med(gate, 1):15.0f}")
    print(
        f"ratio gateway/bare: throughput {med(gate, 0) / med(bare, 0):.2f}, "
        f"CPU per query {med(gate, 1) / med(bare, 1):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
