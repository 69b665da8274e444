"""Ids and references that carry a UUID are never refused for the check-valid
digit pattern about one random hex id in thirty holds: a consent's own id was
refused "must be a consent id" at random (a flaky CI run), and so were finance
references and officers' reasons naming a ticket UUID."""

from __future__ import annotations

import functools
import uuid

import pytest

from gateway.api.controls import _cid
from gateway.errors import InvalidArgumentError
from gateway.pipeline.freetext import scan
from gateway.policyadmin.admin import _screen

ISSUE_ID = "11010519491231002X"


@functools.cache
def _hex_holding() -> list[str]:
    """UUIDs whose hex holds an identifier-shaped, check-valid run (what the
    strict scan flags), deterministic."""
    ids = (str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(20_000))
    found: list[str] = []
    for u in ids:
        if scan(u):
            found.append(u)
            if len(found) == 50:
                break
    return found


def test_there_are_such_uuids() -> None:
    assert len(_hex_holding()) == 50


@pytest.mark.parametrize("consent_id", _hex_holding())
def test_a_consent_id_that_is_a_uuid_is_accepted(consent_id: str) -> None:
    assert _cid(consent_id) == consent_id


@pytest.mark.parametrize("ticket", _hex_holding()[:10])
def test_an_officers_reason_naming_a_ticket_uuid_is_accepted(ticket: str) -> None:
    _screen("reason", f"ticket {ticket}")


def test_an_identifier_is_still_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        _cid(f"cid-{ISSUE_ID}")
    with pytest.raises(InvalidArgumentError):
        _screen("reason", f"for {ISSUE_ID}")
