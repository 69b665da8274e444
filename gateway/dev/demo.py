"""``credit-gateway demo``: the whole federation on generated data.

Creates a development PKI, synthetic departments (each its own process over
its own SQLite file, behind mutual TLS), the gateway, and agency tokens; then
runs a scripted set of queries and prints what each agency sees. With
``--serve`` it keeps everything running and writes ``demo.json`` for clients
(``credit-query --demo DIR/demo.json --agency procurement ...``) and serves the public
enterprise lookup page (:mod:`gateway.portal`) as the ``portal`` agency, at the address
``--portal-listen`` names (default: a free local port), written to demo.json as
``portal_url``.

``demo --serve --workdir DIR`` on a folder an earlier run made keeps its keys,
certificates, data, ledger and audit log (:mod:`gateway.dev.devstack`); while it
serves, every token file with less than ten minutes left is re-minted each minute,
so demo.json's tokens never run out (``credit-gateway token refresh`` does it by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli.console import yuan
from gateway.cli.query import render
from gateway.dev.devstack import DevStack
from gateway.dev.pgcluster import ClusterUnavailable, LocalCluster, start_cluster
from gateway.errors import ConfigError, GatewayError
from gateway.portal import PortalConfig, PortalServer

__all__ = ["run_demo"]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _banner(text: str) -> None:
    _say()
    _say("=" * 78)
    _say(text)
    _say("=" * 78)


async def _show(stack: DevStack, agency: str, title: str, **query: Any) -> None:
    _banner(f"{title}\n  as {agency}: purpose {query['purpose']}, mode {query.get('mode', 'free')}")
    async with stack.client(agency) as client:
        try:
            response = await client.query(**query)
        except grpc.aio.AioRpcError as exc:
            _say(f"refused: {exc.code().name}: {exc.details()}")
            return
    render(response, sys.stdout)


async def run_demo(
    *,
    workdir: Path | None,
    serve: bool,
    subjects: int,
    seed: int,
    portal_listen: str = "127.0.0.1:0",
    postgres: bool = False,
) -> int:
    """Run the demo; returns the exit status. With ``serve``, the public lookup page
    listens on ``portal_listen`` (HOST:PORT; port 0: a free one). With ``postgres``,
    every store (the audit log, ledger, replay, limits, policy versions, controls) is on
    a throwaway local PostgreSQL cluster (:func:`gateway.dev.pgcluster.start_cluster`,
    migrated here), stopped and removed at the end.

    Raises:
        ConfigError: the page cannot listen there (nothing is left running), or
            ``postgres`` and PostgreSQL's server programs are not installed."""
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="credit-demo-"))
            )
        started = time.perf_counter()
        _say(f"credit-gateway demo in {workdir}")
        storage_url = None
        if postgres:
            cluster = await asyncio.to_thread(_start_postgres)
            cleanup.callback(cluster.stop)  # runs last: after the audit log is verified
            storage_url = await asyncio.to_thread(_migrated_database, cluster)
            _say(f"PostgreSQL cluster up in {cluster.root}: every store lives there")
        _say(
            f"generating {subjects} synthetic subjects, a development PKI, starting departments..."
        )
        kept = (workdir / "pki" / "pki.json").is_file()
        stack = await DevStack.create(
            workdir,
            subjects=subjects,
            seed=seed,
            storage_url=storage_url,
            sqlite_stores=() if postgres else ("audit", "policy", "controls"),
        )
        if kept:
            _say("kept this folder's keys, certificates, data, ledger and audit log")
        try:
            _say(
                f"federation up in {time.perf_counter() - started:.1f}s: "
                f"gateway {stack.gateway.address}, "
                f"{len(stack.departments)} departments over mutual TLS"
            )
            if serve:
                return await _serve(stack, workdir, portal_listen)
            await _script(stack)
            await _metrics_summary(stack)
        finally:
            await stack.close()  # the gateway's final checkpoint is signed here
        await _verify_audit(stack, storage_url)
        _say()
        _say("demo finished: every department process stopped, nothing kept.")
    return 0


async def _script(stack: DevStack) -> None:
    s = stack.subjects
    ent = s["enterprise_all_departments"]
    await _show(
        stack,
        "procurement",
        f"1. The procurement centre screens a bidder, {ent['name']}\n"
        "   (public and government-shared tiers only; free mode)",
        enterprise=ent["id"],
        purpose="government_procurement",
    )
    person = s["person_with_loans"]
    before = await stack.balance_fen("bank")
    await _show(
        stack,
        "bank",
        "2. The bank asks about a loan applicant WITHOUT the applicant's consent",
        person=person["id"],
        purpose="lending",
        mode="paid",
    )
    consent = stack.consent(
        subject_type="person",
        subject_id=person["id"],
        grantee="bank",
        purpose="lending",
        scope=["pbccrc/*", "tier:personal_privacy"],
    )
    await _show(
        stack,
        "bank",
        "3. The same query WITH the applicant's signed consent\n"
        "   (credit reference center and personal data now visible)",
        person=person["id"],
        purpose="lending",
        mode="paid",
        consent_token=consent,
    )
    after = await stack.balance_fen("bank")
    _say(
        f"\nbank's prepaid balance: {yuan(before)} before its two paid queries, "
        f"{yuan(after)} after (charged only for datasets delivered)"
    )
    await _show(
        stack,
        "nogrants",
        "4. A registered agency with no grants: every department is withheld, none is asked",
        enterprise=ent["id"],
        purpose="supervision_inspection",
    )
    await _show(
        stack,
        "ndrc",
        "5. A mistyped credit code is refused before any department is asked",
        enterprise=ent["id"][:-1] + ("0" if ent["id"][-1] != "0" else "1"),
        purpose="supervision_inspection",
    )


