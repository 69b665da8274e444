"""Gateway overhead against a bare grpc.aio pass-through proxy.

Both stand in front of the same trivial department (bench/_department.py), in
their own processes; one load generator drives each in turn with the same
concurrency, alternating rounds so that a noisy neighbour hurts both alike.
Printed: medians of throughput (answered OK) and of server CPU time per query,
the gateway/bare ratios, each server's CPU per query split by thread (the event loop,
the ledger's thread, the other Python threads: audit writer, stores, ``asyncio.to_thread``
workers; gRPC core's own threads), and the answers that were not OK on either side: any
there (a rate limit, a deadline) and the run is not valid and exits 1. Not a
test: nothing here asserts a time.

    python -m bench.overhead [--rounds 3] [--seconds 4] [--concurrency 32]
        [--no-live-checks] [--no-replay-store] [--fresh-tokens]

With mutual TLS (the default) the gateway runs with the live checks of issue 11:
the live controls store (``[controls] store``: suspensions, revoked certificates
and consents, one version read per request), the replay store (``[auth]
replay_store``) and per-agency rate limits. The limits come, as in production,
from ``limits.toml`` of the active policy version: the bench seeds its policy
store (``[policy] store``) with a version whose limits are checked on every query
but never bind (:data:`LIMITS`); the shipped ones (200 queries/s for ``ndrc``)
would refuse most of the load. ``--no-live-checks`` serves the same configuration
(policy store included) without all three (bench/_gateway.py); compare the CPU
per query of both runs for the live checks' cost. ``--no-replay-store`` drops
only the replay store (seen jtis in memory). An agency reuses one token for every
query (the replay store is written once, on its first use); ``--fresh-tokens``
sends a newly minted token with every query instead, the worst case, where each
query pays one fsynced write.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
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
from gateway.domain.purposes import load_purposes
from gateway.policyadmin.loading import load_version, read_disk_files
from gateway.policyadmin.store import BOOTSTRAP_AUTHOR
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore
from protos.credit.v1 import adapter_pb2, query_pb2

SUBJECT = "91350200MA2YJ1XR9G"

#: The bench's ``limits.toml``: every agency's bucket and daily ceilings are checked on
#: every query, and never reached (a billion queries a second, a billion at once, a
#: two billion a day per purpose).
LIMITS = """\
version = "bench"
timezone = "Asia/Shanghai"

[default]
rate_per_s = 1000000000
burst = 1000000000
daily_per_purpose = 2000000000
"""


def _channel(address: str, tls: tuple[bytes, bytes, bytes] | None) -> grpc.aio.Channel:
    if tls is None:
        return open_channel(address)[0]
    ca, key, cert = tls
    return open_channel(address, ca=ca, cert=cert, key=key)[0]


def fresh_ids(query: query_pb2.QueryRequest) -> Iterator[bytes]:
    """``query`` serialised with a new request id each time: every query is a new
    booking, as an agency's are (one id sent again would be answered as a replay)."""
    while True:
        query.request_id = str(uuid.uuid4())
        yield query.SerializeToString()


async def _drive(
    address: str,
    method: str,
    payload: bytes | Iterator[bytes],
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    seconds: float,
    tls: tuple[bytes, bytes, bytes] | None,
    fresh: Iterator[tuple[tuple[str, str], ...]] | None = None,
) -> tuple[int, Counter[str]]:
    """Queries answered OK in ``seconds``, and the others by status code (warm-up too)."""
    failed: Counter[str] = Counter()
    async with _channel(address, tls) as channel:
        call = channel.unary_unary(method)

        async def one(md: tuple[tuple[str, str], ...]) -> bool:
            try:
                body = payload if isinstance(payload, bytes) else next(payload)
                await call(body, metadata=md, timeout=10)
            except grpc.aio.AioRpcError as err:
                failed[err.code().name] += 1
                return False
            return True

        for _ in range(20):  # warm up the connection and both servers
            await one(metadata)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                if await one(metadata if fresh is None else next(fresh)):
                    done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, failed


