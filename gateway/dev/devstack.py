"""A whole federation on one machine: development PKI, synthetic departments
in their own processes over mutual TLS, and a gateway. Used by the demo, the
integration tests and the benchmarks.

    async with DevStack.create(workdir, subjects=2_000) as stack:
        client = stack.client("procurement")
        response = await client.query(enterprise=..., purpose="government_procurement")

Nothing here is for production; every piece it starts is the real one.

**A folder that lasts.** :meth:`DevStack.create` on a folder it made before keeps what is
there: the PKI (CA, certificates, issuer keys), the departments' data, the audit log and its
keys, the ledger, the policy versions and the replay store; only ``gateway.toml`` is
rewritten (the departments' ports are new). Token files are kept while they have more than
:data:`~gateway.dev.tokens.REFRESH_BEFORE_S` to run and re-minted otherwise. A PKI made for
other principals or departments is refused with a clear error rather than replaced.

Why one module (some 600 lines): :class:`DevStack` is one object whose ``create`` and
``close`` bring up and tear down every piece in order (PKI, data, departments, config,
gateway, tokens) and whose accessors (clients, demo.json, token specs) read that same state;
the pieces it starts are modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import signal
import socket
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from gateway.audit import generate_key, generate_pseudonym_key, write_key_files, write_pseudonym_key
from gateway.auth import Role, issue_token, load_registry
from gateway.billing import load_prices
from gateway.cli.connect import QueryClient, open_channel
from gateway.dev.pki import (
    DEV_AGENCY_ISSUER,
    FEDERATION_IDENTITY,
    MANIFEST_NAME,
    Pki,
    cert_thumbprint_pem,
    init_pki,
    load_pki,
)
from gateway.dev.tokens import TokenSpec, ensure_token
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from gateway.runtime.assembly import build_gateway
from gateway.runtime.config import load_config
from gateway.runtime.server import Gateway

if TYPE_CHECKING:
    from adapters.sdk import Store

__all__ = ["AUDIENCE", "DepartmentProcess", "DevStack"]

AUDIENCE = "credit-gateway"
_ROOT = Path(__file__).resolve().parents[2]
_SAMPLES = _ROOT / "adapters" / "samples"


@dataclass(slots=True)
class DepartmentProcess:
    """A department adapter of the development stack: a child process or an in-process server."""

    id: str
    process: asyncio.subprocess.Process | None
    address: str
    #: For a department served in-process from a fake store (tests).
    server: Any = None

    def kill(self) -> None:
        """SIGKILL: the department dies mid-run, as a crash would."""
        if self.process is None:
            raise TypeError("an in-process department cannot be killed; stop it")
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """Stop the adapter (the server at once, the process by SIGTERM then SIGKILL)."""
        if self.server is not None:
            await self.server.stop(0)
            return
        assert self.process is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.kill()
                await self.process.wait()


async def start_department(
    dept: str,
    pki: Pki,
    data_dir: Path,
    *,
    mapping: Path | None = None,
    log_dir: Path | None = None,
    timeout_s: float = 30.0,
    listen: str = "127.0.0.1:0",
) -> DepartmentProcess:
    """Start one sample department process over mutual TLS; wait until it listens.

    Its log goes to ``log_dir/<dept>.log`` (default: beside its database): a
    pipe nobody reads would block the department once it filled.
    Raises RuntimeError if it does not start.
    """
    log_path = (log_dir or data_dir) / f"{dept}.log"
    args = [
        sys.executable, "-m", "adapters", "serve",
        "--mapping", str(mapping or _SAMPLES / f"{dept}.toml"),
        "--db", str(data_dir / f"{dept}.sqlite"),
        "--listen", listen,
        "--tls-cert", str(pki.department_cert(dept)),
        "--tls-key", str(pki.department_key(dept)),
        "--client-ca", str(pki.ca_cert),
        "--allow-client", FEDERATION_IDENTITY,
        "--log-level", "WARNING",
    ]  # fmt: skip
    with log_path.open("ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=log_file, cwd=_ROOT
        )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout_s):
            # The adapter prints exactly this one line on stdout, then only logs.
            while line := (await proc.stdout.readline()).decode():
                if line.startswith("listening on "):
                    return DepartmentProcess(dept, proc, line.split()[-1])
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
    err = log_path.read_text(encoding="utf-8", errors="replace")
    raise RuntimeError(f"department {dept} did not start: {err.strip()[-500:]}")


async def serve_fake(dept: str, store: Store, pki: Pki) -> DepartmentProcess:
    """Serve a fake store in this process, over the same mutual TLS as a real one."""
    from adapters.sdk import bound_port, mtls_server_credentials, serve

    creds = mtls_server_credentials(
        pki.department_cert(dept).read_bytes(),
        pki.department_key(dept).read_bytes(),
        pki.ca_cert.read_bytes(),
    )
    server = await serve(
        store,
        "127.0.0.1:0",
        server_credentials=creds,
        allowed_clients=frozenset({FEDERATION_IDENTITY}),
    )
    return DepartmentProcess(dept, None, f"127.0.0.1:{bound_port(server)}", server)


@dataclass
class DevStack:
    """A whole development federation: the PKI, the departments and the gateway."""

    workdir: Path
    pki: Pki
    data_dir: Path
    config_path: Path
    departments: dict[str, DepartmentProcess]
    gateway: Gateway
    tokens: dict[str, Path]
    audit: dict[str, Path]
    subjects: dict[str, Any] = field(default_factory=dict)
    #: Security officers' tokens (policy administration).
    officer_tokens: dict[str, Path] = field(default_factory=dict)
    #: Departments created ``down``: the address the config names, nothing listening yet.
    down: dict[str, str] = field(default_factory=dict)
    #: Auditors' and finance staff's tokens.
    auditor_tokens: dict[str, Path] = field(default_factory=dict)
    finance_tokens: dict[str, Path] = field(default_factory=dict)
    #: The subject the self-service kiosk's token attests (``{"type", "id"}``), if any.
    self_service_subject: dict[str, str] | None = None

    @classmethod
    async def create(
        cls,
        workdir: Path,
        *,
        subjects: int = 10_000,
        seed: int = 1,
        today: dt.date | None = None,
        fakes: Mapping[str, Store] | None = None,
        down: Collection[str] = (),
        catalog_file: Path | None = None,
        prices_file: Path | None = None,
        describe_timeout_ms: int | None = None,
        storage_url: str | None = None,
        sqlite_stores: Collection[str] = ("audit", "policy", "controls"),
    ) -> DevStack:
        """Generate what ``workdir`` lacks and start the federation (a folder made
        before keeps its keys, certificates and data: see the module docstring).

        ``fakes`` replaces some departments' processes with stores served in
        this process (``adapters.testing.InMemoryStore`` and its knobs). ``down``
        departments are not started: the config names a free local port for each, and
        :meth:`start_down` starts one there later. ``catalog_file`` and ``prices_file``
        replace the packaged catalog and price list in the gateway's config (every
        packaged department is still started and configured), ``describe_timeout_ms``
        the federation's ``Describe`` timeout. ``storage_url`` (a migrated PostgreSQL
        database) puts the ledger, the replay store and the rate limits there
        (``[storage]``); the ``sqlite_stores`` (names from
        :data:`gateway.runtime.config.STORE_NAMES`; default the audit log, the policy
        versions and the controls) stay on their SQLite files: ``()`` runs the whole
        federation on PostgreSQL (the audit config then has no ``path``).

        Raises:
            ConfigError: ``workdir/pki`` is a PKI without every department and principal
                the catalog and registry name.
        """
        from adapters import synth  # the department side is only needed here

        # Start-up work; nothing else runs on this loop yet.
        workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        catalog = load_catalog()
        fakes = fakes or {}
        dept_ids = [d for d in catalog.departments if d not in fakes and d not in down]
        reserved = {d: f"127.0.0.1:{_free_port()}" for d in down}
        registry = load_registry()
        members = {
            "agencies": registry.ids(Role.AGENCY),
            "officers": registry.ids(Role.OFFICER),
            "auditors": registry.ids(Role.AUDITOR),
            "finance": registry.ids(Role.FINANCE),
        }
        pki = await asyncio.to_thread(_kept_or_new_pki, workdir / "pki", catalog, members)
        data_dir = workdir / "data"
        subjects_file = data_dir / "subjects.json"
        if not subjects_file.is_file() or not all(
            (data_dir / f"{d}.sqlite").is_file() for d in dept_ids
        ):
            summary = await asyncio.to_thread(
                synth.generate,
                data_dir,
                seed=seed,
                subjects=subjects,
                # The gateway's calendar day is the price list's time zone's.
                reference_date=today or dt.datetime.now(load_prices().timezone).date(),
            )
            subjects_file = summary.subjects_file
        results = await asyncio.gather(
            *(start_department(d, pki, data_dir) for d in dept_ids),
            *(serve_fake(d, store, pki) for d, store in fakes.items()),
            return_exceptions=True,
        )
        started = {p.id: p for p in results if isinstance(p, DepartmentProcess)}
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(p.stop() for p in started.values()))
            raise failures[0]
        try:
            config_path = workdir / "gateway.toml"
            audit = ensure_audit_keys(workdir / "audit")
            addresses = {d: p.address for d, p in started.items()} | reserved
            toml = _gateway_toml(
                pki,
                addresses,
                audit,
                catalog=catalog_file,
                prices=prices_file,
                describe_timeout_ms=describe_timeout_ms,
                storage_url=storage_url,
                sqlite_stores=tuple(sqlite_stores),
            )
            config_path.write_text(toml, encoding="utf-8")
            if storage_url is not None:  # top-ups are idempotent by reference
                _open_accounts(config_path, config=True)
            elif not (workdir / "ledger.sqlite").exists():  # opened once, kept after
                _open_accounts(workdir / "ledger.sqlite")
            gateway = await build_gateway(load_config(config_path))
            await gateway.start()
        except BaseException:
            await asyncio.gather(*(p.stop() for p in started.values()))
            raise
        stack = cls(workdir, pki, data_dir, config_path, started, gateway, {}, audit)
        stack.down = reserved
        stack.subjects = json.loads(subjects_file.read_text(encoding="utf-8"))["subjects"]
        person = stack.subjects.get(_EXAMPLES["person"])
        if person is not None:
            stack.self_service_subject = {"type": "person", "id": str(person["id"])}
        stack.tokens = {a: workdir / "tokens" / f"{a}.jwt" for a in members["agencies"]}
        stack.officer_tokens = {o: workdir / "tokens" / f"{o}.jwt" for o in members["officers"]}
        stack.auditor_tokens = {a: workdir / "tokens" / f"{a}.jwt" for a in members["auditors"]}
        stack.finance_tokens = {f: workdir / "tokens" / f"{f}.jwt" for f in members["finance"]}
        try:
            stack.ensure_tokens()
        except BaseException:
            await stack.close()
            raise
        return stack

    async def start_down(self, dept: str) -> DepartmentProcess:
        """Start a department created ``down``, at the address the config names.
        Raises RuntimeError if it does not start, KeyError if it was not down."""
        address = self.down.pop(dept)
        proc = await start_department(dept, self.pki, self.data_dir, listen=address)
        self.departments[dept] = proc
        return proc

    def token_specs(self) -> dict[Path, TokenSpec]:
        """Every token file of the stack and whom it is for."""
        specs: dict[Path, TokenSpec] = {}
        for role_dir, files in (
            ("agencies", self.tokens),
            ("officers", self.officer_tokens),
            ("auditors", self.auditor_tokens),
            ("finance", self.finance_tokens),
        ):
            for principal, path in files.items():
                subject = self.self_service_subject if principal in _SELF_SERVICE else None
                cert = self.pki.principal_cert(role_dir, principal)
                specs[path] = TokenSpec(principal, cert, subject)
        return specs

    def ensure_tokens(self, *, min_remaining_s: int | None = None) -> list[str]:
        """Re-mint the token files that expire within ``min_remaining_s`` (default
        :data:`~gateway.dev.tokens.REFRESH_BEFORE_S`) or are missing; returns whose.

        Raises ConfigError or OSError (a key, certificate or token file unusable)."""
        from gateway.dev.tokens import REFRESH_BEFORE_S

        (self.workdir / "tokens").mkdir(parents=True, exist_ok=True)
        within = REFRESH_BEFORE_S if min_remaining_s is None else min_remaining_s
        return [
            spec.principal
            for path, spec in self.token_specs().items()
            if ensure_token(self.pki, spec, path, min_remaining_s=within)
        ]

    def client(self, agency: str) -> QueryClient:
        """A client acting as ``agency``, with its certificate and token."""
        return QueryClient.connect(
            self.gateway.address,
            ca=self.pki.ca_cert.read_bytes(),
            cert=self.pki.agency_cert(agency).read_bytes(),
            key=self.pki.agency_key(agency).read_bytes(),
            token=self.tokens[agency].read_text(encoding="utf-8").strip(),
        )

    def consent(
        self,
        *,
        subject_type: str,
        subject_id: str,
        grantee: str,
        purpose: str,
        scope: Sequence[str],
        lifetime_s: int = 30 * 86400,
    ) -> str:
        """A consent token from the development consent issuer, as a subject
        would sign one at the bank's counter."""
        from gateway.policy.consent import issue_consent

        return issue_consent(
            self.pki.consent.key(),
            self.pki.consent.signing_kid,
            issuer=self.pki.consent.issuer,
            subject_type=subject_type,
            subject_id=subject_id,
            grantee=grantee,
            purpose=purpose,
            scope=scope,
            lifetime_s=lifetime_s,
        )

    async def balance_fen(self, account: str) -> int:
        """An agency's prepaid balance, read from the gateway's ledger."""
        meter = self.gateway.meter
        if meter is None:
            raise RuntimeError("this stack runs without billing")
        state = await meter.ledger.run(meter.ledger.store.account, account)
        return 0 if state is None else state.balance_fen

    def describe(self) -> dict[str, Any]:
        """What a client needs, as written to ``demo.json``."""
        return {
            "gateway_address": self.gateway.address,
            "departments": {d: p.address for d, p in self.departments.items()},
            "ca_cert": str(self.pki.ca_cert),
            "agencies": {
                a: {
                    "cert": str(self.pki.agency_cert(a)),
                    "key": str(self.pki.agency_key(a)),
                    "token_file": str(path),
                    # The self-service kiosk's token attests this subject (its own data).
                    **(
                        {"subject": self.self_service_subject}
                        if a in _SELF_SERVICE and self.self_service_subject is not None
                        else {}
                    ),
                }
                for a, path in self.tokens.items()
            },
            "officers": self._members("officers", self.officer_tokens),
            "auditors": self._members("auditors", self.auditor_tokens),
            "finance": self._members("finance", self.finance_tokens),
            "pki": str(self.pki.root),
            "replay_store": str(self.workdir / "replay.sqlite"),
            "config": str(self.config_path),
            "ledger": str(self.workdir / "ledger.sqlite"),
            # Subjects the README's commands ask about (``<demo.json: examples.enterprise>``).
            "examples": {
                key: str(self.subjects[name]["id"])
                for key, name in _EXAMPLES.items()
                if name in self.subjects
            },
            "metrics_url": self.gateway.metrics_url,
            # The development consent issuer, for the README's ``consent issue`` line (a
            # subject signing at the bank's counter); a real issuer's key stays with it.
            "consent_issuer": {
                "iss": self.pki.consent.issuer,
                "kid": self.pki.consent.signing_kid,
                "key": str(self.pki.consent.key()),
            },
            "audit": {
                "log": str(self.audit["log"]),
                "verifier_key": str(self.audit["verifier_key"]),
            },
        }

    def _members(self, role_dir: str, files: Mapping[str, Path]) -> dict[str, Any]:
        return {
            p: {
                "cert": str(self.pki.principal_cert(role_dir, p)),
                "key": str(self.pki.principal_key(role_dir, p)),
                "token_file": str(path),
            }
            for p, path in files.items()
        }

    def channel(
        self, role_dir: str, principal: str
    ) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
        """A mutual-TLS channel to the gateway as any principal of the PKI
        (``role_dir``: agencies, officers, auditors, finance) and the metadata
        carrying its freshly minted, certificate-bound token."""
        cert = self.pki.principal_cert(role_dir, principal)
        token = mint_token(self.pki, principal, cert)
        return open_channel(
            self.gateway.address,
            ca=self.pki.ca_cert.read_bytes(),
            cert=cert.read_bytes(),
            key=self.pki.principal_key(role_dir, principal).read_bytes(),
            token=token,
        )

    async def close(self) -> None:
        """Stop the gateway (2 s grace) and every department."""
        await self.gateway.stop(grace=2)
        await asyncio.gather(*(p.stop() for p in self.departments.values()))

    async def __aenter__(self) -> DevStack:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


