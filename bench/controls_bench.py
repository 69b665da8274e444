"""The cost of the live security controls per query, and their propagation between processes.

Run ``python -m bench.controls_bench [--calls N] [--trials N]``. A script, not a test. Reports:

* authentication of a cached token, without and with the controls store (one version read
  per call, plus the revocation and suspension set lookups), as a ratio;
* a cached decision with a consent token, without and with the store (the revocation check
  and the consent's use counted: one small write transaction), as a ratio;
* propagation: a suspension committed by another process until this one's next snapshot
  sees it (median and max over ``--trials``), polled as fast as requests could come.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.auth import Authenticator, TokenVerifier, TrustedIssuer, load_registry
from gateway.auth.tokens import issue_token
from gateway.dev.pki import cert_thumbprint_pem, init_pki
from gateway.domain.catalog import load_catalog
from gateway.pipeline.decision import QueryFacts, with_consent_counted
from gateway.policy import PolicyDecider, build_decider
from gateway.policy.consent import issue_consent
from gateway.policy.testing import MatrixIssuer
from gateway.stores.sqlite.controls import SQLiteControlsStore
from protos.credit.v1 import query_pb2

AUD = "urn:credit-gateway:bench"
PERSON = "360426199101010071"


class _Context:
    def __init__(self, pem: bytes, token: str) -> None:
        self._pem = pem
        self._meta = [("authorization", f"Bearer {token}")]

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]}

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._meta


def _per_call(fn: Callable[[], Any], n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def _authentication(root: Path, calls: int) -> tuple[float, float]:
    pki = init_pki(root / "pki", departments=["tax"], agencies=["bank"], officers=[], auditors=[])
    pem = pki.agency_cert("bank").read_bytes()
    token = issue_token(
        pki.agency_token.key(),
        pki.agency_token.signing_kid,
        issuer=pki.agency_token.issuer,
        audience=AUD,
        subject="bank",
        cert_thumbprint=cert_thumbprint_pem(pem),
    )
    issuer = TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)
    store = SQLiteControlsStore(root / "auth-controls.sqlite")
    store.suspend_agency("other", officer="o", reason="a non-empty set")
    store.revoke_certificates("serial", ["1f"], by="o")
    out = []
    for controls in (None, store):
        auth = Authenticator(
            load_registry(), TokenVerifier([issuer], audience=AUD), controls=controls
        )
        ctx = _Context(pem, token)

        def call(a: Authenticator = auth, c: _Context = ctx) -> object:
            return a.authenticate(c)

        out.append(_per_call(call, calls))
    return out[0], out[1]


def _decision(root: Path, calls: int) -> tuple[float, float, float]:
    issuer = MatrixIssuer()
    catalog = load_catalog()
    token = issue_consent(
        issuer.key,
        issuer.kid,
        issuer=issuer.issuer,
        subject_type="person",
        subject_id=PERSON,
        grantee="bank",
        purpose="lending",
        scope=["pbccrc/*"],
    )
    datasets = tuple(d for d in catalog.datasets() if "person" in d.subject_types)
    facts = QueryFacts(
        agency_id="bank",
        subject_type="person",
        purpose="lending",
        mode=query_pb2.QUERY_MODE_PAID,
        datasets=datasets,
        today=dt.date(2026, 11, 1),
        consent_token=token,
        subject_id=PERSON,
    )
    out = []
    for live in (False, True):
        decider = build_decider(catalog, consent_issuers=[issuer.trusted])
        if live:
            decider.attach_controls(SQLiteControlsStore(root / "decide-controls.sqlite"))

        def decide(d: PolicyDecider = decider) -> object:
            return d.decide(facts)

        out.append(_per_call(decide, calls))
        if live:
            # The use count: a durable write the pipeline runs in a worker thread.
            def counted(d: PolicyDecider = decider) -> object:
                return with_consent_counted(d.decide(facts))

            out.append(_per_call(counted, calls) - out[-1])
    return out[0], out[1], out[2]


def _writer(path: str, go: Any, done: Any, trials: int) -> None:
    store = SQLiteControlsStore(path)
    for i in range(trials):
        go.wait(30)
        go.clear()
        store.suspend_agency(f"agency{i}", officer="o", reason="bench")
        done.put(time.time())


def _propagation(root: Path, trials: int) -> list[float]:
    path = root / "propagation.sqlite"
    reader = SQLiteControlsStore(path)
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_writer, args=(str(path), go, done, trials))
    proc.start()
    time.sleep(1.0)
    delays = []
    for i in range(trials):
        go.set()
        while not reader.snapshot().agency_suspended(f"agency{i}"):
            pass
        seen = time.time()
        delays.append(max(0.0, seen - done.get(timeout=30)))
    proc.join(30)
    return delays


def main(argv: list[str] | None = None) -> int:
    """Print the figures (see the module docstring); returns 0."""
    p = argparse.ArgumentParser(prog="python -m bench.controls_bench")
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--trials", type=int, default=20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain, live = _authentication(root, args.calls)
        print(
            f"authenticate (cached token): {plain * 1e6:.1f} us without, {live * 1e6:.1f} us "
            f"with the controls store: x{live / plain:.2f}"
        )
        plain, live, count = _decision(root, max(args.calls // 10, 100))
        print(
            f"decide (cached, with consent): {plain * 1e6:.1f} us without, {live * 1e6:.1f} us "
            f"with the revocation check, on the event loop: x{live / plain:.2f}; the use count "
            f"(a durable write, in a worker thread) {count * 1e6:.0f} us more"
        )
        delays = _propagation(root, args.trials)
        print(
            f"propagation between processes: median {statistics.median(delays) * 1e3:.2f} ms, "
            f"max {max(delays) * 1e3:.2f} ms over {len(delays)} changes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