def _measure(
    pid: int,
    address: str,
    method: str,
    payload: bytes | Iterator[bytes],
    metadata: tuple[tuple[str, str], ...],
    args: argparse.Namespace,
    tls: tuple[bytes, bytes, bytes] | None,
    fresh: Iterator[tuple[tuple[str, str], ...]] | None = None,
    failed: Counter[str] | None = None,
    threads: list[Round] | None = None,
) -> tuple[float, float]:
    """OK queries/s and CPU microseconds per OK query; non-OK answers added to ``failed``,
    and the round's per-thread CPU readings to ``threads`` (see :func:`per_role`)."""
    cpu0 = _procs.cpu_seconds(pid)
    before = _procs.thread_cpu(pid) if threads is not None else {}
    t0 = time.perf_counter()
    n, bad = asyncio.run(
        _drive(address, method, payload, metadata, args.concurrency, args.seconds, tls, fresh)
    )
    elapsed = time.perf_counter() - t0
    cpu = _procs.cpu_seconds(pid) - cpu0
    if threads is not None:
        threads.append((before, _procs.thread_cpu(pid), n))
    if failed is not None:
        failed.update(bad)
    return n / elapsed, cpu / max(n, 1) * 1e6


#: One round's per-thread CPU readings of a server (before, after) and its OK queries.
Round = tuple[dict[int, tuple[str, float]], dict[int, tuple[str, float]], int]


def per_role(pid: int, rounds: list[Round], names: dict[int, str] | None) -> dict[str, float]:
    """Median over ``rounds`` of each thread role's CPU microseconds per OK query
    (roles: bench._procs.ROLES)."""
    shares = [
        {k: v / max(n, 1) * 1e6 for k, v in _procs.by_role(pid, a, b, names).items()}
        for a, b, n in rounds
    ]
    return {role: statistics.median(s[role] for s in shares) for role in _procs.ROLES}


def roles_line(label: str, roles: dict[str, float]) -> str:
    """``label`` and each role's CPU microseconds per query (zero roles left out)."""
    parts = ", ".join(f"{role} {us:.0f}" for role, us in roles.items() if us >= 0.5)
    return f"{label} CPU us/query by thread: {parts}"


@dataclasses.dataclass
class ThreadSplit:
    """Both servers' per-thread CPU readings over the rounds (``_measure(threads=...)``),
    then the two lines that print their split (:meth:`take`, while the gateway runs)."""

    bare: list[Round] = dataclasses.field(default_factory=list)
    gateway: list[Round] = dataclasses.field(default_factory=list)
    lines: list[str] = dataclasses.field(default_factory=list)

    def take(self, bare_pid: int, gateway: subprocess.Popen[str], names_file: Path) -> None:
        """Ask the bench gateway which native thread is which (it must answer: without
        the names its ledger thread would be counted with the others) and work out both
        lines. Raises RuntimeError if it does not answer."""
        names = _procs.python_thread_names(gateway, names_file)
        if not names:
            raise RuntimeError("the bench gateway did not name its threads (SIGUSR1)")
        self.lines = [
            roles_line("bare", per_role(bare_pid, self.bare, None)),
            roles_line("gateway", per_role(gateway.pid, self.gateway, names)),
        ]


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
    live_checks: bool = True,
    departments: Mapping[str, str] | None = None,
    catalog: Path | None = None,
    consent_issuer: tuple[str, Path] | None = None,
) -> str:
    """The bench gateway's configuration. With mutual TLS, a policy store (seeded by
    :func:`_seed_policy_store`) whose version carries the bench's limits: without it the
    shipped limits would apply. ``live_checks``: name the controls store (the policy store
    implies one anyway; bench/_gateway.py drops it with ``--no-live-checks``).
    ``departments`` (id -> HOST:PORT) replaces the one bench department at ``dept_addr``,
    ``catalog`` the bench's one-department catalog; ``consent_issuer`` (issuer, JWKS file)
    is trusted for consent tokens."""
    catalog = catalog if catalog is not None else work / "catalog.toml"
    lines = ["[gateway]", 'listen = "127.0.0.1:0"', f'catalog = "{catalog}"']
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
    # The policy decides, as in production, in plaintext too: its version (seeded by
    # _seed_policy_store) carries the bench's catalog and an empty measures catalog; without
    # it the gateway would load the shipped measures, whose lists name departments the
    # bench's one-department catalog lacks, and refuse to start.
    lines += [
        "[policy]",
        f'policy = "{work / "policy.csv"}"',
        f'store = "{work / "policy.sqlite"}"',
    ]
    if pki is not None and consent_issuer is not None:
        lines += [
            "[[policy.consent_issuers]]",
            f'issuer = "{consent_issuer[0]}"',
            f'jwks = "{consent_issuer[1]}"',
        ]
    if live_checks:
        lines += ["[controls]", f'store = "{work / "controls.sqlite"}"']
    if billing:
        lines += [
            "[billing]",
            f'ledger = "{work / "ledger.sqlite"}"',
            f'prices = "{work / "prices.toml"}"',
        ]
    for dept, address in (departments or {"bench": dept_addr}).items():
        lines += [f"[departments.{dept}]", f'address = "{address}"']
    return "\n".join(lines) + "\n"


