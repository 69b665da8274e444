"""Replay reproduces the original decision's inputs: replaying the version a query was
decided under reports nothing, refused self-queries included."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gateway.domain import names
from gateway.domain.catalog import load_catalog
from gateway.pipeline.decision import Decision, QueryFacts
from gateway.policy import SELF_QUERY_PURPOSE
from gateway.policyadmin.analysis import replay_records
from gateway.policyadmin.loading import DeciderRecipe, version_label
from protos.credit.v1 import query_pb2

from .conftest import loaded

PERSON = "360426199101010071"


def _record(agency: str, purpose: str, decision: Decision, **extra: Any) -> dict[str, Any]:
    """The parts of an audit record replay reads, as gateway.audit.auditor writes them."""
    departments = {
        dept: {
            "datasets": list(dd.allowed),
            "withheld": [
                {"dataset": w.dataset, "field": w.field, "reason": names.REASON[w.reason]}
                for w in dd.withheld
            ],
        }
        for dept, dd in decision.departments.items()
    }
    return {
        "kind": "query",
        "outcome": "partial",
        "request_id": "r-1",
        "agency_id": agency,
        "purpose": purpose,
        "mode": "free",
        "subject_type": "person",
        "policy_version": version_label(1, "0" * 16),
        "departments": departments,
        **extra,
    }


@pytest.mark.parametrize("is_self", [False, True], ids=["refused-self-query", "own-records"])
@pytest.mark.parametrize("flagged", [False, True], ids=["inferred", "recorded-flag"])
def test_replay_of_the_deciding_version_reports_no_change(
    files: dict[str, str], recipe: DeciderRecipe, is_self: bool, flagged: bool
) -> None:
    version = loaded(1, files, recipe)
    datasets = tuple(d for d in load_catalog().datasets() if "person" in d.subject_types)
    decision = recipe.build(version).decide(
        QueryFacts(
            agency_id="self_service",
            subject_type="person",
            purpose=SELF_QUERY_PURPOSE,
            mode=query_pb2.QUERY_MODE_FREE,
            datasets=datasets,
            today=dt.date.today(),
            is_self=is_self,
            subject_id=PERSON,
        )
    )
    granted = any(dd.allowed for dd in decision.departments.values())
    assert granted == is_self  # the refused one really was refused, field by field
    extra = {"self_query": is_self} if flagged else {}
    record = _record("self_service", SELF_QUERY_PURPOSE, decision, **extra)
    replayed, flips = replay_records([(7, record)], version, recipe)
    assert replayed == 1
    assert flips == []
