"""Build a :class:`~gateway.runtime.server.Gateway` with all its parts from a config."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from gateway.api.billing import BillingAdminService
from gateway.api.controls import ControlsService
from gateway.api.policy_admin import PolicyAdminService, dev_officer
from gateway.audit import Ed25519Signer, load_pseudonym_key
from gateway.audit.auditor import QueryAuditor
from gateway.audit.errors import AuditError, StorageError
from gateway.audit.log import AuditLog
from gateway.audit.shared import SharedAuditLog
from gateway.auth import (
    Authenticator,
    CallerAuthenticator,
    Role,
    TokenVerifier,
    TrustedIssuer,
    load_registry,
)
from gateway.auth.replay import ReplayStore
from gateway.billing import LedgerStore, Meter, PriceList, load_prices
from gateway.billing.meter import HEALED_SETTLE_S
from gateway.controls import ControlsStore
from gateway.domain.catalog import Catalog, load_catalog
from gateway.domain.files import load_toml
from gateway.domain.purposes import load_purposes
from gateway.errors import AuditUnavailableError, ConfigError
from gateway.objections import (
    ObjectionDesk,
    ObjectionStore,
    SQLiteObjectionStore,
    load_repair_policy,
)
from gateway.pipeline.decision import Decider
from gateway.pipeline.limits import RateLimiter, SharedBudget, parse_limits
from gateway.pipeline.query import unkeyed_pseudonym
from gateway.policy import build_decider
from gateway.policy.consent import ConsentVerifier, load_revocations
from gateway.policy.decider import PolicyDecider
from gateway.policyadmin import (
    DeciderRecipe,
    PolicyAdministrator,
    Serving,
    VersionStore,
)
from gateway.policyadmin.admin import query_records
from gateway.policyadmin.loading import DEFAULT_LIMITS_PATH, read_disk_files
from gateway.runtime.config import AuditConfig, AuthConfig, Config, StorageConfig
from gateway.runtime.server import Gateway
from gateway.runtime.stores import open_subject_parts, pg_pool
from gateway.stores.postgres.audit import PostgresAuditStore
from gateway.stores.postgres.live import SharedStores, open_shared_stores
from gateway.stores.sqlite.controls import SQLiteControlsStore
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore

__all__ = ["build_authenticators", "build_gateway", "open_auditor"]


def _authenticator(
    auth: AuthConfig,
    roles: tuple[Role, ...],
    controls: ControlsStore | None = None,
    replay: ReplayStore | None = None,
) -> Authenticator:
    # ``replay``: the PostgreSQL store every host shares, opened once (see _open_shared).
    if replay is None and auth.replay_store is not None:
        # One connection per file, shared by the verifiers.
        replay = ReplayStore.open(auth.replay_store, max_entries=auth.replay_store_max_entries)
    verifier = TokenVerifier(
        [TrustedIssuer.from_jwks_file(i.issuer, i.jwks) for i in auth.issuers],
        audience=auth.audience,
        replay_store=replay,
    )
    return Authenticator(load_registry(auth.registry), verifier, roles=roles, controls=controls)


def build_authenticators(
    auth: AuthConfig, controls: ControlsStore | None = None, replay: ReplayStore | None = None
) -> tuple[CallerAuthenticator, Authenticator]:
    """The query service's authenticator (agencies) and the audit service's
    (agencies and auditors), both checking the live ``controls`` when given and
    recording ``jti``s in ``replay`` (else ``[auth] replay_store``, if set).
    Raises ConfigError."""
    return (
        CallerAuthenticator(_authenticator(auth, (Role.AGENCY,), controls, replay)),
        _authenticator(auth, (Role.AGENCY, Role.AUDITOR), controls, replay),
    )


@dataclass
class _Shared:
    """The stores ``[storage]`` puts on PostgreSQL, opened once per process."""

    ledger: LedgerStore | None = None
    replay: ReplayStore | None = None
    limits: SharedBudget | None = None

    def close(self) -> None:
        """Close what was opened (a failed start-up; a running gateway closes them
        through their owners)."""
        for opened in (self.ledger, self.replay, self.limits):
            if opened is not None:
                opened.close()


def _open_shared(config: Config) -> _Shared:
    """Open the ledger, the replay store and the rate-limit budget on PostgreSQL where
    ``[storage]`` says so (``credit-gateway db migrate`` must have run). Blocking:
    start-up only. Raises ConfigError."""
    from gateway.stores.postgres.ledger import PostgresLedger
    from gateway.stores.postgres.limits import PostgresRateBudget
    from gateway.stores.postgres.replay import PostgresJtiStore

    shared = _Shared()
    try:
        if (
            config.billing is not None
            and (pool := pg_pool(config.storage, "ledger", 8)) is not None
        ):
            shared.ledger = PostgresLedger(pool)
        if config.auth is not None and (pool := pg_pool(config.storage, "replay", 2)) is not None:
            jti = PostgresJtiStore(pool, max_entries=config.auth.replay_store_max_entries)
            shared.replay = ReplayStore(store=jti)
        if (pool := pg_pool(config.storage, "limits", 2)) is not None:
            shared.limits = PostgresRateBudget(pool)
    except BaseException:
        shared.close()
        raise
    return shared


def _open_controls(config: Config, shared: SharedStores) -> ControlsStore | None:
    """The live controls store named by the config (PostgreSQL when ``[storage]`` moves
    it there), seeded with the revocation file's consent ids. Blocking: start-up only.
    Raises ConfigError, ControlsStoreError."""
    if config.controls is None and shared.controls is None:
        return None
    seed = load_revocations(config.policy.revocations if config.policy else None)
    if shared.controls is not None:
        return shared.open_controls(seed)
    assert config.controls is not None
    return SQLiteControlsStore(config.controls, seed_revoked_consents=seed)


def _controls_service(
    config: Config,
    store: ControlsStore,
    auditor: QueryAuditor | None,
    agencies: CallerAuthenticator | None,
    consents: Callable[[], ConsentVerifier | None],
    replay: ReplayStore | None = None,
) -> ControlsService:
    if config.auth is not None:
        officers = _authenticator(config.auth, (Role.OFFICER,), store, replay)

        def authorize(context: Any) -> str:
            return officers.authenticate(context).principal_id

        registry = load_registry(config.auth.registry)

        def agency_exists(agency: str) -> bool:
            return registry.agency(agency) is not None

    else:  # insecure development mode: a header names the officer
        authorize = dev_officer

        def agency_exists(agency: str) -> bool:
            return True

    ca = None
    if config.tls is not None:
        pems = config.tls.client_ca.read_bytes()
        ca = x509.load_pem_x509_certificates(pems)[0]
    return ControlsService(
        store,
        authorize=authorize,
        caller=agencies.authenticate if agencies is not None else None,
        consents=consents,
        audit=auditor,
        crl_issuer=ca,
        agency_exists=agency_exists,
    )


async def open_auditor(audit: AuditConfig, storage: StorageConfig | None = None) -> QueryAuditor:
    """Open the audit log named by the config: the SQLite file ``audit.path``, or the
    log every process shares on PostgreSQL where ``[storage]`` moves the audit store
    there. Raises ConfigError or AuditUnavailableError."""

    def keys() -> tuple[Ed25519Signer, bytes, list[str], list[Ed25519Signer]]:
        try:
            signer = Ed25519Signer.from_file(audit.key)
            co_signers = [Ed25519Signer.from_file(p) for p in audit.co_sign_keys]
            pkey = load_pseudonym_key(audit.pseudonym_key)
            trusted = [
                line.strip()
                for p in audit.trusted_keys
                for line in p.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        except (OSError, AuditError) as exc:
            raise ConfigError("audit.key", f"cannot load the audit keys: {exc}") from None
        return signer, pkey, trusted, co_signers

    signer, pkey, trusted, co_signers = await asyncio.to_thread(keys)
    target = None
    if storage is not None:
        target = storage.target_for("audit", application_name="credit-gateway-audit")
    audit_log: AuditLog
    if target is not None:
        identity = f"{socket.gethostname()}:{os.getpid()}"
        try:
            store = await asyncio.to_thread(PostgresAuditStore, target, identity=identity)
        except StorageError as exc:
            raise AuditUnavailableError(f"audit log refused to open: {exc}") from None
        audit_log = await SharedAuditLog.open_shared(
            store, signer, trusted_keys=trusted, co_signers=co_signers
        )
    else:
        if audit.path is None:  # the parser requires it while the log is on SQLite
            raise ConfigError("audit.path", "missing: the audit log file (created if absent)")
        audit_log = await AuditLog.open(
            audit.path, signer, trusted_keys=trusted, co_signers=co_signers
        )
    return QueryAuditor(audit_log, pkey, gateway_origin=audit_log.origin)


async def _open_billing(
    config: Config,
    catalog: Catalog,
    auditor: QueryAuditor | None,
    prices: PriceList | None,
    controls: ControlsStore | None = None,
    shared: _Shared | None = None,
) -> tuple[Meter, BillingAdminService, Callable[[], dt.date]]:
    """``prices``: the active policy version's (checked against its catalog when it was
    loaded); None: the config's price list file, checked here."""
    assert config.billing is not None
    if prices is None:
        prices = load_prices(config.billing.prices)
        prices.check_catalog(catalog)

    # Every booking goes on the signed record: a query's own reserve and charge
    # inside its query record; releases, refunds and top-ups as records of their own.
    on_event = auditor.record_billing if auditor is not None else None
    shared = shared or _Shared()
    meter = await Meter.open(
        shared.ledger if shared.ledger is not None else config.billing.ledger,
        prices,
        on_event=on_event,
        audit_lookup=auditor.billing_records if auditor is not None else None,
        # A shared ledger: never touch another live process's queries in flight.
        recover_older_than=(
            dt.timedelta(seconds=HEALED_SETTLE_S) if shared.ledger is not None else None
        ),
    )
    if auditor is not None:
        # What was refunded while the log was down goes on the record once it heals.
        auditor.log.add_listener(lambda available: meter.audit_healed() if available else None)
    finance: Authenticator | None = None
    registry = None
    if config.auth is not None:
        finance = _authenticator(config.auth, (Role.FINANCE,), controls, shared.replay)
        registry = load_registry(config.auth.registry)

    def authorize(context: Any) -> str:
        if finance is None:  # insecure development mode
            return "development"
        return finance.authenticate(context).principal_id

    def account_exists(account: str) -> bool:
        return registry is None or registry.agency(account) is not None

    admin = BillingAdminService(
        meter.ledger,
        authorize=authorize,
        timezone=prices.timezone,
        account_exists=account_exists,
        on_event=on_event,
    )
    tz = prices.timezone
    return meter, admin, lambda: dt.datetime.now(tz).date()