#: demo.json's ``examples``: a key a reader types -> the synthetic subject it names.
_EXAMPLES = {"enterprise": "enterprise_all_departments", "person": "person_with_loans"}
#: Agencies of the registry that are self-service kiosks (their token names a subject).
_SELF_SERVICE = frozenset({"self_service"})


def _kept_or_new_pki(root: Path, catalog: Any, members: Mapping[str, Sequence[str]]) -> Pki:
    """The PKI already in ``root`` if it covers every department and principal; a new one
    if ``root`` holds none. Raises ConfigError for a PKI that lacks some of them."""
    if not (root / MANIFEST_NAME).is_file():
        return init_pki(
            root,
            departments=list(catalog.departments),
            agencies=members["agencies"],
            officers=members["officers"],
            auditors=members["auditors"],
            finance=members["finance"],
            force=True,
        )
    pki = load_pki(root)
    missing = [d for d in catalog.departments if d not in pki.departments]
    for role_dir, ids in members.items():
        missing += [f"{role_dir}/{i}" for i in ids if i not in pki.principals.get(role_dir, ())]
    if missing:
        raise ConfigError(
            str(root),
            f"this folder's PKI has no certificate for {', '.join(missing)}:"
            " use a new --workdir (nothing here was changed)",
        )
    return pki


