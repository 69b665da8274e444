"""Step 2 of the pipeline: turn a ``QueryRequest`` into a checked
:class:`ValidQuery`, or raise :class:`~gateway.errors.InvalidArgumentError`
naming the field."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.domain.catalog import Catalog, Dataset
from gateway.domain.enums import SubjectType
from gateway.domain.identifiers import IdentifierError, validate_resident_id, validate_uscc
from gateway.domain.purposes import Purpose
from gateway.errors import InvalidArgumentError, InvalidIdentifierError
from gateway.pipeline.freetext import echo, joined_identifier, scan
from protos.credit.v1 import common_pb2, query_pb2

__all__ = ["FREE_TEXT_FIELDS", "ValidQuery", "Validator"]

_SUBJECT_TYPES = {
    common_pb2.SUBJECT_TYPE_ENTERPRISE: (SubjectType.ENTERPRISE, validate_uscc),
    common_pb2.SUBJECT_TYPE_PERSON: (SubjectType.PERSON, validate_resident_id),
}
_MODES = frozenset({query_pb2.QUERY_MODE_FREE, query_pb2.QUERY_MODE_PAID})
_MAX_TEXT = 256
#: A legal basis code as published (policies/legal_bases.toml); checked against the list
#: when the query is decided (gateway.policy.legal).
_BASIS_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: The caller's free-text fields. They reach the audit log only through
#: :func:`gateway.pipeline.freetext.recordable`; a request holding an identifier in one
#: is refused here, and the message never repeats the text.
FREE_TEXT_FIELDS = ("case_reference", "officer_id", "represented_party")


@dataclass(frozen=True, slots=True)
class ValidQuery:
    """A request that passed validation (step 2): identifiers checked, datasets known."""

    request_id: str
    subject_type: SubjectType
    subject_id: str
    purpose: str
    mode: int
    datasets: tuple[Dataset, ...]
    #: Every free-text field (:data:`FREE_TEXT_FIELDS`) was screened and holds nothing
    #: identifier-like at all, not even inside a hex token: the audit record may take
    #: them as written without screening them again.
    plain_text: bool = False


class Validator:
    """Checks a ``QueryRequest`` against the catalog and the purposes (step 2)."""

    def __init__(self, catalog: Catalog, purposes: Mapping[str, Purpose]) -> None:
        self._catalog = catalog
        self._purposes = purposes
        # "All datasets" per subject type, computed once.
        self._all: dict[str, tuple[Dataset, ...]] = {
            st: tuple(d for d in catalog.datasets() if st in d.subject_types) for st in SubjectType
        }

    def validate(self, request: query_pb2.QueryRequest) -> ValidQuery:
        """The :class:`ValidQuery` of ``request``.

        Raises:
            InvalidArgumentError: a field is missing or malformed (INVALID_ARGUMENT).
            InvalidIdentifierError: the subject's identifier fails its GB check character.
        """
        try:
            request_id = str(uuid.UUID(request.request_id))
        except ValueError:
            raise InvalidArgumentError("request_id", "must be a UUID") from None
        kind = _SUBJECT_TYPES.get(request.subject.type)
        if kind is None:
            raise InvalidArgumentError("subject.type", "must be ENTERPRISE or PERSON")
        subject_type, check = kind
        try:
            subject_id = check(request.subject.id)
        except IdentifierError as exc:
            raise InvalidIdentifierError(exc.field, exc.problem) from None
        if request.purpose not in self._purposes:
            raise InvalidArgumentError(
                "purpose", f"unknown purpose {echo(request.purpose)}; see policies/purposes.toml"
            )
        if request.mode not in _MODES:
            raise InvalidArgumentError("mode", "must be FREE or PAID")
        if request.legal_basis and not _BASIS_CODE.fullmatch(request.legal_basis):
            # Never echoed: a malformed code is the caller's free text.
            raise InvalidArgumentError(
                "legal_basis",
                "must be a code from the published list (lower-case letters, digits and _)",
                reason="UNKNOWN_LEGAL_BASIS",
            )
        plain = True
        for name in FREE_TEXT_FIELDS:
            text = getattr(request, name)
            if len(text) > _MAX_TEXT:
                raise InvalidArgumentError(name, f"longer than {_MAX_TEXT} characters")
            found = scan(text)
            plain = plain and not found
            if any(not f.in_hex for f in found):  # freetext.holds_identifier
                raise InvalidArgumentError(
                    name,
                    "must not contain a resident identity number or unified social credit "
                    "code, whole or split by spaces or punctuation (the text is not repeated)",
                )
        if joined_identifier([getattr(request, name) for name in FREE_TEXT_FIELDS]):
            raise InvalidArgumentError(
                "+".join(FREE_TEXT_FIELDS),
                "read one after another these fields make a resident identity number or "
                "unified social credit code (the text is not repeated)",
            )
        if not request.datasets:
            datasets = self._all[subject_type]
        else:
            picked: list[Dataset] = []
            seen: set[tuple[str, str]] = set()
            for i, ref in enumerate(request.datasets):
                ds = self._catalog.dataset(ref.department, ref.dataset)
                if ds is None:
                    named = echo(f"{ref.department}/{ref.dataset}", limit=129)
                    raise InvalidArgumentError(f"datasets[{i}]", f"{named} is not in the catalog")
                if subject_type not in ds.subject_types:
                    raise InvalidArgumentError(
                        f"datasets[{i}]",
                        f"{ds.department}/{ds.name} holds no {subject_type} subjects",
                    )
                if (ds.department, ds.name) not in seen:
                    seen.add((ds.department, ds.name))
                    picked.append(ds)
            datasets = tuple(picked)
        return ValidQuery(
            request_id, subject_type, subject_id, request.purpose, request.mode, datasets, plain
        )