def _open_policy_admin(
    config: Config,
    catalog: Catalog,
    auditor: QueryAuditor | None,
    purposes: tuple[str, ...],
    controls: ControlsStore | None = None,
    shared: SharedStores | None = None,
    replay: ReplayStore | None = None,
) -> tuple[PolicyAdminService, Decider]:
    """The version store, the workflow and its servicer, and the active version's decider
    (seeding version 1 from the files on disk on first start). Blocking: start-up only.
    Raises ConfigError, PolicyStoreError."""
    pc = config.policy
    assert pc is not None
    disk = read_disk_files(
        model=pc.model,
        policy=pc.policy,
        catalog=config.catalog,
        prices=config.billing.prices if config.billing else None,
        registry=config.auth.registry if config.auth else None,
    )
    recipe = DeciderRecipe(
        purposes=purposes,
        consent_issuers=tuple(
            TrustedIssuer.from_jwks_file(i.issuer, i.jwks) for i in pc.consent_issuers
        ),
        consent_audience=pc.consent_audience,
        revocations=pc.revocations,
    )
    store: VersionStore
    if shared is not None and shared.policy is not None:
        store = shared.open_versions()
    else:
        assert pc.store is not None
        store = SQLiteVersionStore(pc.store)
    admin = PolicyAdministrator(
        store,
        recipe,
        serving=Serving(
            catalog,
            disk["catalog.toml"],
            disk["agencies.toml"],
            # A policy version may add only departments the config can reach.
            departments=frozenset(config.departments),
        ),
        audit=auditor,
        records=query_records(auditor.log) if auditor is not None else None,
    )
    try:
        decider = admin.initial_decider(disk)
    except BaseException:
        admin.store.close()
        raise
    if config.auth is not None:
        officers = _authenticator(config.auth, (Role.OFFICER,), controls, replay)

        def authorize(context: Any) -> str:
            return officers.authenticate(context).principal_id

    else:  # insecure development mode: a header names the officer
        authorize = dev_officer
    return PolicyAdminService(admin, authorize=authorize), decider


