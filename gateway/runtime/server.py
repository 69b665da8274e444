"""The gateway process: a grpc.aio server running the query pipeline.

    gw = Gateway(load_config(Path("gateway.toml")))
    await gw.start()            # connects departments, checks their Describe
    print(gw.address)           # "127.0.0.1:8443"
    await gw.stop()             # drains queries in flight

:meth:`Gateway.start` raises :class:`~gateway.errors.ConfigError` when the
configuration or the catalog is wrong, naming the key or field. Departments do not
stop it: one that cannot be reached is ``unavailable`` and one whose certificate or
``Describe`` disagrees is ``refused`` (kept out, with a log line); their query sections
say so, and a :class:`~gateway.federation.DepartmentMonitor` checks them again in the
background (1 s doubling to 30 s) until they serve. A policy version may add or retire
departments (:meth:`Gateway.install_catalog`), hot. Standard gRPC health checking and
server reflection (v1 and v1alpha) are served beside the query service; every call
passes one :class:`~gateway.api.edge.Edge`. Health tells the truth: the overall ("") and
the query service's status are NOT_SERVING while the audit log is failing (every query
would be refused) and SERVING again once the log has healed itself; departments down do
not change them (the gateway answers, with those sections unavailable). Each department
has its own health service name, ``credit.v1.Department/<id>``: SERVING while it is
asked, NOT_SERVING while it is kept out, SERVICE_UNKNOWN once retired.

Why one module (some 630 lines): :class:`Gateway` owns the order in which every service,
store and background task starts and stops (departments before queries, the audit log
last to close); the services themselves live in gateway/api/ and the wiring of stores in
:mod:`gateway.runtime.assembly`.

**Live state on PostgreSQL.** With policy versions or live controls on PostgreSQL the
gateway watches its listeners (``live``, :class:`~gateway.stores.postgres.notify.LiveListener`):
while one is stale past its bound (``[storage] stale_after_s``: its connection is lost)
the overall and query health are NOT_SERVING and every query is refused UNAVAILABLE
(``LIVE_STATE_STALE``) before it is decided; both recover by themselves once the listener
has re-read the shared state.

**Workers.** ``worker=True`` (``credit-gateway serve --workers N``) binds with
``SO_REUSEPORT``, so that N processes share one port (the kernel spreads connections),
and leaves ``/metrics`` to the supervisor (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway import __version__
from gateway.api.audit import AuditServicer
from gateway.api.billing import BillingAdminService
from gateway.api.controls import ControlsService
from gateway.api.edge import Edge
from gateway.api.objections import ObjectionService
from gateway.api.policy_admin import PolicyAdminService
from gateway.api.query import QueryService
from gateway.api.reflection import enable_reflection
from gateway.api.report import ReportService
from gateway.api.screening import ScreeningServicer
from gateway.api.subject import LegalBasisAdminService, SubjectService
from gateway.audit.auditor import QueryAuditor
from gateway.auth import Authenticator
from gateway.auth.identity import CallerSource, InsecureDevAuthenticator
from gateway.auth.registry import load_registry
from gateway.billing import Meter
from gateway.domain.catalog import Catalog, load_catalog
from gateway.domain.purposes import Purpose, load_purposes
from gateway.errors import ConfigError, GatewayError
from gateway.federation import (
    CircuitBreaker,
    DepartmentClient,
    DepartmentMonitor,
    DepartmentState,
)
from gateway.objections import ObjectionDesk
from gateway.pipeline.decision import (
    CatalogDecider,
    Decider,
    Decision,
    QueryFacts,
    SwitchableDecider,
)
from gateway.pipeline.limits import RateLimiter
from gateway.pipeline.validation import Validator
from gateway.policy.decider import PolicyDecider
from gateway.policy.legal import LegalBases, load_legal_bases
from gateway.runtime.config import Config
from gateway.runtime.metrics import Metrics
from gateway.screening.measures import MeasuresSource
from gateway.screening.screener import Screener
from gateway.subject import ConsentArchive, SubjectIndexer, SubjectStoreError
from protos.credit.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    billing_pb2,
    billing_pb2_grpc,
    controls_pb2,
    controls_pb2_grpc,
    objections_pb2,
    objections_pb2_grpc,
    policy_admin_pb2,
    policy_admin_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    report_pb2,
    report_pb2_grpc,
    screening_pb2,
    screening_pb2_grpc,
    subject_pb2,
    subject_pb2_grpc,
)

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

QUERY_SERVICE = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
BILLING_SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingAdmin"].full_name
POLICY_ADMIN_SERVICE = policy_admin_pb2.DESCRIPTOR.services_by_name["PolicyAdmin"].full_name
#: Health service name of one department: ``credit.v1.Department/tax``.
DEPARTMENT_HEALTH_PREFIX = "credit.v1.Department/"
#: How long a retired department's channel stays open for queries already asking it.
_RETIRE_GRACE_S = 30.0
REPORT_SERVICE = report_pb2.DESCRIPTOR.services_by_name["ReportService"].full_name
CONTROLS_SERVICE = controls_pb2.DESCRIPTOR.services_by_name["SecurityControls"].full_name
SCREENING_SERVICE = screening_pb2.DESCRIPTOR.services_by_name["ScreeningService"].full_name
SUBJECT_SERVICE = subject_pb2.DESCRIPTOR.services_by_name["SubjectService"].full_name
LEGAL_BASIS_SERVICE = subject_pb2.DESCRIPTOR.services_by_name["LegalBasisAdmin"].full_name
#: How often the consent archive is purged of consents past their retention (seconds).
_PURGE_INTERVAL_S = 86_400.0
OBJECTION_SERVICE = objections_pb2.DESCRIPTOR.services_by_name["ObjectionService"].full_name


#: How often the gateway looks at its listeners' freshness for its health (seconds).
_LIVE_WATCH_S = 0.2


class LiveState(Protocol):
    """What the gateway needs of a live listener
    (:class:`~gateway.stores.postgres.notify.LiveListener`)."""

    def fresh(self) -> bool:
        """Whether the shared state this process applied is within its bound."""
        ...

    def check(self) -> None:
        """Raise a GatewayError (UNAVAILABLE) unless fresh."""
        ...

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop listening."""
        ...


