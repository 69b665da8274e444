"""The agency registry (``policies/agencies.toml``): who may connect, and as what.

The file has one table per role; the role fixes the certificate organisation (``O``) the
principal's client certificate must carry (see :data:`ROLE_ORGANIZATIONS`)::

    [agencies.<id>]   O = agency     data users (kind: government_body, financial_institution...)
    [officers.<id>]   O = officer    security officers
    [auditors.<id>]   O = auditor    auditors
    [finance.<id>]    O = finance    finance staff

Each entry has ``name_zh``, ``name_en``, ``status`` (active | suspended), optionally
``certificate_cn`` (default: the id) and ``note``; agencies also have ``kind``. The loader is
strict: an unknown field, a missing field, a wrong type or a CN used twice is a
:class:`~gateway.errors.ConfigError` naming the key (``agencies.bank.kind``) and the problem,
because a typo in who-may-connect should stop the gateway, not be ignored. So is an id or
certificate CN that is reserved (:func:`gateway.auth.certs.reserved_name_problem`: the gateway's own
names such as ``credit-gateway``, words of its federation identity, department names): a
principal must never be nameable like the gateway or a department.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.auth.certs import ROLE_ORGANIZATIONS, reserved_name_problem
from gateway.domain.files import load_toml, policies_path
from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_REGISTRY_PATH",
    "AgencyKind",
    "Principal",
    "Registry",
    "Role",
    "Status",
    "load_registry",
    "parse_registry",
]

#: ``policies/agencies.toml`` next to the ``gateway`` package (source checkout and wheel alike).
DEFAULT_REGISTRY_PATH = policies_path("agencies.toml")


class Role(enum.StrEnum):
    """The kind of principal; the value is the registry table name."""

    AGENCY = "agencies"
    OFFICER = "officers"
    AUDITOR = "auditors"
    FINANCE = "finance"

    @property
    def organization(self) -> str:
        """The ``O`` its certificates carry."""
        return ROLE_ORGANIZATIONS[self.value]

    @property
    def label(self) -> str:
        """Singular, upper case, for reason codes: AGENCY, OFFICER, AUDITOR, FINANCE."""
        return self.organization.upper()


class AgencyKind(enum.StrEnum):
    """What sort of body an agency is; billing and policy key on it."""

    GOVERNMENT_BODY = "government_body"
    FINANCIAL_INSTITUTION = "financial_institution"
    GUARANTEE_FIRM = "guarantee_firm"
    CREDIT_REPORTING_AGENCY = "credit_reporting_agency"
    SUBJECT_SELF_SERVICE = "subject_self_service"
    #: A public lookup service (``credit-gateway portal``): public tier, enterprises only.
    PUBLIC_PORTAL = "public_portal"


class Status(enum.StrEnum):
    """Whether a principal may call: a suspended one is refused (``<ROLE>_SUSPENDED``)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Principal:
    """One registered principal. ``kind`` is set for agencies and ``None`` for staff."""

    id: str
    role: Role
    name_zh: str
    name_en: str
    status: Status
    certificate_cn: str
    kind: AgencyKind | None = None
    note: str = ""

    @property
    def active(self) -> bool:
        """True when the principal's status is ``active`` (not suspended)."""
        return self.status is Status.ACTIVE

    @property
    def display_name(self) -> str:
        """``"<Chinese name> (<English name>)"``, for logs and replies."""
        return f"{self.name_zh} ({self.name_en})"