def _free_port() -> int:
    """A local port free now (a department created down will listen there later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gateway_toml(
    pki: Pki,
    departments: Mapping[str, str],
    audit: dict[str, Path],
    *,
    catalog: Path | None = None,
    prices: Path | None = None,
    describe_timeout_ms: int | None = None,
    storage_url: str | None = None,
    sqlite_stores: tuple[str, ...] = ("audit", "policy", "controls"),
) -> str:
    audit_on_pg = storage_url is not None and "audit" not in sqlite_stores
    lines = [
        "# Written by credit-gateway's development stack.",
        "[gateway]",
        'listen = "127.0.0.1:0"',
        'metrics_listen = "127.0.0.1:0"',
        *([f'catalog = "{catalog}"'] if catalog else []),
        "",
        "[tls]",
        f'cert = "{pki.gateway_server_cert}"',
        f'key = "{pki.gateway_server_key}"',
        f'client_ca = "{pki.ca_cert}"',
        "",
        "[auth]",
        f'audience = "{AUDIENCE}"',
        f'replay_store = "{audit["log"].parent.parent / "replay.sqlite"}"',
        "[[auth.issuers]]",
        f'issuer = "{pki.agency_token.issuer}"',
        f'jwks = "{pki.agency_token.jwks}"',
        "",
        "[audit]",
        *([] if audit_on_pg else [f'path = "{audit["log"]}"']),
        f'key = "{audit["key"]}"',
        f'pseudonym_key = "{audit["pseudonym_key"]}"',
        "",
        "[policy]",
        f'store = "{audit["log"].parent.parent / "policy-versions.sqlite"}"',
        "[[policy.consent_issuers]]",
        f'issuer = "{pki.consent.issuer}"',
        f'jwks = "{pki.consent.jwks}"',
        "",
        "[controls]",
        f'store = "{audit["log"].parent.parent / "controls.sqlite"}"',
        "",
        "[billing]",
        f'ledger = "{audit["log"].parent.parent / "ledger.sqlite"}"',
        *([f'prices = "{prices}"'] if prices else []),
        "",
        "[federation]",
        f'ca = "{pki.ca_cert}"',
        f'client_cert = "{pki.gateway_client_cert}"',
        f'client_key = "{pki.gateway_client_key}"',
        "timeout_ms = 2000",
        *([f"describe_timeout_ms = {describe_timeout_ms}"] if describe_timeout_ms else []),
        "",
    ]
    for dept, address in departments.items():
        lines += [f"[departments.{dept}]", f'address = "{address}"', ""]
    if storage_url is not None:
        lines += [
            "[storage]",
            f'url = "{storage_url}"',
            "[storage.stores]",
            *(f'{store} = "sqlite"' for store in sqlite_stores),
            "",
        ]
    return "\n".join(lines)


AUDIT_ORIGIN = "credit-gateway.dev/audit"


def ensure_audit_keys(folder: Path, origin: str = AUDIT_ORIGIN) -> dict[str, Path]:
    """The log's Ed25519 note key pair and the pseudonym key, created once."""
    paths = {
        "key": folder / "log.key",
        "verifier_key": folder / "log.vkey",
        "pseudonym_key": folder / "pseudonym.key",
        "log": folder / "audit.sqlite",
    }
    folder.mkdir(parents=True, exist_ok=True)
    if not paths["key"].exists():
        skey, vkey = generate_key(origin)
        write_key_files(skey, vkey, paths["key"], paths["verifier_key"])
    if not paths["pseudonym_key"].exists():
        write_pseudonym_key(paths["pseudonym_key"], generate_pseudonym_key())
    return paths


