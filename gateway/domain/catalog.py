"""The published credit-information catalog (信用信息目录).

The catalog names every department, dataset and field the gateway may ever
return, with the field's type and tier. Nothing outside it is returned. It is
a TOML file, ``policies/catalog.toml`` by default::

    catalog = load_catalog()                      # the packaged default
    field = catalog.field("tax", "arrears", "amount_fen")
    field.tier                                    # Tier.GOVERNMENT_SHARED
    catalog.check_describe(describe_response)     # raises ConfigError on drift

:class:`~gateway.errors.ConfigError` is raised for a malformed file, naming
the key (``departments.tax.datasets.arrears.fields.amount_fen.tier``).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.domain.enums import SubjectType
from gateway.domain.files import parse_toml, policies_path, read_file
from gateway.errors import ConfigError
from protos.credit.v1 import adapter_pb2, common_pb2

__all__ = [
    "Catalog",
    "Dataset",
    "Department",
    "Field",
    "Tier",
    "default_catalog_path",
    "load_catalog",
]


class Tier(enum.Enum):
    """Tiers of information (分类分级), from least to most protected."""

    PUBLIC = "public"
    GOVERNMENT_SHARED = "government_shared"
    COMMERCIAL_SECRET = "commercial_secret"  # noqa: S105 - a tier name, not a password
    PERSONAL_PRIVACY = "personal_privacy"
    STATE_SECRET = "state_secret"  # noqa: S105 - a tier name, not a password


_TYPES: Mapping[str, int] = {
    "text": common_pb2.FIELD_TYPE_TEXT,
    "integer": common_pb2.FIELD_TYPE_INTEGER,
    "boolean": common_pb2.FIELD_TYPE_BOOLEAN,
    "date": common_pb2.FIELD_TYPE_DATE,
    "money_fen": common_pb2.FIELD_TYPE_MONEY_FEN,
}
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}
_SUBJECT_TYPES = frozenset(SubjectType)


@dataclass(frozen=True, slots=True)
class Field:
    """One published field of a dataset: its wire type and the tier that may see it."""

    name: str
    type: int  # common_pb2.FieldType
    tier: Tier
    title: str = ""
    #: Art. 14: income, deposits, securities, insurance, real estate, tax
    #: amounts: returned only with written consent.
    consent_item: bool = False
    #: Art. 14: religion, genes, fingerprints, blood type, disease and medical
    #: history: never returned, whatever a policy says.
    prohibited: bool = False


@dataclass(frozen=True, slots=True)
class Dataset:
    """One dataset a department publishes, with its fields by name."""

    department: str
    name: str
    title: str
    subject_types: frozenset[str]
    negative: bool
    fields: Mapping[str, Field]


@dataclass(frozen=True, slots=True)
class Department:
    """A department and the datasets it publishes."""

    id: str
    name: str
    name_en: str
    datasets: Mapping[str, Dataset]


@dataclass(frozen=True, slots=True)
class Catalog:
    """The whole published catalog (``policies/catalog.toml``), with the digest of its bytes."""

    version: str
    #: SHA-256 of the file's bytes: two gateways with the same digest decide alike.
    digest: str
    departments: Mapping[str, Department]
    _by_key: dict[tuple[str, str], Dataset] = field(default_factory=dict, repr=False)

    def dataset(self, department: str, dataset: str) -> Dataset | None:
        """The dataset ``department``/``dataset``, or None if it is not published."""
        return self._by_key.get((department, dataset))

    def field(self, department: str, dataset: str, name: str) -> Field | None:
        """The field ``name`` of ``department``/``dataset``, or None if it is not published."""
        ds = self._by_key.get((department, dataset))
        return None if ds is None else ds.fields.get(name)

    def datasets(self) -> Iterator[Dataset]:
        """Every dataset of every department, in catalog order."""
        for dept in self.departments.values():
            yield from dept.datasets.values()

    def check_describe(self, describe: adapter_pb2.DescribeResponse) -> None:
        """Compare a department's ``Describe`` answer with the catalog.

        Every catalog dataset and field of that department must be served, with
        the catalog's type. Extra datasets or fields the department serves are
        harmless (never asked for) and ignored. Raises :class:`ConfigError`
        naming the first disagreement.
        """
        dept_id = describe.department
        dept = self.departments.get(dept_id)
        if dept is None:
            raise ConfigError(f"departments.{dept_id}", "department is not in the catalog")
        served = {ds.name: {f.name: f.type for f in ds.fields} for ds in describe.datasets}
        for ds in dept.datasets.values():
            key = f"departments.{dept_id}.datasets.{ds.name}"
            fields = served.get(ds.name)
            if fields is None:
                raise ConfigError(key, "the department does not serve this catalog dataset")
            for f in ds.fields.values():
                got = fields.get(f.name)
                if got is None:
                    raise ConfigError(
                        f"{key}.fields.{f.name}", "the department does not serve this field"
                    )
                if got != f.type:
                    raise ConfigError(
                        f"{key}.fields.{f.name}",
                        f"type mismatch: catalog says {_TYPE_NAMES.get(f.type)}, "
                        f"department says {_TYPE_NAMES.get(got, got)}",
                    )


def default_catalog_path() -> Path:
    """The catalog shipped in the ``policies`` folder."""
    return policies_path("catalog.toml")


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and check a catalog file. Raises :class:`ConfigError`."""
    path = path or default_catalog_path()
    raw = read_file(path, "catalog")
    doc = parse_toml(raw, "catalog", path=path)
    return parse_catalog(doc, digest=hashlib.sha256(raw).hexdigest())