def _seed_policy_store(work: Path) -> None:
    """Version 1 of ``work/policy.sqlite``: the policy, catalog and prices in ``work``
    and :data:`LIMITS`, activated as the gateway's own first start would (author
    bootstrap)."""
    (work / "limits.toml").write_text(LIMITS, encoding="utf-8")
    measures = work / "measures.toml"
    if not measures.exists():
        # The shipped measures catalog names lists of the shipped catalog's departments.
        measures.write_text('version = "bench"\n[scenarios]\n[lists]\n', encoding="utf-8")
    files = read_disk_files(
        policy=work / "policy.csv",
        catalog=work / "catalog.toml",
        prices=work / "prices.toml",
        limits=work / "limits.toml",
        measures=measures,
    )
    store = SQLiteVersionStore(work / "policy.sqlite")
    try:
        version = store.add_version(
            files, author=BOOTSTRAP_AUTHOR, reason="bench limits", parent=None
        )
        load_version(version, purposes=tuple(load_purposes()))  # fail here, not in the gateway
        store.activate(version.number, BOOTSTRAP_AUTHOR, "bench", action="bootstrap")
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 1 if any answer was not OK (the figures are then not valid)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--plaintext", action="store_true", help="no TLS, no tokens (development mode)")
    p.add_argument("--no-audit", action="store_true", help="run the gateway without its audit log")
    p.add_argument("--no-billing", action="store_true", help="run the gateway without its ledger")
    p.add_argument(
        "--no-live-checks",
        action="store_true",
        help="no controls store, no replay store, no rate limiter",
    )
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
        live = not args.no_live_checks
        (work / "gateway.toml").write_text(
            _gateway_toml(
                work, dept_addr, pki, audit, not args.no_billing, not args.no_replay_store, live
            ),
            encoding="utf-8",
        )
        _seed_policy_store(work)
        fresh = None
        if args.fresh_tokens and pki is not None:
            fresh = _fresh_tokens(pki)
        try:
            gw, gw_addr = _procs.start(
                ["-m", "bench._gateway", "--config", str(work / "gateway.toml"),
                 "--threads-file", str(work / "threads.json"),
                 *([] if live else ["--no-live-checks"])],
                ready="serving on",
            )  # fmt: skip
        except BaseException:
            _procs.stop(proxy, dept)  # not left running when the gateway cannot start
            raise
        try:
            bare: list[tuple[float, float]] = []
            gate: list[tuple[float, float]] = []
            bare_failed: Counter[str] = Counter()
            gate_failed: Counter[str] = Counter()
            split = ThreadSplit()
            for _ in range(args.rounds):
                bare.append(
                    _measure(proxy.pid, proxy_addr, "/credit.v1.DepartmentAdapter/Lookup",
                             lookup.SerializeToString(), metadata, args, tls,
                             failed=bare_failed, threads=split.bare)
                )  # fmt: skip
                gate.append(
                    _measure(gw.pid, gw_addr, "/credit.v1.QueryService/Query",
                             fresh_ids(query), metadata, args, tls, fresh,
                             failed=gate_failed, threads=split.gateway)
                )  # fmt: skip
            split.take(proxy.pid, gw, work / "threads.json")
        finally:
            _procs.stop(gw, proxy, dept)

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    mode = "plaintext" if args.plaintext else "mutual TLS + bound tokens"
    mode += ", no audit" if args.no_audit else ", durable audit log"
    mode += ", no ledger" if args.no_billing else ", free-quota ledger"
    if not args.plaintext:
        if args.no_live_checks:
            mode += ", no live checks (no controls store, jtis in memory, no limiter)"
        else:
            mode += ", live controls store"
            mode += ", jtis in memory" if args.no_replay_store else ", replay store"
            mode += ", limits checked (never binding)"
        mode += ", a fresh token per query" if args.fresh_tokens else ", one token reused"
    elif args.no_live_checks:
        mode += ", no live checks (no controls store, no limiter); no tokens, so no replay store"
    else:
        mode += ", live controls store, limits (never binding); no tokens, so no replay store"
    mode += ", a new request id per query"
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