class _LiveDecider(SwitchableDecider):
    """The switchable decider, refusing to decide while the live state is stale: a query
    is never decided under a policy or controls older than the stated bound."""

    def __init__(self, decider: Decider, live: Sequence[LiveState]) -> None:
        super().__init__(decider)
        self._live = tuple(live)

    def decide(self, facts: QueryFacts) -> Decision:
        """Check every listener (one clock read each), then decide."""
        for state in self._live:
            state.check()
        return super().decide(facts)


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _reader(breaker: CircuitBreaker) -> Callable[[], float]:
    return lambda: float(breaker.state)


class Gateway:
    """One gateway process. Collaborators not given are built from the config."""

    def __init__(
        self,
        config: Config,
        *,
        authenticator: CallerSource | None = None,
        decider: Decider | None = None,
        audit: QueryAuditor | None = None,
        audit_authenticator: Authenticator | None = None,
        catalog: Catalog | None = None,
        metrics: Metrics | None = None,
        meter: Meter | None = None,
        billing_admin: BillingAdminService | None = None,
        policy_admin: PolicyAdminService | None = None,
        controls: ControlsService | None = None,
        today: Callable[[], dt.date] = dt.date.today,
        limiter: RateLimiter | None = None,
        live: Sequence[LiveState] = (),
        worker: bool = False,
        legal_bases: LegalBases | None = None,
        subject_index: SubjectIndexer | None = None,
        consent_archive: ConsentArchive | None = None,
        staff: Callable[[Any], tuple[Any, str]] | None = None,
    ) -> None:
        self.config = config
        #: Listeners of the shared live state (PostgreSQL); empty on SQLite.
        self.live = tuple(live)
        self._live_task: asyncio.Task[None] | None = None
        #: One of several processes on one port (SO_REUSEPORT; no /metrics of its own).
        self.worker = worker
        #: The published legal bases (None: ``policies/legal_bases.toml``, read at start).
        self.legal_bases = legal_bases
        #: "Who looked at me" and the queries per legal basis (None: not served).
        self.subject_index = subject_index
        #: Every consent a query used, in signed form (None: not archived).
        self.consent_archive = consent_archive
        #: Officers' and auditors' authentication for ``LegalBasisAdmin`` (role, id).
        self._staff = staff
        self.subject_service: SubjectService | None = None
        self._purge_task: asyncio.Task[None] | None = None
        #: Per-agency rate limits (None: none); policy activations reconfigure it.
        self.limiter = limiter
        #: The live security controls (``credit.v1.SecurityControls`` and its store).
        self.controls = controls
        #: Blocking closers of what assembly opened beside the parts above (the
        #: PostgreSQL replay store), run after the meter.
        self.on_release: list[Callable[[], None]] = []
        self.meter = meter
        self._billing_admin = billing_admin
        self.policy_admin = policy_admin
        self._today = today
        self.catalog = catalog or load_catalog(config.catalog)
        self.metrics = metrics or Metrics()
        self.metrics.build.info({"version": __version__})
        self._authenticator = authenticator
        self._decider = decider
        self._audit = audit
        self._audit_auth = audit_authenticator
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._health_lock = asyncio.Lock()
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._metrics_stop: Callable[[], None] | None = None
        self._department_creds: grpc.ChannelCredentials | None = None
        self.metrics_url = ""
        if audit is not None:
            audit.bind_metrics(self.metrics)
        if limiter is not None:
            limiter.bind_metrics(self.metrics)
        self.clients: dict[str, DepartmentClient] = {}
        self.monitor = DepartmentMonitor(
            self.clients,
            catalog=lambda: self.catalog,
            describe_timeout_s=config.federation.describe_timeout_ms / 1000,
            on_change=self._department_changed,
        )
        self._service: QueryService | None = None
        #: ``credit.v1.ScreeningService`` (joint reward and punishment screening).
        self.screening: ScreeningServicer | None = None
        self._purposes: dict[str, Purpose] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.port = 0
        #: The live decider; policy activation swaps what it delegates to.
        self.decider: SwitchableDecider | None = None
        #: Objections and credit repair (``credit.v1.ObjectionService``), set by the
        #: assembly once the gateway's clients and metrics exist; None: not served.
        self.objections: ObjectionDesk | None = None

    @property
    def address(self) -> str:
        """The address the server listens on (``host:port``, the port actually bound)."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def _department_credentials(self) -> grpc.ChannelCredentials | None:
        fed = self.config.federation
        if fed.ca is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(fed.ca),
            private_key=_read(fed.client_key),
            certificate_chain=_read(fed.client_cert),
        )

    def _client(self, dept_id: str, creds: grpc.ChannelCredentials | None) -> DepartmentClient:
        """A client for a department the config names (not yet checked: unavailable)."""
        fed = self.config.federation
        dept = self.config.departments[dept_id]
        client = DepartmentClient(
            dept_id,
            dept.address,
            credentials=creds,
            timeout_s=(dept.timeout_ms or fed.timeout_ms) / 1000,
            breaker=CircuitBreaker(
                failure_threshold=fed.breaker_failures,
                reset_after_s=fed.breaker_reset_ms / 1000,
            ),
            # With TLS the department must present a certificate naming
            # itself ("tax.department"), not merely one from our CA.
            server_name=dept.server_name or (f"{dept_id}.department" if creds else None),
        )
        # Read at scrape time: the query path pays nothing for it.
        self.metrics.breaker_state.labels(dept_id).set_function(_reader(client.breaker))
        self._set_state_metric(dept_id, client.state)
        return client

    def _set_state_metric(self, dept_id: str, state: DepartmentState | None) -> None:
        for s in DepartmentState:
            self.metrics.department_state.labels(dept_id, s.value).set(1 if s is state else 0)

    async def _connect_departments(self) -> None:
        """Build a client per catalog department and check each once, concurrently.
        Raises ConfigError only for the configuration (a catalog department without an
        address); a department down or disagreeing is kept out, not fatal."""
        for dept_id in self.catalog.departments:
            if dept_id not in self.config.departments:
                raise ConfigError(
                    f"departments.{dept_id}", "in the catalog but no address is configured"
                )
        for dept_id in self.config.departments:
            if dept_id not in self.catalog.departments:
                # An address ready for a policy version that adds the department.
                log.info(
                    "department configured but not in the catalog: asked once a policy "
                    "version adds it",
                    extra={"department": dept_id},
                )
        self._department_creds = self._department_credentials()
        for dept_id in self.catalog.departments:
            self.clients[dept_id] = self._client(dept_id, self._department_creds)
        await self.monitor.check_all()

    async def _department_changed(self, dept_id: str, state: DepartmentState) -> None:
        """Monitor listener: the metric and the department's health follow its state."""
        if dept_id not in self.clients:
            return  # retired meanwhile
        self._set_state_metric(dept_id, state)
        status = health_pb2.HealthCheckResponse.NOT_SERVING
        if state is DepartmentState.SERVING:
            status = health_pb2.HealthCheckResponse.SERVING
        await self._health.set(DEPARTMENT_HEALTH_PREFIX + dept_id, status)

    def install_catalog(self, catalog: Catalog) -> None:
        """Hot switch of the catalog (a policy version adding or retiring departments or
        datasets), before that version's decider is installed. Added departments get a
        client and are checked at once in the background (unavailable until their
        ``Describe`` agrees); retired ones are no longer asked, their channels closed
        after a grace for queries under way; departments whose catalog entry changed are
        checked again. The caller (the policy workflow) has made sure the config names
        every department's address; a department it does not know raises ConfigError."""
        for dept_id in catalog.departments:
            if dept_id not in self.config.departments:
                raise ConfigError(f"departments.{dept_id}", "no address is configured")
        old = self.catalog
        self.catalog = catalog
        if self._service is not None:
            self._service.use_catalog(catalog, Validator(catalog, self._purposes))
        if self.screening is not None:
            self.screening.screener.use_catalog(catalog, Validator(catalog, self._purposes))
        for dept_id in catalog.departments:
            if dept_id not in self.clients:
                self.clients[dept_id] = self._client(dept_id, self._department_creds)
                self.monitor.add(dept_id)
                log.info("department added by a policy version", extra={"department": dept_id})
            elif catalog.departments[dept_id] != old.departments.get(dept_id):
                self.monitor.add(dept_id)  # check its Describe against the new entry
        for dept_id in [d for d in self.clients if d not in catalog.departments]:
            client = self.clients.pop(dept_id)
            log.info("department retired by a policy version", extra={"department": dept_id})
            task = asyncio.get_running_loop().create_task(self._retire(client))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _retire(self, client: DepartmentClient) -> None:
        dept_id = client.department
        await self.monitor.remove(dept_id)
        self._set_state_metric(dept_id, None)
        with contextlib.suppress(KeyError):
            self.metrics.breaker_state.remove(dept_id)
        await self._health.set(
            DEPARTMENT_HEALTH_PREFIX + dept_id, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        )
        try:
            await asyncio.sleep(_RETIRE_GRACE_S)
        finally:
            await client.close()

    async def start(self) -> None:
        """Connect departments, check them against the catalog, start serving.

        Raises :class:`ConfigError` and leaves nothing running on failure.
        """
        try:
            await self._connect_departments()
            purposes = load_purposes(self.config.purposes)
            self._purposes = dict(purposes)
            if self.legal_bases is None:
                self.legal_bases = load_legal_bases(purposes=frozenset(purposes))
            if self._audit is not None:  # a refused query's purpose is recorded by name
                self._audit.known_purposes = frozenset(purposes)
            if not self.config.insecure_dev_plaintext:
                # Fail closed: outside development every service authenticates.
                if self._authenticator is None:
                    raise ConfigError("auth", "no authenticator configured")
                if self._audit is not None and self._audit_auth is None:
                    raise ConfigError("auth", "the audit service needs an authenticator")
                if self._audit is None:
                    raise ConfigError("audit", "no audit log configured")
            if self._authenticator is None:
                self._authenticator = InsecureDevAuthenticator()
            first = self._decider or CatalogDecider(self.catalog)
            decider = _LiveDecider(first, self.live) if self.live else SwitchableDecider(first)
            self.decider = decider
            self.metrics.watch_decisions(decider.cache_info)
            self.metrics.policy_version.info({"version": decider.version})
            service = QueryService(
                catalog=self.catalog,
                validator=Validator(self.catalog, purposes),
                decider=decider,
                authenticator=self._authenticator,
                clients=self.clients,
                metrics=self.metrics,
                audit=self._audit,
                meter=self.meter,
                pseudonym=self._audit.pseudonym if self._audit is not None else None,
                default_timeout_s=self.config.default_timeout_ms / 1000,
                today=self._today,
                limiter=self.limiter,
                legal_bases=self.legal_bases,
                consent_archive=self.consent_archive,
                marker=self.objections,
            )
            self._service = service
            screener = Screener(
                catalog=self.catalog,
                validator=Validator(self.catalog, purposes),
                decider=decider,
                clients=self.clients,
                measures=MeasuresSource(self._version_files, lambda: self.catalog),
                audit=self._audit,
                meter=self.meter,
                today=self._today,
                default_timeout_s=self.config.default_timeout_ms / 1000,
                # The objection marks as the query path applies them (issue 14): an approved
                # repair takes the entry off every screen, an objection marks it disputed.
                marker=self.objections,
            )
            screener.measures  # noqa: B018 - a measures catalog that does not load stops start-up
            self.screening = ScreeningServicer(screener, self._authenticator, audit=self._audit)
            # One edge for every call: undecodable requests, error mapping, refusals audited.
            server = grpc.aio.server(
                interceptors=[Edge(audit=self._audit)],
                # Workers share one port; a lone process refuses one already taken.
                options=[("grpc.so_reuseport", 1 if self.worker else 0)],
            )
            query_pb2_grpc.add_QueryServiceServicer_to_server(service, server)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            screening_pb2_grpc.add_ScreeningServiceServicer_to_server(self.screening, server)
            services = [QUERY_SERVICE, SCREENING_SERVICE, health.SERVICE_NAME]
            if self._audit is not None:
                audit_pb2_grpc.add_AuditServiceServicer_to_server(
                    AuditServicer(
                        self._audit.log,
                        self._audit_auth,
                        subject_of=self._subject_of,
                        today=self._today,
                    ),
                    server,
                )
                services.append(AUDIT_SERVICE)
                # Reports need the log: its key signs them, its proofs make them checkable.
                report_pb2_grpc.add_ReportServiceServicer_to_server(
                    ReportService(
                        service,
                        self._audit.log,
                        catalog=lambda: self.catalog,
                        purposes=lambda: self._purposes,
                        agency_name=self._agency_names(),
                        font=self.config.report_font,
                    ),
                    server,
                )
                services.append(REPORT_SERVICE)
            if self._billing_admin is not None:
                billing_pb2_grpc.add_BillingAdminServicer_to_server(self._billing_admin, server)
                services.append(BILLING_SERVICE)
            if self.policy_admin is not None:
                policy_admin_pb2_grpc.add_PolicyAdminServicer_to_server(self.policy_admin, server)
                services.append(POLICY_ADMIN_SERVICE)
            if self.controls is not None:
                controls_pb2_grpc.add_SecurityControlsServicer_to_server(self.controls, server)
                services.append(CONTROLS_SERVICE)
                self._attach_controls(decider.current)
            if self.subject_index is not None and self._audit is not None:
                await self.subject_index.start()  # catches up in the background
                self.subject_service = SubjectService(
                    self.subject_index,
                    self._authenticator,
                    self._audit.pseudonym,
                    audit=self._audit,
                    origin=self._audit.log.origin,
                    today=self._today,
                )
                subject_pb2_grpc.add_SubjectServiceServicer_to_server(self.subject_service, server)
                services.append(SUBJECT_SERVICE)
                if self._staff is not None:
                    legal = LegalBasisAdminService(
                        self.subject_index,
                        self.legal_bases,
                        authorize=self._staff,
                        archive=self.consent_archive,
                        audit=self._audit,
                        origin=self._audit.log.origin,
                    )
                    subject_pb2_grpc.add_LegalBasisAdminServicer_to_server(legal, server)
                    services.append(LEGAL_BASIS_SERVICE)
            if self.consent_archive is not None:
                self._purge_task = asyncio.create_task(self._purge_consents(), name="consents")
            if self.objections is not None:
                objections_pb2_grpc.add_ObjectionServiceServicer_to_server(
                    ObjectionService(self.objections, caller=self._authenticator.authenticate),
                    server,
                )
                services.append(OBJECTION_SERVICE)
            enable_reflection(services, server)  # grpc.reflection.v1 and v1alpha
            self.port = self._bind(server)
            await server.start()
            self._server = server
            if self.policy_admin is not None:
                # From now on activations switch this gateway's decider and prices.
                await self.policy_admin.admin.start(
                    self.install_decider, meter=self.meter, install_catalog=self.install_catalog
                )
            self.monitor.start()  # departments not serving are checked again from now on
            if self.objections is not None:
                self.objections.start()  # routes and polls objections from now on
            if self.config.metrics_listen and not self.worker:
                self.metrics_url, self._metrics_stop = self.metrics.serve_http(
                    self.config.metrics_listen
                )
        except BaseException:
            if self._server is not None:
                await self._server.stop(0)
                self._server = None
            await self._release()
            raise
        if self._audit is not None:
            self._audit.log.add_listener(self._audit_changed)
        await self._follow_audit()
        if self.live:
            self._live_task = asyncio.create_task(self._watch_live(), name="live-state-watch")
        else:
            self.metrics.live_fresh.set(1)
        log.info("gateway serving", extra={"address": self.address})

    def _version_files(self) -> Mapping[str, str] | None:
        """The active policy version's files (None without a policy store)."""
        current = self.policy_admin.admin.current if self.policy_admin is not None else None
        return current.files if current is not None else None

    def _agency_names(self) -> Callable[[str], str]:
        """An agency's Chinese name from the registry, for reports ("" without one)."""
        if self.config.auth is None:
            return lambda _agency: ""
        registry = load_registry(self.config.auth.registry)

        def name(agency_id: str) -> str:
            principal = registry.agency(agency_id)
            return principal.name_zh if principal is not None else ""

        return name

    async def _watch_live(self) -> None:
        """Health follows the listeners' freshness (checked every 0.2 s: the bound is
        seconds); each change is logged once."""
        was = all(state.fresh() for state in self.live)
        self.metrics.live_fresh.set(1 if was else 0)
        while True:
            await asyncio.sleep(_LIVE_WATCH_S)
            now = all(state.fresh() for state in self.live)
            if now != was:
                self.metrics.live_fresh.set(1 if now else 0)
                if now:
                    log.warning("live state confirmed again: serving")
                else:
                    log.error("live state stale past its bound: NOT_SERVING, refusing queries")
                was = now
                await self._follow_audit()

    def _audit_changed(self, available: bool) -> None:
        """Audit log listener (on the event loop): health follows the log."""
        task = asyncio.get_running_loop().create_task(self._follow_audit())
        self._health_tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._health_tasks.discard)

    async def _follow_audit(self) -> None:
        """Set "" and the query service SERVING exactly when queries can be answered."""
        async with self._health_lock:  # one change at a time, the latest state wins
            ok = self._audit is None or self._audit.log.available
            ok = ok and all(state.fresh() for state in self.live)
            status = health_pb2.HealthCheckResponse.NOT_SERVING
            if ok:
                status = health_pb2.HealthCheckResponse.SERVING
            for name in ("", QUERY_SERVICE):
                await self._health.set(name, status)

    def _attach_controls(self, decider: Decider) -> None:
        if self.controls is not None and isinstance(decider, PolicyDecider):
            decider.attach_controls(self.controls.store)

    def install_decider(self, decider: Decider) -> None:
        """Hot switch: the next query is decided by ``decider``; queries in
        flight finish under the version they started with."""
        self._attach_controls(decider)
        if self.decider is None:
            self._decider = decider
            return
        self.decider.swap(decider)
        self.metrics.policy_version.info({"version": self.decider.version})

    def _bind(self, server: grpc.aio.Server) -> int:
        tls = self.config.tls
        try:
            if tls is None:
                log.warning(
                    "INSECURE: agency-facing listener is plaintext (insecure_dev_plaintext)"
                )
                port = server.add_insecure_port(self.config.listen)
            else:
                creds = grpc.ssl_server_credentials(
                    [(tls.key.read_bytes(), tls.cert.read_bytes())],
                    root_certificates=tls.client_ca.read_bytes(),
                    require_client_auth=True,
                )
                port = server.add_secure_port(self.config.listen, creds)
        except RuntimeError as exc:
            raise ConfigError(
                "gateway.listen", f"cannot listen on {self.config.listen}: {exc}"
            ) from None
        if port == 0:
            raise ConfigError("gateway.listen", f"cannot listen on {self.config.listen}")
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking queries, let those in flight finish (up to ``grace``
        seconds), then close department channels."""
        await self._health.enter_graceful_shutdown()
        if self._live_task is not None:
            self._live_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._live_task
            self._live_task = None
        if self._metrics_stop is not None:
            await asyncio.to_thread(self._metrics_stop)
            self._metrics_stop = None
        if self._server is not None:
            await self._server.stop(self.config.drain_grace_s if grace is None else grace)
            self._server = None
        # After the drain: an activation in flight has finished (or was cancelled).
        await self._release()

    def _subject_of(self, context: Any) -> str | None:
        """The pseudonym of the subject a self-service caller's token attests, or None."""
        if self._authenticator is None or self._audit is None:
            return None
        caller = self._authenticator.authenticate(context)
        if not caller.subject_id or not caller.subject_type:
            return None
        return self._audit.pseudonym(caller.subject_type, caller.subject_id)

    async def _purge_consents(self) -> None:
        """Purge the consent archive of consents past their retention, at start and daily."""
        archive = self.consent_archive
        assert archive is not None
        while True:
            try:
                purged = await asyncio.to_thread(archive.purge)
                if purged:
                    log.info("consent archive purged", extra={"count": purged})
            except SubjectStoreError as exc:
                log.error("consent archive not purged", extra={"reason": exc.message})
            await asyncio.sleep(_PURGE_INTERVAL_S)

    async def _release(self) -> None:
        """Close what the gateway holds, the audit log last: everything before it may
        still append records (a settlement's release, a policy action)."""
        if self.objections is not None:
            await self.objections.stop()  # before the clients: it may be asking one
            self.objections = None
        await self._close_clients()
        for state in self.live:  # no more follows: the stores below close next
            await asyncio.to_thread(state.close)
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
            self._purge_task = None
        if self.subject_index is not None:
            await self.subject_index.close()
        if self.consent_archive is not None:
            self.consent_archive.close()
        if self.policy_admin is not None:
            await self.policy_admin.admin.close()
        if self.meter is not None:
            await self.meter.close()
        if self.limiter is not None:  # a shared budget gets today's unspent units back
            await asyncio.to_thread(self.limiter.close)
        for close in self.on_release:
            await asyncio.to_thread(close)
        if self.controls is not None:
            self.controls.store.close()
        if self._audit is not None:
            # Flushes the queue and signs a final checkpoint. A log that had
            # failed already refused every query since; say so and go on.
            try:
                await self._audit.log.close()
            except GatewayError as exc:
                log.error("audit log closed after a failure", extra={"reason": exc.message})

    async def _close_clients(self) -> None:
        await self.monitor.close()
        for task in list(self._closing):  # retired departments: close their channels now
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients.values()))
        self.clients.clear()

    async def wait(self) -> None:
        """Wait until the server has stopped."""
        if self._server is not None:
            await self._server.wait_for_termination()

    def __repr__(self) -> str:
        return f"<Gateway {self.address} departments={sorted(self.clients)}>"

    # For tests and the demo: what a caller needs to know.
    def describe(self) -> dict[str, Any]:
        """What a caller needs to know (tests and the demo): addresses of the gateway and
        departments.
        """
        return {
            "gateway_address": self.address,
            "departments": {d: c.address for d, c in self.clients.items()},
        }