async def _metrics_summary(stack: DevStack) -> None:
    """What an operator's dashboard would show, read from the metrics endpoint."""
    url = stack.gateway.metrics_url

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our own loopback endpoint
            return str(r.read().decode())

    page = await asyncio.to_thread(scrape)
    totals: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                totals.setdefault(sample.name, {})[key] = sample.value
    _banner(f"Operations: the gateway's metrics ({url})")
    wanted = [
        ("credit_gateway_queries_total", "queries"),
        ("credit_gateway_department_requests_total", "department lookups"),
        ("credit_gateway_fields_withheld_total", "fields withheld"),
        ("credit_gateway_records_aged_out_total", "negative records aged out (Art. 16)"),
        ("credit_gateway_audit_records_total", "audit records"),
    ]
    for name, title in wanted:
        rows = totals.get(name, {})
        _say(f"{title}: {int(sum(rows.values()))}")
        for key, value in sorted(rows.items()):
            _say(f"    {key:60} {int(value)}")


def _start_postgres() -> LocalCluster:
    """A throwaway cluster, or ConfigError (one line) where PostgreSQL is missing."""
    try:
        return start_cluster()
    except ClusterUnavailable as exc:
        raise ConfigError("demo --postgres", f"PostgreSQL is not available: {exc}") from None


def _migrated_database(cluster: LocalCluster) -> str:
    """A new database on ``cluster`` at this build's schema; its URL (no password)."""
    import psycopg

    from gateway.stores.postgres.migrate import migrate

    url = cluster.create_database("credit_demo")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


async def _verify_audit(stack: DevStack, storage_url: str | None = None) -> None:
    """The auditors' view: the log the demo wrote, checked offline by credit-audit
    (the SQLite file, or the ``postgresql://`` log every process shared)."""
    log_path: Path | str = storage_url or stack.audit["log"]
    key = stack.audit["verifier_key"]
    _banner(
        "6. An auditor verifies the signed audit log offline\n"
        f"  credit-audit verify {log_path} --key {key}"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.audit.cli", "verify", str(log_path), "--key", str(key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    _say(out.decode().strip())
    if proc.returncode != 0:
        raise SystemExit(f"audit verification failed (exit {proc.returncode})")


async def _start_portal(stack: DevStack, listen: str) -> PortalServer:
    """The public lookup page as the stack's ``portal`` agency (its token file is the one
    the serve loop re-mints, and the page re-reads it when it changes)."""
    return await PortalServer.start(
        PortalConfig(
            listen=listen,
            gateway=stack.gateway.address,
            ca=stack.pki.ca_cert,
            cert=stack.pki.agency_cert(_PORTAL),
            key=stack.pki.agency_key(_PORTAL),
            token_file=stack.tokens[_PORTAL],
        )
    )


#: The agency of the registry that the demo's public lookup page acts as.
_PORTAL = "portal"


async def _serve(stack: DevStack, workdir: Path, portal_listen: str) -> int:
    portal = await _start_portal(stack, portal_listen)
    try:
        return await _serve_until_stopped(stack, workdir, portal.url)
    finally:
        await portal.stop()


async def _serve_until_stopped(stack: DevStack, workdir: Path, portal_url: str) -> int:
    demo_json = workdir / "demo.json"
    described = stack.describe() | {"portal_url": portal_url}
    # Whole or absent: a script waiting for the federation polls for this file.
    partial = demo_json.with_suffix(".json.partial")
    partial.write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")
    partial.replace(demo_json)
    enterprise = described["examples"]["enterprise"]
    _say(f"wrote {demo_json}: gateway_address {described['gateway_address']}")
    _say(f"public enterprise lookup page (portal_url): {portal_url}")
    for key, value in described["examples"].items():
        _say(f"  examples.{key}: {value}")
    _say("try:")
    _say(
        f"  .venv/bin/credit-query --demo {demo_json} --agency procurement "
        f"--enterprise {enterprise} --purpose government_procurement"
    )
    _say(
        "tokens last one hour and are re-minted while this runs"
        " (credit-gateway token refresh --demo ... --all by hand); Ctrl-C stops everything."
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _REFRESH_EVERY_S)
        if not stop.is_set():
            try:
                renewed = await asyncio.to_thread(stack.ensure_tokens)
            except (OSError, GatewayError) as exc:  # keep serving; say why once a minute
                _say(f"token refresh failed: {exc}")
            else:
                if renewed:
                    _say(f"re-minted tokens of {', '.join(renewed)}")
    _say("stopping...")
    return 0


#: How often the serve loop re-mints token files close to expiry (seconds).
_REFRESH_EVERY_S = 60
