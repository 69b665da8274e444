"""Shared pieces of the policy tests: the catalog, a consent issuer, fact builders."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.registry import Registry, load_registry
from gateway.domain.catalog import Catalog, Dataset, load_catalog
from gateway.pipeline.decision import Decision, QueryFacts
from gateway.policy import PolicyDecider, build_decider
from gateway.policy.consent import issue_consent
from gateway.policy.testing import MatrixIssuer
from protos.credit.v1 import query_pb2

PERSON = "360426199101010071"
OTHER_PERSON = "34052419800101001X"
ENTERPRISE = "91350200MA2YJ1XR9G"
MODES = {"free": query_pb2.QUERY_MODE_FREE, "paid": query_pb2.QUERY_MODE_PAID}
R = query_pb2.WithholdReason


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry()


@pytest.fixture(scope="session")
def issuer() -> MatrixIssuer:
    return MatrixIssuer()


@pytest.fixture
def decider(catalog: Catalog, registry: Registry, issuer: MatrixIssuer) -> PolicyDecider:
    return build_decider(catalog, consent_issuers=[issuer.trusted], registry=registry)


def datasets(catalog: Catalog, *refs: str, subject: str = "person") -> tuple[Dataset, ...]:
    if not refs:
        return tuple(d for d in catalog.datasets() if subject in d.subject_types)
    out = []
    for ref in refs:
        ds = catalog.dataset(*ref.split("/"))
        assert ds is not None, ref
        out.append(ds)
    return tuple(out)


FactsMaker = Callable[..., QueryFacts]


@pytest.fixture
def facts(catalog: Catalog) -> FactsMaker:
    def make(
        agency: str,
        purpose: str,
        *refs: str,
        mode: str = "free",
        subject: str = "person",
        token: str = "",
        is_self: bool = False,
        subject_id: str | None = None,
    ) -> QueryFacts:
        return QueryFacts(
            agency_id=agency,
            subject_type=subject,
            purpose=purpose,
            mode=MODES[mode],
            datasets=datasets(catalog, *refs, subject=subject),
            today=dt.date(2026, 11, 1),
            is_self=is_self,
            consent_token=token,
            subject_id=subject_id or (PERSON if subject == "person" else ENTERPRISE),
        )

    return make


def consent(
    issuer: MatrixIssuer,
    *,
    grantee: str = "bank",
    purpose: str = "lending",
    scope: Sequence[str] = ("tier:personal_privacy",),
    subject_type: str = "person",
    subject_id: str = PERSON,
    **kw: Any,
) -> str:
    return issue_consent(
        issuer.key,
        issuer.kid,
        issuer=issuer.issuer,
        subject_type=subject_type,
        subject_id=subject_id,
        grantee=grantee,
        purpose=purpose,
        scope=scope,
        **kw,
    )


def outcome(decision: Decision) -> dict[str, tuple[int, str] | str]:
    """``dept/dataset/field`` -> "visible" or (reason, detail)."""
    out: dict[str, tuple[int, str] | str] = {}
    for dept, dd in decision.departments.items():
        for ds, fields in dd.allowed.items():
            for f in fields:
                out[f"{dept}/{ds}/{f}"] = "visible"
        for w in dd.withheld:
            key = f"{dept}/{w.dataset}/{w.field}"
            assert key not in out, f"{key} both allowed and withheld"
            out[key] = (w.reason, w.detail)
    return out


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
