"""The measures catalog (联合奖惩措施目录, ``policies/measures.toml``): lists, scenarios,
and the measures each list brings in each scenario.

    measures = load_measures(catalog=load_catalog())     # the packaged default, checked
    [lst.id for lst in measures.relevant("government_procurement", "enterprise")]
    # ['dishonest_debtors', 'major_tax_violations', 'abnormal_operations', 'wage_arrears']
    measures.measures("dishonest_debtors", "government_procurement")[0].binding   # True

A list is relevant to a scenario when it has at least one measure for it, and to a subject
when its dataset holds that kind of subject. Every field a list reads must be a public-tier
field of its catalog dataset (a screen reveals only public facts): checked at load, with a
:class:`~gateway.errors.ConfigError` naming the key. ``version`` is the file's ``version``
and the first 12 hex digits of the SHA-256 of its text, as screens report it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.domain.catalog import Catalog, Dataset, Tier
from gateway.domain.files import parse_toml, policies_path, read_file
from gateway.errors import ConfigError

__all__ = [
    "MEASURES_FILE",
    "ListDef",
    "MeasureDef",
    "MeasuresCatalog",
    "MeasuresSource",
    "default_measures_path",
    "load_measures",
    "parse_measures",
    "parse_measures_text",
]

#: The file's name in a policy version (and in ``policies/``).
MEASURES_FILE = "measures.toml"

_KINDS = frozenset({"black", "red"})
_LIST_KEYS = frozenset(
    {
        "title",
        "department",
        "dataset",
        "kind",
        "keeper",
        "since_field",
        "until_field",
        "authority_field",
        "basis_field",
        "basis",
        "valid_days",
    }
)
_MEASURE_KEYS = frozenset({"id", "text", "legal_source", "binding"})


@dataclass(frozen=True, slots=True)
class MeasureDef:
    """One measure: a stable id, its text, its legal source, and whether it binds the
    agency (True) or is advice for its decision (False)."""

    id: str
    text: str
    legal_source: str
    binding: bool


@dataclass(frozen=True, slots=True)
class ListDef:
    """One reward or punishment list and where its public facts are read from."""

    id: str
    title: str
    department: str
    dataset: str
    #: ``"black"`` or ``"red"``.
    kind: str
    keeper: str
    since_field: str
    until_field: str = ""
    authority_field: str = ""
    basis_field: str = ""
    basis: str = ""
    #: An entry lasts this many days from ``since_field`` (0: until removed).
    valid_days: int = 0
    subject_types: frozenset[str] = frozenset()

    @property
    def fields(self) -> tuple[str, ...]:
        """The catalog fields a screen asks the department for (all public tier)."""
        named = (self.since_field, self.until_field, self.authority_field, self.basis_field)
        return tuple(dict.fromkeys(f for f in named if f))


@dataclass(frozen=True, slots=True)
class MeasuresCatalog:
    """A checked measures catalog."""

    version: str
    #: scenario id -> title.
    scenarios: Mapping[str, str]
    #: list id -> definition, in file order.
    lists: Mapping[str, ListDef]
    #: (list id, scenario id) -> measures, in file order.
    by_pair: Mapping[tuple[str, str], tuple[MeasureDef, ...]]

    def relevant(self, scenario: str, subject_type: str) -> tuple[ListDef, ...]:
        """The lists relevant to ``scenario`` for a subject of ``subject_type``, in file
        order. Raises nothing; an unknown scenario has none (check :attr:`scenarios`)."""
        return tuple(
            lst
            for lst in self.lists.values()
            if subject_type in lst.subject_types and (lst.id, scenario) in self.by_pair
        )

    def measures(self, list_id: str, scenario: str) -> tuple[MeasureDef, ...]:
        """The measures ``list_id`` brings in ``scenario`` (empty if none)."""
        return self.by_pair.get((list_id, scenario), ())

    def measure(self, list_id: str, measure_id: str) -> MeasureDef | None:
        """The measure ``measure_id`` of ``list_id`` in any scenario, or None."""
        for (lst, _), ms in self.by_pair.items():
            if lst == list_id:
                for m in ms:
                    if m.id == measure_id:
                        return m
        return None


def default_measures_path() -> Path:
    """The measures catalog shipped in the ``policies`` folder."""
    return policies_path("measures.toml")


def load_measures(path: Path | None = None, *, catalog: Catalog) -> MeasuresCatalog:
    """Read and check ``path`` (default: the packaged file) against ``catalog``.
    Raises ConfigError naming the key."""
    path = path or default_measures_path()
    text = read_file(path, "measures").decode("utf-8")
    return parse_measures_text(text, catalog=catalog)


def parse_measures_text(text: str, *, catalog: Catalog) -> MeasuresCatalog:
    """:func:`parse_measures` of a file's text, versioned by its content hash."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return parse_measures(parse_toml(text, "measures.toml"), catalog=catalog, digest=digest)