def _staff_authorizer(
    auth: AuthConfig, controls: ControlsStore | None, replay: ReplayStore | None = None
) -> Callable[[Any], tuple[Role, str]]:
    """Officers and auditors, for ``LegalBasisAdmin``: (role, principal id). ``replay``:
    the shared replay store where ``[storage]`` puts it (else ``[auth] replay_store``)."""
    staff = _authenticator(auth, (Role.OFFICER, Role.AUDITOR), controls, replay)

    def authorize(context: Any) -> tuple[Role, str]:
        ident = staff.authenticate(context)
        return ident.role, ident.principal_id

    return authorize


async def build_gateway(config: Config) -> Gateway:
    """The production wiring: authenticator, decider, audit log and billing
    from the configuration's sections. Raises :class:`~gateway.errors.ConfigError`."""
    catalog = load_catalog(config.catalog)
    # Policy versions and live controls on PostgreSQL, when [storage] moves them there:
    # the schema is checked (never migrated) and one listener per database is prepared.
    shared = await asyncio.to_thread(open_shared_stores, config)
    try:
        pg = await asyncio.to_thread(_open_shared, config)
    except BaseException:
        await asyncio.to_thread(shared.close)
        raise
    try:
        return await _build(config, catalog, shared, pg)
    except BaseException:
        await asyncio.to_thread(shared.close)
        await asyncio.to_thread(pg.close)
        raise


