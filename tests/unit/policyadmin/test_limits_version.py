"""limits.toml in a policy version: carried, validated naming the key, loaded, and switched
hot by an activation in every process following the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.catalog import load_catalog
from gateway.errors import InvalidArgumentError, RateLimitedError
from gateway.pipeline.decision import Decider
from gateway.pipeline.limits import UNLIMITED, RateLimiter
from gateway.policyadmin.admin import PolicyAdministrator, Serving
from gateway.policyadmin.errors import PolicyWorkflowError
from gateway.policyadmin.loading import DeciderRecipe, validate_files
from gateway.policyadmin.store import check_files
from gateway.stores.sqlite.policy_versions import SQLiteVersionStore

from .conftest import loaded

STRICT = "[default]\nrate_per_s = 0.001\nburst = 1\n"
GENEROUS = "[default]\nrate_per_s = 1000\nburst = 100\n"


def test_the_shipped_version_carries_its_limits(
    files: dict[str, str], recipe: DeciderRecipe
) -> None:
    assert "limits.toml" in files
    version = loaded(1, files, recipe)
    assert version.limits.of("bank").burst == 500
    assert version.limits.of("bank").ceiling("lending") == 200_000


def test_a_version_without_limits_loads_unlimited(
    files: dict[str, str], recipe: DeciderRecipe
) -> None:
    old = {k: v for k, v in files.items() if k != "limits.toml"}
    check_files(old)  # versions drafted before limits.toml existed stay valid
    assert loaded(1, old, recipe).limits is UNLIMITED


def test_unknown_files_are_still_refused(files: dict[str, str]) -> None:
    with pytest.raises(InvalidArgumentError, match="limits.toml"):
        check_files({**files, "limit.toml": ""})


@pytest.mark.parametrize(
    ("limits", "where"),
    [
        (GENEROUS + "[agencies.bank]\nburst = 2.5\n", "limits.toml:agencies.bank.burst"),
        (GENEROUS + "[agencies.nobody]\nburst = 2\n", "limits.toml:agencies.nobody"),
        (GENEROUS + "[default.daily]\nharvest = 2\n", "limits.toml:default.daily.harvest"),
        ("[default\n", "limits.toml"),
    ],
)
def test_validate_refuses_bad_limits_naming_the_key(
    files: dict[str, str], recipe: DeciderRecipe, limits: str, where: str
) -> None:
    [problem] = validate_files({**files, "limits.toml": limits}, purposes=recipe.purposes)
    assert problem.startswith(where), problem


class Target:
    def install(self, decider: Decider) -> None:
        pass


def admin(path: Path, files: dict[str, str], recipe: DeciderRecipe) -> PolicyAdministrator:
    serving = Serving(load_catalog(), files["catalog.toml"], files["agencies.toml"])
    return PolicyAdministrator(
        SQLiteVersionStore(path),
        recipe,
        serving=serving,
        poll_interval_s=0,
    )


async def test_activation_switches_limits_in_every_process(
    tmp_path: Path, files: dict[str, str], recipe: DeciderRecipe
) -> None:
    path = tmp_path / "versions.sqlite"
    seed = {**files, "limits.toml": STRICT}
    one, two = admin(path, files, recipe), admin(path, files, recipe)
    l1, l2 = RateLimiter(), RateLimiter()
    one.limiter, two.limiter = l1, l2
    try:
        one.initial_decider(seed)
        two.initial_decider(seed)
        assert one.current is not None
        l1.configure(one.current.limits)  # as build_gateway does at start-up
        l1.admit("bank", "lending")
        with pytest.raises(RateLimitedError):
            l1.admit("bank", "lending")
        await one.start(Target().install, meter=None)
        await two.start(Target().install, meter=None)
        # A draft of the policy alone carries the active limits along.
        drafted = await one.draft("officer_a", {"policy.csv": files["policy.csv"] + "\n"}, "x")
        assert one.store.version(drafted.version.number).files["limits.toml"] == STRICT
        raised = await one.draft("officer_a", {"limits.toml": GENEROUS}, "raise the limits")
        number = raised.version.number
        await two.approve("officer_b", number, "reviewed")
        await one.activate("officer_a", number, "go")
        assert l1.limits.of("bank").burst == 100
        # The raised burst is there at once: 99 extra tokens.
        for _ in range(99):
            l1.admit("bank", "lending")
        assert await two.follow()
        assert l2.limits.of("bank").burst == 100
        # A version whose limits do not load is refused; the raised limits stay.
        bad = await one.draft("officer_a", {"limits.toml": "[default]\nburst = 1\n"}, "bad")
        await two.approve("officer_b", bad.version.number, "missed it")
        with pytest.raises(PolicyWorkflowError):
            await one.activate("officer_a", bad.version.number, "go")
        assert l1.limits.of("bank").burst == 100
    finally:
        await one.close()
        await two.close()
