"""Gateway configuration, from one TOML file.

A minimal file::

    [gateway]
    listen = "127.0.0.1:8443"

    [tls]                       # agency-facing mutual TLS
    cert = "certs/gateway/server.pem"
    key = "certs/gateway/server.key"
    client_ca = "certs/ca.pem"

    [auth]                      # certificate-bound agency tokens
    audience = "credit-gateway"
    [[auth.issuers]]
    issuer = "urn:credit-gateway:dev:agency-token-issuer"
    jwks = "certs/issuers/agency-token/jwks.json"

    [federation]                # the gateway's side of every department hop
    ca = "certs/ca.pem"
    client_cert = "certs/gateway/federation.pem"
    client_key = "certs/gateway/federation.key"
    timeout_ms = 2000

    [departments.tax]
    address = "127.0.0.1:50061"

    [storage]                   # optional: shared stores on PostgreSQL
    url = "postgresql://gateway@db.example/credit"   # never a password here
    password_file = "/run/secrets/pg-password"       # or password_env = "PGPASSWORD"
    stale_after_s = 5           # live changes: refuse queries when unconfirmed this long
    [storage.stores]            # optional per-store override; "sqlite" keeps that
    replay = "sqlite"           # store on its embedded SQLite file

Why one module (some 620 lines): the file is one TOML document with one set of rules
(relative paths, unknown keys refused, every error naming its key); its sections are
parsed by small functions that share those rules.

Relative paths are resolved against the file's folder. Every problem raises
:class:`~gateway.errors.ConfigError` naming the key, e.g.
``departments.tax.address: missing``.

Why one module (some 640 lines): one TOML file, one reader; every section's checks use the
same path and type helpers, and a reader finds every setting the gateway accepts here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.domain.files import load_toml
from gateway.errors import ConfigError
from gateway.stores.postgres.url import PgConfigError, PgTarget, check_url

__all__ = [
    "STORE_NAMES",
    "AuditConfig",
    "AuthConfig",
    "BillingConfig",
    "Config",
    "DepartmentConfig",
    "FederationConfig",
    "IssuerConfig",
    "ObjectionsConfig",
    "PolicyConfig",
    "StorageConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
]


#: The stores a ``[storage]`` URL can move to PostgreSQL. ``subject_index`` follows the
#: audit store unless named in ``[storage.stores]`` (it is derived from that log).
STORE_NAMES = (
    "audit",
    "ledger",
    "policy",
    "controls",
    "replay",
    "limits",
    "objections",
    "subject_index",
    "consent_archive",
)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """``[storage]``: where the shared stores live. ``url`` (``postgresql://``, no
    password) moves every store to PostgreSQL; ``stores`` maps a store name (one of
    :data:`STORE_NAMES`) to its own URL or ``"sqlite"`` (keep the embedded file).
    The password is read from ``password_file`` or the environment variable
    ``password_env`` when a connection opens, never from the URL."""

    url: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    stores: Mapping[str, str] = field(default_factory=dict)
    pool_max: int = 8
    connect_timeout_s: int = 5
    #: Live propagation (policy activations, revocations, suspensions on PostgreSQL):
    #: a process that has not confirmed the current versions for this many seconds
    #: refuses queries (UNAVAILABLE) and reports NOT_SERVING until it reconnects.
    stale_after_s: float = 5.0
    #: How often the listener re-reads the versions between notifications (seconds).
    poll_interval_s: float = 1.0

    def url_for(self, store: str) -> str | None:
        """The PostgreSQL URL of ``store``, or None where it stays on SQLite. The subject
        index, unless named in :attr:`stores`, goes where the audit log is: an index shared
        by every host must follow a log every host shares."""
        if store == "subject_index" and store not in self.stores and self.url_for("audit") is None:
            return None
        url = self.stores.get(store, self.url)
        return None if url in (None, "sqlite") else url

    def target_for(
        self, store: str, *, application_name: str = "credit-gateway"
    ) -> PgTarget | None:
        """How to reach ``store`` on PostgreSQL, or None where it stays on SQLite."""
        url = self.url_for(store)
        if url is None:
            return None
        return PgTarget(
            url=url,
            password_file=self.password_file,
            password_env=self.password_env,
            connect_timeout_s=self.connect_timeout_s,
            application_name=application_name,
        )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Mutual TLS files: certificate, key and the CA clients must chain to."""

    cert: Path
    key: Path
    client_ca: Path


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """A trusted token issuer: its ``iss`` and the JWKS file of its public keys."""

    issuer: str
    jwks: Path


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Who may call: the agency registry and the trusted token issuers."""

    audience: str
    issuers: tuple[IssuerConfig, ...]
    registry: Path | None = None
    #: SQLite file of seen token jtis, shared by every process naming it
    #: (:mod:`gateway.auth.replay`); None: each process remembers its own, in memory.
    replay_store: Path | None = None
    #: Most jtis the replay store holds (new tokens are refused beyond it).
    replay_store_max_entries: int = 1_000_000


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """The signed audit log: where it lives and the keys it is kept with.

    ``path`` is the SQLite log file; None where ``[storage]`` puts the audit store on
    PostgreSQL (the parser then fills :attr:`subject_index` and :attr:`consent_archive`,
    which default beside the config file, ``audit.subjects.sqlite`` and
    ``audit.consents.sqlite``)."""

    key: Path
    pseudonym_key: Path
    path: Path | None = None
    #: Verifier keys of earlier signing keys (after a rotation).
    trusted_keys: tuple[Path, ...] = ()
    #: Private keys that co-sign every checkpoint (the old key during a rotation overlap).
    co_sign_keys: tuple[Path, ...] = ()
    #: The subject index ("who looked at me"; rebuilt from the log if lost). Default: beside
    #: the log, ``<log stem>.subjects.sqlite``.
    subject_index: Path | None = None
    #: The consent archive (Art. 18; encrypted, owner-only). Default: beside the log,
    #: ``<log stem>.consents.sqlite``.
    consent_archive: Path | None = None
    #: Days an archived consent is kept after it expires (default five years).
    consent_retention_days: int = 1826

    @property
    def subject_index_path(self) -> Path:
        """:attr:`subject_index`, or its default beside the log."""
        if self.subject_index is not None:
            return self.subject_index
        assert self.path is not None  # the parser sets subject_index where path is None
        return self.path.with_name(self.path.stem + ".subjects.sqlite")

    @property
    def consent_archive_path(self) -> Path:
        """:attr:`consent_archive`, or its default beside the log."""
        if self.consent_archive is not None:
            return self.consent_archive
        assert self.path is not None  # the parser sets consent_archive where path is None
        return self.path.with_name(self.path.stem + ".consents.sqlite")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Who sees what: the Casbin model and policy, and who may issue consents."""

    model: Path | None = None
    policy: Path | None = None
    revocations: Path | None = None
    consent_issuers: tuple[IssuerConfig, ...] = ()
    consent_audience: str | None = None
    #: The policy version store (SQLite, created if absent): enables policy administration.
    store: Path | None = None