@dataclass(frozen=True)
class Registry:
    """All principals, indexed by role and id and by role and certificate CN."""

    principals: Mapping[Role, Mapping[str, Principal]]
    _by_cn: Mapping[Role, Mapping[str, Principal]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_cn = {
            role: {p.certificate_cn: p for p in members.values()}
            for role, members in self.principals.items()
        }
        # frozen: the index is derived once, here, and never changes afterwards
        object.__setattr__(self, "_by_cn", by_cn)

    def get(self, role: Role, ident: str) -> Principal | None:
        """The principal of ``role`` with registry id ``ident``, or None if unregistered."""
        return self.principals.get(role, {}).get(ident)

    def agency(self, agency_id: str) -> Principal | None:
        """The agency with id ``agency_id``, or None if unregistered."""
        return self.get(Role.AGENCY, agency_id)

    def by_certificate(self, role: Role, cn: str) -> Principal | None:
        """The principal of ``role`` whose certificate CN is ``cn``, if any."""
        return self._by_cn.get(role, {}).get(cn)

    def ids(self, role: Role | str) -> tuple[str, ...]:
        """Ids of ``role`` in file order (``role`` may be the table name)."""
        return tuple(self.principals.get(Role(role), {}))

    def __iter__(self) -> Iterator[Principal]:
        for members in self.principals.values():
            yield from members.values()


_COMMON = {"name_zh", "name_en", "status", "certificate_cn", "note"}


def _str(entry: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = entry.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}", "missing")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
    return value


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum(cls: type[_E], entry: Mapping[str, Any], key: str, where: str) -> _E:
    raw = _str(entry, key, where)
    try:
        return cls(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ConfigError(f"{where}.{key}", f"unknown value {raw!r} (one of: {allowed})") from None


def parse_registry(data: Mapping[str, Any], *, departments: Sequence[str] = ()) -> Registry:
    """Build a :class:`Registry` from the parsed TOML document.

    ``departments`` (the catalog's department ids, where the caller has them) are reserved
    names too.

    Raises:
        ConfigError: naming the offending key, for any unknown table or field, missing or
            mistyped field, unknown kind or status, a certificate CN used twice in a role, or
            a reserved id or CN.
    """
    principals: dict[Role, dict[str, Principal]] = {}
    for table, members in data.items():
        try:
            role = Role(table)
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ConfigError(table, f"unknown table (one of: {allowed})") from None
        if not isinstance(members, dict):
            raise ConfigError(table, "must be a table of entries")
        seen_cn: dict[str, str] = {}
        entries: dict[str, Principal] = {}
        for ident, entry in members.items():
            where = f"{table}.{ident}"
            if not isinstance(entry, dict):
                raise ConfigError(where, "must be a table")
            if not ident.isascii() or not all(c.isalnum() or c in "_-" for c in ident):
                raise ConfigError(where, "id must use ASCII letters, digits, _ and -")
            problem = reserved_name_problem(ident, departments)
            if problem is not None:
                raise ConfigError(where, problem)
            allowed_keys = _COMMON | {"kind"} if role is Role.AGENCY else _COMMON
            unknown = sorted(set(entry) - allowed_keys)
            if unknown:
                raise ConfigError(f"{where}.{unknown[0]}", "unknown field")
            cn = _str(entry, "certificate_cn", where, default=ident)
            problem = reserved_name_problem(cn, departments)
            if problem is not None:
                raise ConfigError(f"{where}.certificate_cn", problem)
            if cn in seen_cn:
                raise ConfigError(
                    f"{where}.certificate_cn", f"CN {cn!r} is already used by {seen_cn[cn]}"
                )
            seen_cn[cn] = ident
            note = entry.get("note", "")
            if not isinstance(note, str):
                raise ConfigError(f"{where}.note", "must be a string")
            entries[ident] = Principal(
                id=ident,
                role=role,
                name_zh=_str(entry, "name_zh", where),
                name_en=_str(entry, "name_en", where),
                status=_enum(Status, entry, "status", where),
                certificate_cn=cn,
                kind=_enum(AgencyKind, entry, "kind", where) if role is Role.AGENCY else None,
                note=note,
            )
        principals[role] = entries
    return Registry(principals)


def load_registry(path: Path | None = None, *, departments: Sequence[str] = ()) -> Registry:
    """Load and validate the registry file (default :data:`DEFAULT_REGISTRY_PATH`);
    ``departments`` as for :func:`parse_registry`.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or fails :func:`parse_registry`.
    """
    path = Path(path) if path is not None else DEFAULT_REGISTRY_PATH
    data = load_toml(path)
    return parse_registry(data, departments=departments)