#: Prepaid balances of the demo's paying agencies, in fen.
OPENING_BALANCES = {"bank": 50_000, "guarantor": 20_000}


def _open_accounts(ledger: Path, *, config: bool = False) -> None:
    """Top up the paying agencies once, through the finance staff's own command
    (``config``: ``ledger`` is the gateway's configuration, ``billing --config``)."""
    from gateway.cli.billing import billing_main
    from gateway.stores.sqlite.ledger import SQLiteLedger

    if not config:
        SQLiteLedger(ledger, create=True).close()
    for account, fen in OPENING_BALANCES.items():
        out = io.StringIO()
        code = billing_main(
            ["--config" if config else "--ledger", str(ledger), "top-up", account, str(fen),
             "--reference", f"opening-{account}", "--create", "--note", "opening balance"],
            out=out, err=out,
        )  # fmt: skip
        if code != 0:
            raise RuntimeError(f"top-up of {account} failed: {out.getvalue().strip()}")


def mint_token(pki: Pki, principal: str, cert: Path) -> str:
    """A development-issuer token for ``principal``, bound to ``cert``."""
    return issue_token(
        pki.agency_token.key(),
        pki.agency_token.signing_kid,
        issuer=DEV_AGENCY_ISSUER,
        audience=AUDIENCE,
        subject=principal,
        cert_thumbprint=cert_thumbprint_pem(cert.read_bytes()),
    )