@dataclass(frozen=True, slots=True)
class BillingConfig:
    """Prepaid accounts and free quotas: the ledger file and the price list."""

    ledger: Path
    prices: Path | None = None


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """The client certificate and CA the gateway uses towards departments."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout_ms: int = 2000
    breaker_failures: int = 3
    breaker_reset_ms: int = 5000
    describe_timeout_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class DepartmentConfig:
    """One department adapter: its id, address and deadline (milliseconds)."""

    id: str
    address: str
    timeout_ms: int | None = None
    #: The name in the department's server certificate, when it differs from the address.
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectionsConfig:
    """``[objections]``: the objection store (SQLite, created if absent; default
    ``objections.sqlite`` beside the policy store; None where ``[storage]`` puts the
    ``objections`` store on PostgreSQL), how often departments are polled for
    answers (``poll_interval_s``, default 60) and the credit-repair periods file (``repair``,
    default the packaged ``policies/repair.toml``)."""

    store: Path | None
    poll_interval_s: float = 60.0
    repair: Path | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole gateway configuration, as read from its TOML file."""

    listen: str = "127.0.0.1:8443"
    default_timeout_ms: int = 3000
    drain_grace_s: float = 5.0
    catalog: Path | None = None
    purposes: Path | None = None
    metrics_listen: str | None = None
    #: The CJK TrueType font reports embed (None: gateway.report.fonts.FONT_PATHS).
    report_font: Path | None = None
    tls: TlsConfig | None = None
    auth: AuthConfig | None = None
    audit: AuditConfig | None = None
    billing: BillingConfig | None = None
    policy: PolicyConfig | None = None
    #: The live security-controls store (SQLite, created if absent; ``[controls] store``):
    #: revocations, suspensions, consent use counts, shared by every process naming it.
    #: Default: ``controls.sqlite`` beside the policy store; None without either.
    controls: Path | None = None
    #: Objections and credit repair (``[objections]``): None without a store.
    objections: ObjectionsConfig | None = None
    #: Serve agencies over plaintext with header identities. Development only.
    insecure_dev_plaintext: bool = False
    federation: FederationConfig = field(default_factory=FederationConfig)
    departments: Mapping[str, DepartmentConfig] = field(default_factory=dict)
    storage: StorageConfig = field(default_factory=StorageConfig)