def parse_catalog(doc: Mapping[str, Any], *, digest: str = "") -> Catalog:
    """Build a :class:`Catalog` from parsed TOML. Raises :class:`ConfigError`."""
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise ConfigError("version", "must be a non-empty string")
    depts_raw = _table(doc, "departments", "departments")
    departments: dict[str, Department] = {}
    by_key: dict[tuple[str, str], Dataset] = {}
    for dept_id, dept_raw in depts_raw.items():
        dkey = f"departments.{dept_id}"
        dept_raw = _table(depts_raw, dept_id, dkey)
        datasets: dict[str, Dataset] = {}
        for ds_name, ds_raw in _table(dept_raw, "datasets", f"{dkey}.datasets").items():
            key = f"{dkey}.datasets.{ds_name}"
            ds_raw = _table(dept_raw["datasets"], ds_name, key)
            subject_types = ds_raw.get("subject_types", ["enterprise"])
            if not isinstance(subject_types, list) or not subject_types:
                raise ConfigError(f"{key}.subject_types", "must be a non-empty list")
            bad = [s for s in subject_types if s not in _SUBJECT_TYPES]
            if bad:
                raise ConfigError(f"{key}.subject_types", f"unknown subject type {bad[0]!r}")
            negative = ds_raw.get("negative", False)
            if not isinstance(negative, bool):
                raise ConfigError(f"{key}.negative", "must be true or false")
            fields: dict[str, Field] = {}
            for fname, f_raw in _table(ds_raw, "fields", f"{key}.fields").items():
                fkey = f"{key}.fields.{fname}"
                if not isinstance(f_raw, Mapping):
                    raise ConfigError(fkey, "must be a table with type and tier")
                fields[fname] = _parse_field(fname, f_raw, fkey)
            if not fields:
                raise ConfigError(f"{key}.fields", "a dataset needs at least one field")
            ds = Dataset(
                department=dept_id,
                name=ds_name,
                title=str(ds_raw.get("title", ds_name)),
                subject_types=frozenset(subject_types),
                negative=negative,
                fields=fields,
            )
            datasets[ds_name] = ds
            by_key[(dept_id, ds_name)] = ds
        departments[dept_id] = Department(
            id=dept_id,
            name=str(dept_raw.get("name", dept_id)),
            name_en=str(dept_raw.get("name_en", dept_id)),
            datasets=datasets,
        )
    return Catalog(version=version, digest=digest, departments=departments, _by_key=by_key)


def _parse_field(name: str, raw: Mapping[str, Any], key: str) -> Field:
    type_name = raw.get("type")
    if not isinstance(type_name, str) or type_name not in _TYPES:
        raise ConfigError(f"{key}.type", f"must be one of {', '.join(_TYPES)}; got {type_name!r}")
    try:
        tier = Tier(raw.get("tier"))
    except ValueError:
        raise ConfigError(
            f"{key}.tier",
            f"must be one of {', '.join(t.value for t in Tier)}; got {raw.get('tier')!r}",
        ) from None
    flags = {}
    for flag in ("consent_item", "prohibited"):
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}.{flag}", "must be true or false")
        flags[flag] = value
    unknown = set(raw) - {"type", "tier", "title", "consent_item", "prohibited"}
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key")
    return Field(
        name=name,
        type=_TYPES[type_name],
        tier=tier,
        title=str(raw.get("title", name)),
        consent_item=flags["consent_item"],
        prohibited=flags["prohibited"],
    )


def _table(parent: Mapping[str, Any], name: str, key: str) -> Mapping[str, Any]:
    value = parent.get(name)
    if not isinstance(value, Mapping):
        raise ConfigError(key, "missing or not a table")
    return value