async def _build(config: Config, catalog: Catalog, shared: SharedStores, pg: _Shared) -> Gateway:
    controls = await asyncio.to_thread(_open_controls, config, shared)
    authenticator = None
    audit_auth = None
    if config.auth is not None:
        authenticator, audit_auth = build_authenticators(config.auth, controls, pg.replay)
    auditor = await open_auditor(config.audit, config.storage) if config.audit is not None else None
    indexer = archive = None
    if config.audit is not None:
        indexer, archive = await asyncio.to_thread(open_subject_parts, config.audit, config.storage)
    decider: Decider | None = None
    policy_admin: PolicyAdminService | None = None
    if config.policy is not None and (config.policy.store is not None or shared.policy):
        policy_admin, decider = await asyncio.to_thread(
            _open_policy_admin,
            config,
            catalog,
            auditor,
            tuple(load_purposes(config.purposes)),
            controls,
            shared,
            pg.replay,
        )
    elif config.policy is not None:
        decider = build_decider(
            catalog,
            model=config.policy.model,
            policy=config.policy.policy,
            revocations=config.policy.revocations,
            consent_issuers=[(i.issuer, i.jwks) for i in config.policy.consent_issuers],
            consent_audience=config.policy.consent_audience,
            registry=load_registry(config.auth.registry) if config.auth else None,
            purposes=tuple(load_purposes(config.purposes)),
        )
    elif not config.insecure_dev_plaintext:
        raise ConfigError("policy", "missing: who may see what is decided by the policy")
    meter = admin = None
    today: Callable[[], dt.date] = dt.date.today
    current = policy_admin.admin.current if policy_admin is not None else None
    if policy_admin is not None:
        # The active version's catalog when it was changed hot (see initial_decider).
        catalog = policy_admin.admin.serving.catalog
    if config.billing is not None:
        # The active version's price list, not the file's: it may have changed since.
        meter, admin, today = await _open_billing(
            config,
            catalog,
            auditor,
            current.prices if current is not None else None,
            controls,
            pg,
        )
    # Rate limits: the active version's; without a policy store, the shipped file's.
    # With [storage] on PostgreSQL, one budget for every process on every host.
    limiter = RateLimiter(budget=pg.limits)
    if policy_admin is not None:
        policy_admin.admin.limiter = limiter
        if policy_admin.admin.current is not None:
            limiter.configure(policy_admin.admin.current.limits)
    elif config.policy is not None:
        limiter.configure(
            parse_limits(
                load_toml(DEFAULT_LIMITS_PATH),
                agencies=load_registry(config.auth.registry).ids(Role.AGENCY)
                if config.auth
                else None,
                purposes=tuple(load_purposes(config.purposes)),
            )
        )
    gateway: Gateway | None = None

    def consents() -> ConsentVerifier | None:
        current = gateway.decider.current if gateway and gateway.decider else None
        return current.consent if isinstance(current, PolicyDecider) else None

    service = (
        _controls_service(config, controls, auditor, authenticator, consents, pg.replay)
        if controls is not None
        else None
    )
    # Objections shared on PostgreSQL: their marks are followed by this process's listener,
    # so it must subscribe before the listeners start.
    objections = (
        await asyncio.to_thread(shared.open_objections)
        if config.objections is not None and shared.objections is not None
        else None
    )
    # Activations and control changes made by any process arrive by NOTIFY from now on;
    # until the first complete re-read this process refuses queries (fails closed).
    await shared.start_listening(
        asyncio.get_running_loop(),
        policy_admin.admin if policy_admin is not None else None,
    )
    gateway = Gateway(
        config,
        live=shared.listeners,
        limiter=limiter,
        catalog=catalog,
        decider=decider,
        authenticator=authenticator,
        audit=auditor,
        audit_authenticator=audit_auth,
        meter=meter,
        billing_admin=admin,
        policy_admin=policy_admin,
        controls=service,
        today=today,
        subject_index=indexer,
        consent_archive=archive,
        staff=_staff_authorizer(config.auth, controls, pg.replay) if config.auth else None,
    )
    if pg.replay is not None:
        gateway.on_release.append(pg.replay.close)
    if config.objections is not None:
        oc = config.objections
        repair = load_repair_policy(oc.repair)
        repair.check_catalog(catalog)
        store: ObjectionStore
        if objections is not None:
            store = objections
        else:
            assert oc.store is not None  # the parser names a file unless it is shared
            store = await asyncio.to_thread(SQLiteObjectionStore, oc.store)
        gw = gateway
        gateway.objections = ObjectionDesk(
            store,
            catalog=lambda: gw.catalog,
            clients=gateway.clients,
            # The audit log's keyed pseudonym, as the query path uses.
            pseudonym=auditor.pseudonym if auditor is not None else unkeyed_pseudonym,
            repair=repair,
            audit=auditor,
            consents=consents,
            metrics=gateway.metrics,
            poll_interval_s=oc.poll_interval_s,
        )
    return gateway
