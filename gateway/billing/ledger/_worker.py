"""The ledger worker: :class:`AsyncLedger` drives a :class:`LedgerStore` from asyncio.

Every call runs on a dedicated thread, so the event loop never waits for the disk or
the database. A store with a ``batch()`` context (SQLite) gets one thread and group
commit: the calls queued while a transaction ran share the next one and its one fsync;
``BEGIN IMMEDIATE`` serializes writers across processes. A store that names
``workers`` (PostgreSQL: its pool size) gets that many threads, each running one call
per transaction: the server itself shares one WAL flush among concurrent commits,
and a per-process batch would hold many accounts' row locks at once, which across
processes invites deadlocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from gateway.billing.ledger._types import LedgerStore
from gateway.errors import LedgerError

__all__ = ["AsyncLedger"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _resolve(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():  # cancelled by a caller that did not shield
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class AsyncLedger:
    """A :class:`LedgerStore` driven from asyncio: every call runs on a
    dedicated thread, so the event loop never blocks on storage or fsync (one
    thread for a store with ``batch()``; ``store.workers`` threads otherwise).

    Group commit: the thread takes every call queued by the time it is free and
    runs them in one transaction (``store.batch()``), so concurrent
    queries share one fsync instead of paying one each. A call's future is
    resolved only after that commit: nothing is reported before it is durable.

    Calls are shielded: once submitted, an operation completes even if the
    awaiting task is cancelled (a half-known outcome is worse than a late one;
    callers that care, like :meth:`gateway.billing.meter.Meter.reserve`,
    undo the effect themselves).
    """

    #: Most operations committed together.
    MAX_BATCH = 256

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._closed = False
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        batched = getattr(store, "batch", None) is not None
        count = 1 if batched else max(1, int(getattr(store, "workers", 1)))
        self._threads = [
            threading.Thread(target=self._serve, name=f"ledger-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    @classmethod
    async def open(
        cls, source: str | os.PathLike[str] | LedgerStore, *, create: bool = True
    ) -> AsyncLedger:
        """Drive ``source``: a :class:`LedgerStore` already open, or the path of an SQLite
        ledger file, opened (or created, with ``create``) off the event loop. Raises
        LedgerError."""
        if isinstance(source, LedgerStore):
            return cls(source)
        # Imported here: the backend imports this package, never the other way round.
        from gateway.stores.sqlite.ledger import SQLiteLedger

        store = await asyncio.to_thread(SQLiteLedger, source, create=create)
        return cls(store)

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> asyncio.Future[_T]:
        """Queue ``fn`` on the ledger thread; the future is not tied to the caller.
        Raises LedgerError once the ledger is closed."""
        if self._closed:
            raise LedgerError("the ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._queue.put(_Call(functools.partial(fn, *args, **kwargs), future, loop))
        return future

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn`` on the ledger thread and return its result (shielded)."""
        return await asyncio.shield(self.submit(fn, *args, **kwargs))

    def _serve(self) -> None:
        batch_of = getattr(self.store, "batch", None)
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.put(None)  # the other threads stop too
                return
            if batch_of is None:
                self._finish([first], [self._call(first)])
                continue
            calls = [first]
            stop = False
            while len(calls) < self.MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    stop = True
                    break
                calls.append(nxt)
            outcomes: list[tuple[bool, Any]] = []
            try:
                with batch_of() if batch_of is not None else contextlib.nullcontext():
                    for call in calls:
                        try:
                            outcomes.append((True, call.fn()))
                        except BaseException as exc:  # reported to that caller alone
                            outcomes.append((False, exc))
            except BaseException as exc:  # the commit failed: none of them happened
                err = (
                    exc
                    if isinstance(exc, LedgerError)
                    else LedgerError(f"ledger batch failed: {exc}")
                )
                outcomes = [(False, err)] * len(calls)
            self._finish(calls, outcomes)
            if stop:
                return

    @staticmethod
    def _call(call: _Call) -> tuple[bool, Any]:
        try:
            return True, call.fn()
        except BaseException as exc:  # reported to that caller alone
            return False, exc

    @staticmethod
    def _finish(calls: list[_Call], outcomes: list[tuple[bool, Any]]) -> None:
        # One hand-off per event loop and batch, not one per call: each
        # call_soon_threadsafe writes to the loop's self-pipe and may wake it.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        by_loop = {}
        for call, (ok, value) in zip(calls, outcomes, strict=True):
            by_loop.setdefault(call.loop, []).append((call.future, ok, value))
        for loop, resolved in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, resolved)
            except RuntimeError:  # that caller's event loop is gone; serve the others
                continue

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun; :meth:`submit` then raises LedgerError."""
        return self._closed

    async def close(self) -> None:
        """Finish queued work, close the store and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        # Everything queued before this is committed first; then the thread ends
        # and the store closes outside any batch.
        self._queue.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        await asyncio.to_thread(self.store.close)
