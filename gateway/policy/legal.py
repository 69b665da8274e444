"""Access by law: the published legal bases a state organ may cite instead of consent.

Decree 631 Art. 18 requires the subject's consent "except where the law provides otherwise",
and Art. 28 lets state organs query by law (see ``policies/legal_bases.toml`` for the list and
its rules). A query cites a code in ``QueryRequest.legal_basis``;
:meth:`LegalBases.resolve` checks that this agency may cite it for this purpose and case, and
the decider (:class:`gateway.policy.decider.PolicyDecider`) then grants the consent-bound
fields of the tiers the basis opens as a valid consent would: the Casbin policy must still
grant the field to the agency for the purpose.

>>> bases = load_legal_bases()
>>> basis = bases.resolve("supervision_law_art26", agency_id="ndrc",
...     agency_kind="government_body", purpose="supervision_inspection", case_reference="J-1")
>>> basis.confidential_until(dt.date(2026, 1, 1))
'2027-01-01'
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.catalog import Tier
from gateway.domain.files import load_toml, policies_path
from gateway.errors import ConfigError, InvalidArgumentError, PermissionDeniedError
from gateway.pipeline.freetext import echo

__all__ = [
    "DEFAULT_LEGAL_BASES_PATH",
    "LegalBases",
    "LegalBasis",
    "load_legal_bases",
    "parse_legal_bases",
]

DEFAULT_LEGAL_BASES_PATH = policies_path("legal_bases.toml")
#: A basis code: what the published list may name and a query may cite.
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Tiers a basis may open: never a state secret (it never leaves the department).
_OPENABLE = frozenset(
    {Tier.PUBLIC, Tier.GOVERNMENT_SHARED, Tier.COMMERCIAL_SECRET, Tier.PERSONAL_PRIVACY}
)
_KNOWN_KEYS = frozenset(
    {
        "statute",
        "article",
        "title_en",
        "agency_kinds",
        "tiers",
        "purposes",
        "case_reference_required",
        "confidentiality_days",
        "agencies",
    }
)
#: The longest confidentiality period accepted: ten years, in days.
_MAX_CONFIDENTIAL_DAYS = 3653


@dataclass(frozen=True, slots=True)
class LegalBasis:
    """One published legal basis (see ``policies/legal_bases.toml``)."""

    code: str
    statute: str
    article: str
    title_en: str
    agency_kinds: frozenset[str]
    tiers: frozenset[Tier]
    purposes: frozenset[str]
    case_reference_required: bool
    #: Days after the query during which it is hidden from the subject's own query records.
    confidentiality_days: int = 0
    #: Only these agency ids may cite it (empty: any agency of the kinds).
    agencies: frozenset[str] = frozenset()

    def confidential_until(self, query_date: dt.date) -> str:
        """The day (YYYY-MM-DD, the gateway's calendar: Beijing time) from which a query
        made on ``query_date`` under this basis is shown to the subject; "" when the basis
        keeps nothing confidential."""
        if self.confidentiality_days <= 0:
            return ""
        return (query_date + dt.timedelta(days=self.confidentiality_days)).isoformat()


class LegalBases:
    """The published list, by code. Immutable once loaded."""

    def __init__(self, bases: Mapping[str, LegalBasis]) -> None:
        self._bases = dict(bases)

    def __contains__(self, code: object) -> bool:
        return code in self._bases

    def get(self, code: str) -> LegalBasis | None:
        """The basis ``code``, or None."""
        return self._bases.get(code)

    def codes(self) -> tuple[str, ...]:
        """Every published code, sorted."""
        return tuple(sorted(self._bases))

    def resolve(
        self,
        code: str,
        *,
        agency_id: str,
        agency_kind: str,
        purpose: str,
        case_reference: str,
    ) -> LegalBasis:
        """The basis ``code`` if this agency may cite it for this purpose and case.

        Raises:
            InvalidArgumentError: ``legal_basis`` is not a published code (reason
                ``UNKNOWN_LEGAL_BASIS``), or the basis needs a case reference and the query
                names none (field ``case_reference``, reason ``CASE_REFERENCE_REQUIRED``).
            PermissionDeniedError: the agency's kind (or the agency) may not cite it (reason
                ``LEGAL_BASIS_NOT_CITABLE``), or it does not open the query's purpose (reason
                ``LEGAL_BASIS_PURPOSE``). The message names the basis and the rule.
        """
        basis = self._bases.get(code)
        if basis is None:
            raise InvalidArgumentError(
                "legal_basis",
                f"{echo(code)} is not a published legal basis; see policies/legal_bases.toml",
                reason="UNKNOWN_LEGAL_BASIS",
            )
        if agency_kind not in basis.agency_kinds or (
            basis.agencies and agency_id not in basis.agencies
        ):
            kinds = ", ".join(sorted(basis.agency_kinds))
            raise PermissionDeniedError(
                f"legal basis {code} ({basis.statute} {basis.article}) may be cited only by "
                f"agencies of kind {kinds}"
                + (" named in the published list" if basis.agencies else "")
                + f"; this agency is of kind {agency_kind}",
                reason="LEGAL_BASIS_NOT_CITABLE",
                metadata={"legal_basis": code},
            )
        if purpose not in basis.purposes:
            raise PermissionDeniedError(
                f"legal basis {code} opens only purposes {', '.join(sorted(basis.purposes))}",
                reason="LEGAL_BASIS_PURPOSE",
                metadata={"legal_basis": code},
            )
        if basis.case_reference_required and not case_reference.strip():
            raise InvalidArgumentError(
                "case_reference",
                f"legal basis {code} requires a case (approval) reference",
                reason="CASE_REFERENCE_REQUIRED",
            )
        return basis


def _strings(raw: Mapping[str, object], key: str, where: str) -> frozenset[str]:
    value = raw.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key}", "must be a non-empty list of strings")
    return frozenset(str(v) for v in value)


def _basis(code: str, raw: object, purposes: frozenset[str] | None) -> LegalBasis:
    where = f"legal_bases.{code}"
    if not _CODE.fullmatch(code):
        raise ConfigError(where, "a code is lower-case letters, digits and _, at most 64")
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a table")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown setting")
    texts: dict[str, str] = {}
    for key in ("statute", "article", "title_en"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.{key}", "missing: the citation must be stated")
        texts[key] = value
    tiers: set[Tier] = set()
    for name in _strings(raw, "tiers", where):
        try:
            tier = Tier(name)
        except ValueError:
            raise ConfigError(f"{where}.tiers", f"unknown tier {name!r}") from None
        if tier not in _OPENABLE:
            raise ConfigError(f"{where}.tiers", "a state secret is never opened by any basis")
        tiers.add(tier)
    basis_purposes = _strings(raw, "purposes", where)
    if purposes is not None and not basis_purposes <= purposes:
        bad = sorted(basis_purposes - purposes)[0]
        raise ConfigError(f"{where}.purposes", f"unknown purpose {bad!r}")
    required = raw.get("case_reference_required")
    if not isinstance(required, bool):
        raise ConfigError(f"{where}.case_reference_required", "must be true or false")
    days = raw.get("confidentiality_days", 0)
    if not isinstance(days, int) or isinstance(days, bool) or days < 0:
        raise ConfigError(f"{where}.confidentiality_days", "must be a whole number of days >= 0")
    if days > _MAX_CONFIDENTIAL_DAYS:
        raise ConfigError(f"{where}.confidentiality_days", "at most ten years")
    if days and not required:
        # PIPL Arts. 35/45 as the domain brief reads them: hidden from the subject only with
        # the statute and an approval reference.
        raise ConfigError(
            f"{where}.confidentiality_days",
            "a confidential basis must require a case (approval) reference",
        )
    agencies = _strings(raw, "agencies", where) if "agencies" in raw else frozenset()
    return LegalBasis(
        code=code,
        statute=texts["statute"],
        article=texts["article"],
        title_en=texts["title_en"],
        agency_kinds=_strings(raw, "agency_kinds", where),
        tiers=frozenset(tiers),
        purposes=basis_purposes,
        case_reference_required=required,
        confidentiality_days=days,
        agencies=agencies,
    )


def parse_legal_bases(
    doc: Mapping[str, object], *, purposes: frozenset[str] | None = None
) -> LegalBases:
    """The list from a parsed TOML document (``[bases.<code>]`` tables).

    Raises:
        ConfigError: a table is malformed; the key names the basis and setting.
    """
    table = doc.get("bases", {})
    if not isinstance(table, Mapping):
        raise ConfigError("legal_bases.bases", "must be a table of bases")
    return LegalBases({str(c): _basis(str(c), raw, purposes) for c, raw in table.items()})


def load_legal_bases(
    path: Path | None = None, *, purposes: frozenset[str] | None = None
) -> LegalBases:
    """The published list from ``path`` (default ``policies/legal_bases.toml``); with
    ``purposes``, every purpose a basis names must be one of them.

    Raises:
        ConfigError: the file is missing, not TOML, or malformed.
    """
    return parse_legal_bases(
        load_toml(path or DEFAULT_LEGAL_BASES_PATH, "legal_bases"), purposes=purposes
    )
