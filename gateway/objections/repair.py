"""The credit-repair rule: which datasets are public credit information, how severe a record
is, and when its minimum publication period has run (``policies/repair.toml``).

    policy = load_repair_policy()                      # the packaged file
    rule = policy.rule("market", "administrative_penalties")
    severity = rule.severity_of({"penalty": "罚款", "fine_fen": 5_000_000})   # "general"
    policy.allowed_from(severity, dt.date(2026, 1, 31))                      # 2026-04-30

Sources: NDRC credit repair measures (信用修复管理办法, in force 2026-04-01) and sector rules:
minor penalties published at most 3 months (no minimum), general ones 3 months to 1 year,
serious ones 1 to 3 years (DOMAIN.md "Objections and credit repair"). Months are calendar
months; a day that the target month lacks becomes its last day (31 January + 1 month is
28 or 29 February), which never shortens a period.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.domain.catalog import Catalog
from gateway.domain.files import load_toml
from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_REPAIR_PATH",
    "RepairPolicy",
    "RepairRule",
    "Severity",
    "add_months",
    "load_repair_policy",
    "parse_repair_policy",
]

#: The packaged policy file.
DEFAULT_REPAIR_PATH = Path(__file__).resolve().parents[2] / "policies" / "repair.toml"


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus ``months`` calendar months, clamped to the target month's last day."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class Severity:
    """One severity: its minimum and maximum publication periods in months."""

    name: str
    title: str
    min_months: int
    max_months: int


@dataclass(frozen=True, slots=True)
class _Test:
    field: str
    severity: str
    equals: str | None = None
    at_least: int | None = None

    def matches(self, value: object) -> bool:
        if self.equals is not None:
            return value == self.equals
        return (
            self.at_least is not None
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value >= self.at_least
        )


@dataclass(frozen=True, slots=True)
class RepairRule:
    """How one dataset's records are judged: the publication-day field and the severity."""

    department: str
    dataset: str
    published_on: str
    default: str
    tests: tuple[_Test, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the rule reads (asked of the department, never shown to anyone)."""
        return tuple(dict.fromkeys([self.published_on, *(t.field for t in self.tests)]))

    def severity_of(self, fields: Mapping[str, object]) -> str:
        """The first matching test's severity, else the default."""
        for test in self.tests:
            if test.matches(fields.get(test.field)):
                return test.severity
        return self.default


@dataclass(frozen=True, slots=True)
class RepairPolicy:
    """The parsed ``repair.toml``."""

    severities: Mapping[str, Severity]
    rules: Mapping[tuple[str, str], RepairRule]

    def rule(self, department: str, dataset: str) -> RepairRule | None:
        """The rule of a public-credit dataset; None: the dataset cannot be repaired."""
        return self.rules.get((department, dataset))

    def allowed_from(self, severity: str, published_on: dt.date) -> dt.date:
        """The first day a repair may be applied for: publication + the minimum period."""
        return add_months(published_on, self.severities[severity].min_months)

    def check_catalog(self, catalog: Catalog) -> None:
        """Every rule of a dataset the catalog has names fields of it. A rule for a dataset
        the catalog lacks is kept: a catalog without that department (or a policy version
        adding it later) simply leaves it unused. Raises ConfigError."""
        for (dept, ds), rule in self.rules.items():
            found = catalog.dataset(dept, ds)
            key = f'datasets."{dept}/{ds}"'
            if found is None:
                continue
            for name in rule.fields:
                if name not in found.fields:
                    raise ConfigError(key, f"field {name!r} is not in the catalog's dataset")


def parse_repair_policy(doc: Mapping[str, Any]) -> RepairPolicy:
    """Build a :class:`RepairPolicy` from parsed TOML. Raises ConfigError naming the key."""
    unknown = sorted(set(doc) - {"severities", "datasets"})
    if unknown:
        raise ConfigError(unknown[0], "unknown key")
    raw_sev = doc.get("severities")
    if not isinstance(raw_sev, Mapping) or not raw_sev:
        raise ConfigError("severities", "missing or empty")
    severities: dict[str, Severity] = {}
    for name, raw in raw_sev.items():
        key = f"severities.{name}"
        if not isinstance(raw, Mapping):
            raise ConfigError(key, "must be a table")
        lo, hi = raw.get("min_months"), raw.get("max_months")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (lo, hi)):
            raise ConfigError(key, "min_months and max_months must be whole months, >= 0")
        assert isinstance(lo, int) and isinstance(hi, int)
        if lo > hi:
            raise ConfigError(key, "min_months exceeds max_months")
        severities[name] = Severity(name, str(raw.get("title", name)), lo, hi)
    raw_ds = doc.get("datasets", {})
    if not isinstance(raw_ds, Mapping):
        raise ConfigError("datasets", "must be a table")
    rules: dict[tuple[str, str], RepairRule] = {}
    for ref, raw in raw_ds.items():
        key = f'datasets."{ref}"'
        dept, sep, ds = str(ref).partition("/")
        if not sep or not dept or not ds or not isinstance(raw, Mapping):
            raise ConfigError(key, 'must be a table named "department/dataset"')
        published_on, default = raw.get("published_on"), raw.get("default")
        if not isinstance(published_on, str) or not published_on:
            raise ConfigError(f"{key}.published_on", "missing: the publication-day field")
        if default not in severities:
            raise ConfigError(f"{key}.default", f"must be one of {', '.join(severities)}")
        tests = []
        for i, t in enumerate(raw.get("rules", [])):
            tkey = f"{key}.rules[{i}]"
            if not isinstance(t, Mapping) or t.get("severity") not in severities:
                raise ConfigError(tkey, "needs field, severity and equals or at_least")
            fname, equals, at_least = t.get("field"), t.get("equals"), t.get("at_least")
            if not isinstance(fname, str) or (equals is None) == (at_least is None):
                raise ConfigError(tkey, "needs a field and exactly one of equals, at_least")
            if equals is not None and not isinstance(equals, str):
                raise ConfigError(f"{tkey}.equals", "must be text")
            if at_least is not None and (
                not isinstance(at_least, int) or isinstance(at_least, bool)
            ):
                raise ConfigError(f"{tkey}.at_least", "must be an integer")
            tests.append(_Test(fname, str(t["severity"]), equals, at_least))
        rules[(dept, ds)] = RepairRule(dept, ds, published_on, str(default), tuple(tests))
    return RepairPolicy(severities, rules)


def load_repair_policy(path: Path | None = None) -> RepairPolicy:
    """Read ``path`` (default: the packaged ``policies/repair.toml``). Raises ConfigError."""
    path = path or DEFAULT_REPAIR_PATH
    return parse_repair_policy(load_toml(path, "repair"))