def _text(raw: Mapping[str, Any], name: str, key: str, *, required: bool = True) -> str:
    value = raw.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{key}.{name}", "must be a non-empty string")
    return value


def _public_field(ds: Dataset, name: str, key: str, *, date: bool = False) -> None:
    f = ds.fields.get(name)
    if f is None:
        raise ConfigError(key, f"{ds.department}/{ds.name} has no field {name!r}")
    if f.tier is not Tier.PUBLIC:
        # A screen reveals only public-tier facts.
        raise ConfigError(key, f"{name} is {f.tier.value}, not public")
    if date and f.type != 4:  # FIELD_TYPE_DATE
        raise ConfigError(key, f"{name} is not a date field")


def parse_measures(
    doc: Mapping[str, Any], *, catalog: Catalog, digest: str = ""
) -> MeasuresCatalog:
    """Build a :class:`MeasuresCatalog` from parsed TOML, checked against ``catalog``.
    Raises ConfigError naming the first problem."""
    unknown = set(doc) - {"version", "scenarios", "lists", "measures"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown key")
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise ConfigError("version", "must be a non-empty string")
    # Empty tables are allowed (a catalog without lists screens nothing); absent ones not.
    raw_scenarios = doc.get("scenarios")
    if not isinstance(raw_scenarios, Mapping):
        raise ConfigError("scenarios", "missing or not a table")
    scenarios = {
        str(s): _text(v if isinstance(v, Mapping) else {}, "title", f"scenarios.{s}")
        for s, v in raw_scenarios.items()
    }
    raw_lists = doc.get("lists")
    if not isinstance(raw_lists, Mapping):
        raise ConfigError("lists", "missing or not a table")
    lists: dict[str, ListDef] = {}
    for list_id, raw in raw_lists.items():
        key = f"lists.{list_id}"
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must be a table")
        extra = set(raw) - _LIST_KEYS
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
        dept, name = _text(raw, "department", key), _text(raw, "dataset", key)
        ds = catalog.dataset(dept, name)
        if ds is None:
            raise ConfigError(f"{key}.dataset", f"{dept}/{name} is not a dataset of the catalog")
        kind = _text(raw, "kind", key)
        if kind not in _KINDS:
            raise ConfigError(f"{key}.kind", "must be black or red")
        valid_days = raw.get("valid_days", 0)
        if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 0:
            raise ConfigError(f"{key}.valid_days", "must be a non-negative integer")
        lst = ListDef(
            id=str(list_id),
            title=_text(raw, "title", key),
            department=dept,
            dataset=name,
            kind=kind,
            keeper=_text(raw, "keeper", key),
            since_field=_text(raw, "since_field", key),
            until_field=_text(raw, "until_field", key, required=False),
            authority_field=_text(raw, "authority_field", key, required=False),
            basis_field=_text(raw, "basis_field", key, required=False),
            basis=_text(raw, "basis", key, required=False),
            valid_days=valid_days,
            subject_types=ds.subject_types,
        )
        _public_field(ds, lst.since_field, f"{key}.since_field", date=True)
        if lst.until_field:
            _public_field(ds, lst.until_field, f"{key}.until_field", date=True)
        for attr in ("authority_field", "basis_field"):
            if getattr(lst, attr):
                _public_field(ds, getattr(lst, attr), f"{key}.{attr}")
        if not lst.basis_field and not lst.basis:
            raise ConfigError(f"{key}.basis", "name basis_field or basis")
        lists[lst.id] = lst
    raw_measures = doc.get("measures", {})
    if not isinstance(raw_measures, Mapping):
        raise ConfigError("measures", "must be a table")
    by_pair: dict[tuple[str, str], tuple[MeasureDef, ...]] = {}
    seen: set[str] = set()
    for list_id, per_scenario in raw_measures.items():
        if list_id not in lists:
            raise ConfigError(f"measures.{list_id}", "not a list of this file")
        if not isinstance(per_scenario, Mapping):
            raise ConfigError(f"measures.{list_id}", "must be a table of scenarios")
        for scenario, entries in per_scenario.items():
            key = f"measures.{list_id}.{scenario}"
            if scenario not in scenarios:
                raise ConfigError(key, "not a scenario of this file")
            if not isinstance(entries, list) or not entries:
                raise ConfigError(key, "must be a non-empty array of tables")
            out: list[MeasureDef] = []
            for i, m in enumerate(entries):
                mkey = f"{key}[{i}]"
                if not isinstance(m, Mapping):
                    raise ConfigError(mkey, "must be a table")
                extra = set(m) - _MEASURE_KEYS
                if extra:
                    raise ConfigError(f"{mkey}.{sorted(extra)[0]}", "unknown key")
                binding = m.get("binding")
                if not isinstance(binding, bool):
                    raise ConfigError(f"{mkey}.binding", "must be true or false")
                mid = _text(m, "id", mkey)
                if mid in seen:
                    raise ConfigError(f"{mkey}.id", f"{mid!r} used twice")
                seen.add(mid)
                out.append(
                    MeasureDef(mid, _text(m, "text", mkey), _text(m, "legal_source", mkey), binding)
                )
            by_pair[(str(list_id), str(scenario))] = tuple(out)
    label = f"{version}-{digest}" if digest else version
    return MeasuresCatalog(label, scenarios, lists, by_pair)


class MeasuresSource:
    """The measures catalog in force: the active policy version's ``measures.toml`` when
    it carries one (so the measures are versioned, approved and activated with the
    policy), else the shipped file; parsed once per text and catalog.

    ``files`` returns the active version's files (None without a policy store);
    ``catalog`` the catalog in force. Calling it raises ConfigError if the text does not
    load against the catalog (a version that carries a bad file is refused at draft)."""

    def __init__(
        self,
        files: Callable[[], Mapping[str, str] | None],
        catalog: Callable[[], Catalog],
        default: Path | None = None,
    ) -> None:
        self._files = files
        self._catalog = catalog
        self._default = default
        self._default_text: str | None = None
        self._cached: tuple[str, str, MeasuresCatalog] | None = None

    def __call__(self) -> MeasuresCatalog:
        """The :class:`MeasuresCatalog` in force now."""
        files = self._files()
        text = files.get(MEASURES_FILE) if files is not None else None
        if text is None:
            if self._default_text is None:
                path = self._default or default_measures_path()
                self._default_text = read_file(path, "measures").decode("utf-8")
            text = self._default_text
        catalog = self._catalog()
        cached = self._cached
        if cached is not None and cached[0] == text and cached[1] == catalog.digest:
            return cached[2]
        parsed = parse_measures_text(text, catalog=catalog)
        self._cached = (text, catalog.digest, parsed)
        return parsed