def load_config(path: Path) -> Config:
    """Read and check a configuration file. Raises :class:`ConfigError`."""
    doc = load_toml(path, "config")
    return parse_config(doc, base=path.resolve().parent)


def parse_config(doc: Mapping[str, Any], *, base: Path) -> Config:
    """Build a :class:`Config` from parsed TOML. Raises :class:`ConfigError`."""
    known = {
        "gateway",
        "tls",
        "auth",
        "federation",
        "departments",
        "audit",
        "billing",
        "policy",
        "controls",
        "storage",
        "objections",
    }
    for key in doc:
        if key not in known:
            raise ConfigError(key, f"unknown section; expected one of {', '.join(sorted(known))}")
    gw = _section(doc, "gateway")
    _no_unknown(
        gw,
        "gateway",
        {
            "listen",
            "default_timeout_ms",
            "drain_grace_s",
            "catalog",
            "purposes",
            "metrics_listen",
            "insecure_dev_plaintext",
            "report_font",
        },
    )
    tls_raw = doc.get("tls")
    tls = None
    if tls_raw is not None:
        if not isinstance(tls_raw, Mapping):
            raise ConfigError("tls", "must be a table")
        _no_unknown(tls_raw, "tls", {"cert", "key", "client_ca"})
        tls = TlsConfig(
            cert=_required_path(tls_raw, "tls", "cert", base),
            key=_required_path(tls_raw, "tls", "key", base),
            client_ca=_required_path(tls_raw, "tls", "client_ca", base),
        )
    insecure = gw.get("insecure_dev_plaintext", False)
    if not isinstance(insecure, bool):
        raise ConfigError("gateway.insecure_dev_plaintext", "must be true or false")
    if tls is None and not insecure:
        raise ConfigError(
            "tls",
            "missing: agencies must connect over mutual TLS "
            "(set gateway.insecure_dev_plaintext = true only for development)",
        )
    auth = _parse_auth(doc.get("auth"), base)
    if tls is not None and auth is None:
        raise ConfigError("auth", "missing: with TLS, name the token audience and trusted issuers")
    fed_raw = _section(doc, "federation")
    _no_unknown(
        fed_raw,
        "federation",
        {
            "ca",
            "client_cert",
            "client_key",
            "timeout_ms",
            "breaker_failures",
            "breaker_reset_ms",
            "describe_timeout_ms",
        },
    )
    fed = FederationConfig(
        ca=_path(fed_raw, "federation", "ca", base),
        client_cert=_path(fed_raw, "federation", "client_cert", base),
        client_key=_path(fed_raw, "federation", "client_key", base),
        timeout_ms=_int(fed_raw, "federation", "timeout_ms", 2000, 1, 600_000),
        breaker_failures=_int(fed_raw, "federation", "breaker_failures", 3, 1, 1000),
        breaker_reset_ms=_int(fed_raw, "federation", "breaker_reset_ms", 5000, 1, 3_600_000),
        describe_timeout_ms=_int(fed_raw, "federation", "describe_timeout_ms", 10_000, 1, 600_000),
    )
    tls_parts = [fed.ca, fed.client_cert, fed.client_key]
    if any(tls_parts) and not all(tls_parts):
        raise ConfigError("federation", "ca, client_cert and client_key go together")
    if not all(tls_parts) and not insecure:
        raise ConfigError(
            "federation.ca",
            "missing: departments are reached over mutual TLS "
            "(set gateway.insecure_dev_plaintext = true only for development)",
        )
    depts_raw = doc.get("departments")
    if not isinstance(depts_raw, Mapping) or not depts_raw:
        raise ConfigError("departments", "missing: name at least one department and its address")
    departments: dict[str, DepartmentConfig] = {}
    for dept_id, raw in depts_raw.items():
        key = f"departments.{dept_id}"
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must be a table with an address")
        _no_unknown(raw, key, {"address", "timeout_ms", "server_name"})
        address = raw.get("address")
        if not isinstance(address, str) or not address:
            raise ConfigError(f"{key}.address", "missing")
        _check_hostport(address, f"{key}.address")
        timeout = raw.get("timeout_ms")
        server_name = raw.get("server_name")
        if server_name is not None and not isinstance(server_name, str):
            raise ConfigError(f"{key}.server_name", "must be a string")
        departments[dept_id] = DepartmentConfig(
            id=dept_id,
            address=address,
            timeout_ms=None if timeout is None else _int(raw, key, "timeout_ms", 0, 1, 600_000),
            server_name=server_name,
        )
    listen = gw.get("listen", "127.0.0.1:8443")
    if not isinstance(listen, str):
        raise ConfigError("gateway.listen", "must be a HOST:PORT string")
    _check_hostport(listen, "gateway.listen")
    metrics_listen = gw.get("metrics_listen")
    if metrics_listen is not None:
        if not isinstance(metrics_listen, str):
            raise ConfigError("gateway.metrics_listen", "must be a HOST:PORT string")
        _check_hostport(metrics_listen, "gateway.metrics_listen")
    drain = gw.get("drain_grace_s", 5.0)
    if not isinstance(drain, int | float) or isinstance(drain, bool) or drain < 0:
        raise ConfigError("gateway.drain_grace_s", "must be a number of seconds >= 0")
    storage = _parse_storage(doc.get("storage"), base)
    audit = _parse_audit(doc.get("audit"), base, on_postgres=storage.url_for("audit") is not None)
    if audit is None and not insecure:
        raise ConfigError(
            "audit",
            "missing: no query is answered without a durable audit record "
            "(set gateway.insecure_dev_plaintext = true only for development)",
        )
    billing = _parse_billing(doc.get("billing"), base)
    policy = _parse_policy(doc.get("policy"), base)
    controls = _parse_controls(doc.get("controls"), base, policy)
    objections = _parse_objections(
        doc.get("objections"), base, policy, on_postgres=storage.url_for("objections") is not None
    )
    return Config(
        listen=listen,
        default_timeout_ms=_int(gw, "gateway", "default_timeout_ms", 3000, 1, 600_000),
        drain_grace_s=float(drain),
        catalog=_path(gw, "gateway", "catalog", base),
        purposes=_path(gw, "gateway", "purposes", base),
        metrics_listen=metrics_listen,
        report_font=_path(gw, "gateway", "report_font", base),
        tls=tls,
        auth=auth,
        audit=audit,
        billing=billing,
        policy=policy,
        controls=controls,
        objections=objections,
        insecure_dev_plaintext=insecure,
        federation=fed,
        departments=departments,
        storage=storage,
    )


