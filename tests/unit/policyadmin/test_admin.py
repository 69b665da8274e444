"""The workflow without gRPC: several gateway processes sharing one store follow an
activation; a version that does not load leaves the served one in place."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from gateway.domain.catalog import load_catalog
from gateway.pipeline.decision import Decider
from gateway.policyadmin.admin import PolicyAdministrator, Serving
from gateway.policyadmin.errors import PolicyWorkflowError
from gateway.policyadmin.loading import DeciderRecipe, version_number
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore

from .conftest import wider


class Target:
    def __init__(self) -> None:
        self.installed: list[str] = []

    def install(self, decider: Decider) -> None:
        self.installed.append(str(getattr(decider, "version", "")))


def gateway(path: Path, files: dict[str, str], recipe: DeciderRecipe) -> PolicyAdministrator:
    serving = Serving(load_catalog(), files["catalog.toml"], files["agencies.toml"])
    return PolicyAdministrator(SQLiteVersionStore(path), recipe, serving=serving, poll_interval_s=0)


async def test_a_second_process_follows_an_activation(
    tmp_path: Path, files: dict[str, str], recipe: DeciderRecipe
) -> None:
    path = tmp_path / "versions.sqlite"
    one, two = gateway(path, files, recipe), gateway(path, files, recipe)
    t1, t2 = Target(), Target()
    try:
        first = one.initial_decider(files)
        second = two.initial_decider(files)  # the store is seeded once, not twice
        assert first.version == second.version and version_number(first.version) == 1
        assert len(one.store.versions()) == 1
        await one.start(t1.install, meter=None)
        await two.start(t2.install, meter=None)
        drafted = await one.draft("officer_a", {"policy.csv": wider(files)["policy.csv"]}, "wider")
        number = drafted.version.number
        await two.approve("officer_b", number, "reviewed")
        _, previous, label = await one.activate("officer_a", number, "go")
        assert previous == 1 and t1.installed == [label]
        assert await two.follow() and t2.installed == [label]
        assert not await two.follow()  # nothing new
    finally:
        await one.close()
        await two.close()


async def test_a_version_that_does_not_load_is_not_followed(
    tmp_path: Path, files: dict[str, str], recipe: DeciderRecipe
) -> None:
    path = tmp_path / "versions.sqlite"
    admin = gateway(path, files, recipe)
    target = Target()
    try:
        admin.initial_decider(files)
        await admin.start(target.install, meter=None)
        bad = {
            "policy.csv": files["policy.csv"] + "p, bank, nosuch/*, public, lending, paid, allow\n"
        }
        drafted = await admin.draft("officer_a", bad, "broken")
        number = drafted.version.number
        await admin.approve("officer_b", number, "missed it")
        with pytest.raises(PolicyWorkflowError) as refused:
            await admin.activate("officer_a", number, "go")
        assert refused.value.reason == "VALIDATION_FAILED"
        # Another process bypassing the checks (an older release, a hand-edit) activates it:
        # this one logs and keeps serving version 1.
        admin.store.activate(number, "officer_a", "forced")
        assert not await admin.follow()
        assert admin.installed == 1 and target.installed == []
    finally:
        await admin.close()


async def test_one_officer_may_roll_back_only_the_last_change(
    tmp_path: Path, files: dict[str, str], recipe: DeciderRecipe
) -> None:
    admin = gateway(tmp_path / "versions.sqlite", files, recipe)
    target = Target()
    try:
        admin.initial_decider(files)
        await admin.start(target.install, meter=None)
        numbers = []
        for reason, changed in (("wider", wider(files)), ("wider again", wider(wider(files)))):
            drafted = await admin.draft("officer_a", {"policy.csv": changed["policy.csv"]}, reason)
            numbers.append(drafted.version.number)
            await admin.approve("officer_b", drafted.version.number, "reviewed")
            await admin.activate("officer_a", drafted.version.number, "go")
        two, three = numbers
        # Version 1 was active two changes ago: going that far back takes four eyes again.
        with pytest.raises(PolicyWorkflowError) as exc:
            await admin.activate("officer_b", 1, "emergency", rollback=True)
        assert exc.value.reason == "NOT_PREVIOUS_VERSION"
        _, previous, _ = await admin.activate("officer_b", two, "emergency", rollback=True)
        assert previous == three
    finally:
        await admin.close()


async def test_no_audit_record_no_approval(
    tmp_path: Path, files: dict[str, str], recipe: DeciderRecipe
) -> None:
    """Four eyes are only worth what the record shows: an approval that cannot be
    recorded is not stored either."""
    from gateway.audit import Ed25519Signer, generate_key, write_key_files
    from gateway.audit.auditor import QueryAuditor
    from gateway.audit.log import AuditLog
    from gateway.audit.store import MemoryStore
    from gateway.errors import AuditUnavailableError

    skey, vkey = generate_key("credit-gateway.test/audit")
    write_key_files(skey, vkey, tmp_path / "log.key", tmp_path / "log.vkey")
    memory = MemoryStore()
    log = await AuditLog.open(None, Ed25519Signer.from_file(tmp_path / "log.key"), store=memory)
    serving = Serving(load_catalog(), files["catalog.toml"], files["agencies.toml"])
    admin = PolicyAdministrator(
        SQLiteVersionStore(tmp_path / "versions.sqlite"),
        recipe,
        serving=serving,
        audit=QueryAuditor(log, b"k" * 32, gateway_origin=log.origin),
        poll_interval_s=0,
    )
    try:
        admin.initial_decider(files)
        drafted = await admin.draft("officer_a", {"policy.csv": wider(files)["policy.csv"]}, "x")
        memory.fail_writes = True
        with pytest.raises(AuditUnavailableError):
            await admin.approve("officer_b", drafted.version.number, "reviewed")
        assert admin.store.approval(drafted.version.number) is None
    finally:
        await admin.close()
        with contextlib.suppress(AuditUnavailableError):
            await log.close()
