"""An officer's free text (a draft, approve, activate or rollback reason, a file
name, a development-mode officer id) never puts an identifier in the audit log
or the policy store: the call is refused naming the field, and the refusal is
recorded with the text's keyed pseudonym only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gateway.audit import Ed25519Signer, generate_key
from gateway.audit.auditor import QueryAuditor
from gateway.audit.log import AuditLog
from gateway.audit.records import decode_record
from gateway.domain.catalog import load_catalog
from gateway.errors import InvalidArgumentError
from gateway.pipeline.freetext import text_pseudonym
from gateway.policyadmin.admin import PolicyAdministrator, Serving
from gateway.policyadmin.loading import DeciderRecipe
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore
from tests.unit.privacy_kit import hidden, leaks

from .conftest import wider

KEY = b"k" * 32
ISSUE_ID = "11010519491231002X"


class Admin:
    """A real PolicyAdministrator on a real store, auditing onto a real log."""

    def __init__(self, tmp: Path, files: dict[str, str], recipe: DeciderRecipe) -> None:
        self.loop = asyncio.new_event_loop()
        skey, _ = generate_key("credit-gateway.test/audit")
        signer = Ed25519Signer.from_key_string(skey)
        self.log = self.run(AuditLog.open(tmp / "audit.sqlite", signer))
        self.store_path = tmp / "versions.sqlite"
        self.admin = PolicyAdministrator(
            SQLiteVersionStore(self.store_path),
            recipe,
            serving=Serving(load_catalog(), files["catalog.toml"], files["agencies.toml"]),
            audit=QueryAuditor(self.log, KEY, gateway_origin=self.log.origin),
            poll_interval_s=0,
        )
        self.admin.initial_decider(files)
        self.draft = self.run(
            self.admin.draft("officer_a", {"policy.csv": wider(files)["policy.csv"]}, "wider")
        ).version.number

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def leaves(self, start: int) -> list[bytes]:
        out = []
        for i in range(start, self.log.size):
            leaf = self.run(self.log.read_leaf(i))
            assert leaf is not None
            out.append(leaf)
        return out

    def close(self) -> None:
        self.run(self.admin.close())
        self.run(self.log.close())
        self.loop.close()


@pytest.fixture
def admin(tmp_path: Path, files: dict[str, str], recipe: DeciderRecipe) -> Iterator[Admin]:
    a = Admin(tmp_path, files, recipe)
    yield a
    a.close()


def test_a_draft_reason_holding_an_identifier_is_refused_and_recorded_as_a_pseudonym(
    admin: Admin,
) -> None:
    start = admin.log.size
    versions = len(admin.admin.store.versions())
    with pytest.raises(InvalidArgumentError) as exc:
        admin.run(admin.admin.draft("officer_a", {}, f"per complaint of {ISSUE_ID}"))
    assert exc.value.field == "reason" and ISSUE_ID not in exc.value.message
    assert len(admin.admin.store.versions()) == versions  # nothing stored for good
    (leaf,) = admin.leaves(start)
    record = decode_record(leaf)
    assert record["action"] == "draft" and record["outcome"] == "refused"
    assert record["reason"] == text_pseudonym(KEY, f"per complaint of {ISSUE_ID}")
    assert not leaks(ISSUE_ID, leaf)


def test_an_ordinary_reason_is_recorded_as_written(admin: Admin) -> None:
    start = admin.log.size
    admin.run(admin.admin.approve("officer_b", admin.draft, "reviewed, ticket 4711"))
    records = [decode_record(leaf) for leaf in admin.leaves(start)]
    assert [r["reason"] for r in records] == ["reviewed, ticket 4711"]
    assert records[0]["officer"] == "officer_b"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(secret=hidden())
def test_no_identifier_in_an_officers_text_reaches_the_record(
    admin: Admin, secret: tuple[str, str]
) -> None:
    identifier, text = secret
    start = admin.log.size
    calls = {
        "draft": lambda: admin.admin.draft("officer_a", {}, text),
        "draft files": lambda: admin.admin.draft(
            "officer_a", {f"tests/{text}.toml": "x"}, "new test"
        ),
        "approve": lambda: admin.admin.approve("officer_b", admin.draft, text),
        "activate": lambda: admin.admin.activate("officer_b", admin.draft, text),
        "rollback": lambda: admin.admin.activate("officer_b", 1, text, rollback=True),
    }
    for name, call in calls.items():
        # Refused before anything else, naming the field, not repeating the text.
        with pytest.raises(InvalidArgumentError) as exc:
            admin.run(call())
        assert exc.value.field == ("files" if name == "draft files" else "reason")
        assert not leaks(identifier, f'"{exc.value.message}"'), name
    # A development-mode officer id, named by a header, is free text too.
    admin.run(admin.admin.record_refusal("validate", text, InvalidArgumentError("x", "y")))
    leaves = admin.leaves(start)
    assert len(leaves) == len(calls) + 1  # every refusal is on the record
    for leaf in leaves:
        assert not leaks(identifier, leaf)
    reasons = [decode_record(leaf).get("reason") for leaf in leaves]
    assert reasons.count(text_pseudonym(KEY, text)) == 4