def _parse_storage(raw: Any, base: Path) -> StorageConfig:
    if raw is None:
        return StorageConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("storage", "must be a table")
    _no_unknown(
        raw,
        "storage",
        {
            "url",
            "password_file",
            "password_env",
            "stores",
            "pool_max",
            "connect_timeout_s",
            "stale_after_s",
            "poll_interval_s",
        },
    )

    def url(value: Any, key: str, *, sqlite_ok: bool) -> str:
        if sqlite_ok and value == "sqlite":
            return "sqlite"
        if not isinstance(value, str):
            raise ConfigError(key, "must be a postgresql:// URL" + (' or "sqlite"' * sqlite_ok))
        try:
            return check_url(value)
        except PgConfigError as exc:
            raise ConfigError(key, str(exc)) from None

    main_url = None if raw.get("url") is None else url(raw["url"], "storage.url", sqlite_ok=False)
    stores_raw = raw.get("stores", {})
    if not isinstance(stores_raw, Mapping):
        raise ConfigError("storage.stores", "must be a table of store = URL")
    stores: dict[str, str] = {}
    for name, value in stores_raw.items():
        if name not in STORE_NAMES:
            raise ConfigError(
                f"storage.stores.{name}", f"unknown store; expected one of {', '.join(STORE_NAMES)}"
            )
        stores[name] = url(value, f"storage.stores.{name}", sqlite_ok=True)
    env = raw.get("password_env")
    if env is not None and (not isinstance(env, str) or not env):
        raise ConfigError("storage.password_env", "must be an environment variable name")
    stale, poll = raw.get("stale_after_s", 5.0), raw.get("poll_interval_s", 1.0)
    for key, value, lo in (("stale_after_s", stale, 0.5), ("poll_interval_s", poll, 0.05)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= 3600:
            raise ConfigError(f"storage.{key}", f"must be a number of seconds from {lo} to 3600")
    if poll >= stale:
        raise ConfigError("storage.poll_interval_s", "must be shorter than storage.stale_after_s")
    if stores.get("subject_index", "sqlite") != "sqlite" and (
        stores.get("audit", main_url) in (None, "sqlite")
    ):
        raise ConfigError(
            "storage.stores.subject_index",
            "a subject index on PostgreSQL is shared by every host, so it must follow an audit "
            "log they all share: put the audit store on PostgreSQL too, or keep the index on "
            '"sqlite"',
        )
    return StorageConfig(
        url=main_url,
        password_file=_path(raw, "storage", "password_file", base),
        password_env=env,
        stores=stores,
        pool_max=_int(raw, "storage", "pool_max", 8, 1, 1000),
        connect_timeout_s=_int(raw, "storage", "connect_timeout_s", 5, 1, 600),
        stale_after_s=stale,
        poll_interval_s=poll,
    )


def _parse_issuers(raw: Any, key: str, base: Path) -> tuple[IssuerConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError(key, "must be a list of [[...]] tables with issuer and jwks")
    issuers = []
    for i, item in enumerate(raw):
        ikey = f"{key}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(ikey, "must be a table with issuer and jwks")
        _no_unknown(item, ikey, {"issuer", "jwks"})
        iss = item.get("issuer")
        if not isinstance(iss, str) or not iss:
            raise ConfigError(f"{ikey}.issuer", "missing")
        issuers.append(IssuerConfig(iss, _required_path(item, ikey, "jwks", base)))
    return tuple(issuers)


def _parse_controls(raw: Any, base: Path, policy: PolicyConfig | None) -> Path | None:
    """``[controls] store``: the live controls store's path (relative to the config's folder),
    by default ``controls.sqlite`` beside the policy store. Raises ConfigError."""
    if raw is None:
        if policy is not None and policy.store is not None:
            return policy.store.parent / "controls.sqlite"
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("controls", "must be a table")
    _no_unknown(raw, "controls", {"store"})
    store = raw.get("store")
    if not isinstance(store, str) or not store:
        raise ConfigError("controls.store", "must be a file path (created if absent)")
    path = base / store if not Path(store).is_absolute() else Path(store)
    if not path.parent.is_dir():
        raise ConfigError("controls.store", f"folder not found: {path.parent}")
    return path


def _parse_objections(
    raw: Any, base: Path, policy: PolicyConfig | None, *, on_postgres: bool = False
) -> ObjectionsConfig | None:
    """``[objections]``: see :class:`ObjectionsConfig`; ``on_postgres``: ``[storage]`` puts
    the store on PostgreSQL (no file needed; objections are kept wherever there is a
    policy). Raises ConfigError."""
    if raw is None:
        if on_postgres and policy is not None:
            return ObjectionsConfig(store=None)
        if policy is not None and policy.store is not None:
            return ObjectionsConfig(store=policy.store.parent / "objections.sqlite")
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("objections", "must be a table")
    _no_unknown(raw, "objections", {"store", "poll_interval_s", "repair"})
    store = _created_path(raw, "objections", "store", base)
    if store is None and not on_postgres:
        if policy is None or policy.store is None:
            raise ConfigError("objections.store", "missing: the objection store's file")
        store = policy.store.parent / "objections.sqlite"
    interval = raw.get("poll_interval_s", 60.0)
    if (
        not isinstance(interval, int | float)
        or isinstance(interval, bool)
        or not (0.05 <= interval <= 86_400)
    ):
        raise ConfigError("objections.poll_interval_s", "must be seconds from 0.05 to 86400")
    return ObjectionsConfig(
        store=store,
        poll_interval_s=float(interval),
        repair=_path(raw, "objections", "repair", base),
    )


def _parse_policy(raw: Any, base: Path) -> PolicyConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("policy", "must be a table")
    _no_unknown(
        raw,
        "policy",
        {"model", "policy", "revocations", "consent_issuers", "consent_audience", "store"},
    )
    audience = raw.get("consent_audience")
    if audience is not None and (not isinstance(audience, str) or not audience):
        raise ConfigError("policy.consent_audience", "must be a non-empty string")
    store = raw.get("store")
    store_path = None
    if store is not None:
        if not isinstance(store, str) or not store:
            raise ConfigError("policy.store", "must be a file path (created if absent)")
        store_path = base / store if not Path(store).is_absolute() else Path(store)
        if not store_path.parent.is_dir():
            raise ConfigError("policy.store", f"folder not found: {store_path.parent}")
    return PolicyConfig(
        model=_path(raw, "policy", "model", base),
        policy=_path(raw, "policy", "policy", base),
        revocations=_path(raw, "policy", "revocations", base),
        consent_issuers=_parse_issuers(
            raw.get("consent_issuers", []), "policy.consent_issuers", base
        ),
        consent_audience=audience,
        store=store_path,
    )


def _parse_billing(raw: Any, base: Path) -> BillingConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("billing", "must be a table")
    _no_unknown(raw, "billing", {"ledger", "prices"})
    ledger = raw.get("ledger")
    if not isinstance(ledger, str) or not ledger:
        raise ConfigError("billing.ledger", "missing: the ledger file (created if absent)")
    path = base / ledger if not Path(ledger).is_absolute() else Path(ledger)
    if not path.parent.is_dir():
        raise ConfigError("billing.ledger", f"folder not found: {path.parent}")
    return BillingConfig(ledger=path, prices=_path(raw, "billing", "prices", base))


def _parse_audit(raw: Any, base: Path, *, on_postgres: bool = False) -> AuditConfig | None:
    """``[audit]``; ``path`` is required only while the log is a SQLite file
    (``on_postgres``: ``[storage]`` puts the audit store on PostgreSQL, where a path,
    if given, is unused)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("audit", "must be a table")
    _no_unknown(
        raw,
        "audit",
        {
            "path",
            "key",
            "pseudonym_key",
            "trusted_keys",
            "co_sign_keys",
            "subject_index",
            "consent_archive",
            "consent_retention_days",
        },
    )
    path = raw.get("path")
    log_path: Path | None = None
    if path is not None or not on_postgres:
        if not isinstance(path, str) or not path:
            raise ConfigError("audit.path", "missing: the audit log file (created if absent)")
        log_path = base / path if not Path(path).is_absolute() else Path(path)
        if not log_path.parent.is_dir():
            raise ConfigError("audit.path", f"folder not found: {log_path.parent}")
    subject_index = _new_file(raw, "subject_index", base)
    consent_archive = _new_file(raw, "consent_archive", base)
    if log_path is None:  # the log is on PostgreSQL: the local files go beside the config
        subject_index = subject_index or base / "audit.subjects.sqlite"
        consent_archive = consent_archive or base / "audit.consents.sqlite"
    lists: dict[str, tuple[Path, ...]] = {}
    for name in ("trusted_keys", "co_sign_keys"):
        items = raw.get(name, [])
        if not isinstance(items, list):
            raise ConfigError(f"audit.{name}", "must be a list of key files")
        lists[name] = tuple(
            _required_path({"k": t}, f"audit.{name}[{i}]", "k", base) for i, t in enumerate(items)
        )
    return AuditConfig(
        path=log_path,
        key=_required_path(raw, "audit", "key", base),
        pseudonym_key=_required_path(raw, "audit", "pseudonym_key", base),
        trusted_keys=lists["trusted_keys"],
        co_sign_keys=lists["co_sign_keys"],
        subject_index=subject_index,
        consent_archive=consent_archive,
        consent_retention_days=_retention_days(raw.get("consent_retention_days", 1826)),
    )


def _new_file(raw: Mapping[str, Any], name: str, base: Path) -> Path | None:
    """An ``[audit]`` file the gateway creates if absent (its folder must exist)."""
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"audit.{name}", "must be a file path")
    path = base / value if not Path(value).is_absolute() else Path(value)
    if not path.parent.is_dir():
        raise ConfigError(f"audit.{name}", f"folder not found: {path.parent}")
    return path


def _retention_days(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError("audit.consent_retention_days", "must be a positive number of days")
    return value


def _parse_auth(raw: Any, base: Path) -> AuthConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError("auth", "must be a table")
    _no_unknown(
        raw,
        "auth",
        {"audience", "registry", "issuers", "replay_store", "replay_store_max_entries"},
    )
    audience = raw.get("audience")
    if not isinstance(audience, str) or not audience:
        raise ConfigError("auth.audience", "missing: the aud claim tokens must carry")
    issuers_raw = raw.get("issuers")
    if not isinstance(issuers_raw, list) or not issuers_raw:
        raise ConfigError(
            "auth.issuers", "missing: at least one [[auth.issuers]] with issuer and jwks"
        )
    issuers = []
    for i, item in enumerate(issuers_raw):
        key = f"auth.issuers[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(key, "must be a table with issuer and jwks")
        _no_unknown(item, key, {"issuer", "jwks"})
        iss = item.get("issuer")
        if not isinstance(iss, str) or not iss:
            raise ConfigError(f"{key}.issuer", "missing")
        issuers.append(IssuerConfig(iss, _required_path(item, key, "jwks", base)))
    max_entries = raw.get("replay_store_max_entries", 1_000_000)
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries <= 0:
        raise ConfigError("auth.replay_store_max_entries", "must be a positive integer")
    return AuthConfig(
        audience,
        tuple(issuers),
        _path(raw, "auth", "registry", base),
        replay_store=_created_path(raw, "auth", "replay_store", base),
        replay_store_max_entries=max_entries,
    )


def _section(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(name, "must be a table")
    return value


def _no_unknown(table: Mapping[str, Any], key: str, allowed: set[str]) -> None:
    for name in table:
        if name not in allowed:
            raise ConfigError(
                f"{key}.{name}", f"unknown key; expected one of {', '.join(sorted(allowed))}"
            )


def _int(table: Mapping[str, Any], key: str, name: str, default: int, lo: int, hi: int) -> int:
    value = table.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{key}.{name}", f"must be an integer from {lo} to {hi}; got {value!r}")
    return value


def _path(
    table: Mapping[str, Any], key: str, name: str, base: Path, *, required: bool = False
) -> Path | None:
    value = table.get(name)
    if value is None:
        if required:
            raise ConfigError(f"{key}.{name}", "missing")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}.{name}", "must be a file path")
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    if not path.exists():
        raise ConfigError(f"{key}.{name}", f"file not found: {path}")
    return path


def _created_path(table: Mapping[str, Any], key: str, name: str, base: Path) -> Path | None:
    """A file the gateway creates if absent: only its folder must exist."""
    value = table.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}.{name}", "must be a file path")
    path = base / value if not Path(value).is_absolute() else Path(value)
    if not path.parent.is_dir():
        raise ConfigError(f"{key}.{name}", f"folder not found: {path.parent}")
    return path


def _required_path(table: Mapping[str, Any], key: str, name: str, base: Path) -> Path:
    path = _path(table, key, name, base, required=True)
    assert path is not None  # _path raised otherwise
    return path


def _check_hostport(value: str, key: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"must be HOST:PORT; got {value!r}")
