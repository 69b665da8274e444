"""Opening the live stores (policy versions, controls, objections) on PostgreSQL for one gateway
process, with their listeners: the wiring :func:`gateway.runtime.assembly.build_gateway`
uses.

    shared = open_shared_stores(config)          # checks each schema once; opens nothing else yet
    versions = shared.open_versions()            # PgVersionStore, or use SQLite when None
    controls = shared.open_controls(seed)
    await shared.start_listening(loop, policy_admin)
    ...
    shared.close()

One pool per store and one dedicated listening connection per database (two stores on
one database share it). A serving process never migrates: a database whose schema is not
this build's is refused with what to run (``credit-gateway db migrate``). Each database's
schema is checked once, by :func:`open_shared_stores` before anything is opened; the
stores' pools then open without checking it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.runtime.config import Config
from gateway.stores.postgres.connect import check_current, open_store_pool
from gateway.stores.postgres.controls import PgControlsStore
from gateway.stores.postgres.notify import LiveListener
from gateway.stores.postgres.objections import PgObjectionStore
from gateway.stores.postgres.policy_versions import PgVersionStore
from gateway.stores.postgres.url import PgTarget

__all__ = ["PolicyFollower", "SharedStores", "open_shared_stores"]

log = logging.getLogger(__name__)
#: How long a policy follow may take on the listener's thread (load and warm a version).
_FOLLOW_TIMEOUT_S = 120.0


class PolicyFollower(Protocol):
    """What the listener needs of the policy workflow
    (:class:`~gateway.policyadmin.admin.PolicyAdministrator`)."""

    def follow(self) -> Coroutine[Any, Any, bool]:
        """Install the store's active version if it is not the one served."""
        ...


@dataclass
class SharedStores:
    """Where this process's policy versions and controls live on PostgreSQL (None: on
    SQLite), the listeners, and what to close."""

    config: Config
    policy: PgTarget | None = None
    controls: PgTarget | None = None
    #: Where the objection store is shared (its marks followed by the listener), or None.
    objections: PgTarget | None = None
    #: One listener per database URL.
    by_url: dict[str, LiveListener] = field(default_factory=dict)
    _closables: list[Any] = field(default_factory=list)

    @property
    def listeners(self) -> tuple[LiveListener, ...]:
        """The listeners the gateway watches (empty: nothing on PostgreSQL)."""
        return tuple(self.by_url.values())

    def _listener(self, target: PgTarget) -> LiveListener:
        if target.url not in self.by_url:
            storage = self.config.storage
            self.by_url[target.url] = LiveListener(
                target,
                stale_after_s=storage.stale_after_s,
                poll_interval_s=storage.poll_interval_s,
            )
        return self.by_url[target.url]

    def _pool(self, target: PgTarget, store: str) -> Any:
        # open_shared_stores checked each database's schema once: not again per pool.
        return open_store_pool(
            target,
            store,
            max_size=self.config.storage.pool_max,
            timeout_s=float(self.config.storage.connect_timeout_s),
            schema_checked=True,
        )

    def open_versions(self) -> PgVersionStore:
        """The policy version store on PostgreSQL. Raises ConfigError."""
        assert self.policy is not None
        self._listener(self.policy)
        store = PgVersionStore(self._pool(self.policy, "policy"))
        self._closables.append(store)
        return store

    def open_controls(self, seed: Iterable[str]) -> PgControlsStore:
        """The live controls on PostgreSQL, seeded with ``seed`` revoked consent ids,
        followed by this process's listener. Raises ConfigError, ControlsStoreError."""
        assert self.controls is not None
        store = PgControlsStore(self._pool(self.controls, "controls"), seed_revoked_consents=seed)
        self._closables.append(store)
        listener = self._listener(self.controls)
        listener.subscribe("controls", store.refresh)
        store.follow(listener)
        return store

    def open_objections(self) -> PgObjectionStore:
        """The objection store on PostgreSQL, its marks followed by this process's listener
        (a filing on any host marks this host's answers within the freshness bound; a
        stale listener refuses them). Raises ConfigError, ObjectionStoreError."""
        assert self.objections is not None
        store = PgObjectionStore(self._pool(self.objections, "objections"), target=self.objections)
        self._closables.append(store)
        listener = self._listener(self.objections)
        listener.subscribe("objections", store.refresh)
        store.follow(listener)
        return store

    async def start_listening(
        self, loop: asyncio.AbstractEventLoop, admin: PolicyFollower | None
    ) -> None:
        """Start every listener; a policy activation elsewhere makes ``admin`` follow it
        (run on ``loop``, awaited by the listener's thread). Waits up to the freshness
        bound for the first complete re-read; a process that gets none serves
        NOT_SERVING until it does (it keeps trying)."""
        if admin is not None and self.policy is not None:

            def follow(version: int) -> None:
                future = asyncio.run_coroutine_threadsafe(admin.follow(), loop)
                future.result(timeout=_FOLLOW_TIMEOUT_S)

            self._listener(self.policy).subscribe("policy", follow)
        for listener in self.by_url.values():
            listener.start()
        for listener in self.by_url.values():
            if not await asyncio.to_thread(listener.wait_fresh, listener.stale_after_s):
                log.warning("live listener not in sync at start-up; refusing queries until it is")

    def close(self) -> None:
        """Stop the listeners and close the stores opened here: for a start-up that
        failed (once serving, the gateway closes what it holds)."""
        for listener in self.by_url.values():
            listener.close()
        for store in reversed(self._closables):
            store.close()
        self._closables.clear()


def open_shared_stores(config: Config) -> SharedStores:
    """Which live stores ``config`` puts on PostgreSQL, each database's schema checked.
    Blocking: start-up only.

    Raises:
        ConfigError: a database cannot be reached, or its schema is not this build's
            (``storage``: says to run ``credit-gateway db migrate``).
    """
    storage = config.storage
    wants_policy = config.policy is not None
    wants_controls = config.controls is not None or config.policy is not None
    shared = SharedStores(
        config,
        policy=storage.target_for("policy") if wants_policy else None,
        controls=storage.target_for("controls") if wants_controls else None,
        objections=(
            storage.target_for("objections", application_name="credit-gateway objections")
            if config.objections is not None
            else None
        ),
    )
    named = {"policy": shared.policy, "controls": shared.controls, "objections": shared.objections}
    by_url: dict[str, tuple[PgTarget, list[str]]] = {}
    for store, target in named.items():
        if target is not None:
            by_url.setdefault(target.url, (target, []))[1].append(store)
    for target, stores in by_url.values():
        check_current(target, ", ".join(stores))
    return shared
