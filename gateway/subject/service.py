"""Keeping the subject index current while the gateway runs.

:class:`SubjectIndexer` owns a :class:`~gateway.subject.index.QueryIndex` and a reader of the
audit log; :meth:`SubjectIndexer.refresh` adds what the log gained since the last call (in a
worker thread, one at a time), :meth:`SubjectIndexer.start` catches up once and then follows
the log about once a second. The servicer calls :meth:`refresh` before each listing, so a
query answered a moment ago is listed.

The first catch-up (a rebuild, for a new index or one of another log: minutes for millions
of records) runs in the background; the gateway serves queries meanwhile, and a listing
waits for it at most ``ready_wait_s`` before it is refused as unavailable (retry later).

**A shared index** (PostgreSQL: every host over one log) is followed in the background by
one elected process only (:meth:`~gateway.subject.index.QueryIndex.follows`); the others
are ready once the shared index is within one batch (:data:`NEAR_ENTRIES`) of the log, and
catch up that tail themselves before a listing, so a caller sees its own latest query on
any host. The index's watermark check makes those concurrent writes safe
(:func:`~gateway.subject.index.sync_index`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.audit.errors import StorageError
from gateway.audit.store import LogReader
from gateway.subject.errors import SubjectStoreError
from gateway.subject.index import QueryIndex, sync_index

__all__ = ["NEAR_ENTRIES", "SubjectIndexer"]

#: How far (log entries) a shared index may lag the log for a process that does not follow
#: it to serve listings (catching the rest up itself): one batch of :func:`sync_index`.
NEAR_ENTRIES = 10_000

log = logging.getLogger(__name__)


class SubjectIndexer:
    """The index and the log it follows (see the module docstring)."""

    def __init__(
        self,
        index: QueryIndex,
        open_log: Callable[[], LogReader],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self.index = index
        self._open_log = open_log
        self._reader: LogReader | None = None
        self._interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def _sync(self) -> int:
        if self._reader is None:
            self._reader = self._open_log()
        try:
            return sync_index(self.index, self._reader)
        except StorageError:
            # Reopen next time: the connection may be what failed.
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None
            raise

    async def refresh(self) -> int:
        """Index the log's new entries; returns how many entries were read.

        Raises:
            SubjectStoreError: the log or the index cannot be read or written.
        """
        async with self._lock:
            try:
                return await asyncio.to_thread(self._sync)
            except StorageError as exc:
                raise SubjectStoreError(f"cannot read the audit log for the index: {exc}") from None

    async def start(self) -> None:
        """Catch up with the log (a rebuild if the index is new or of another log) and
        follow it, in the background; :meth:`wait_ready` tells when the first catch-up is
        done."""
        self._task = asyncio.create_task(self._follow(), name="subject-index")

    async def wait_ready(self, timeout_s: float) -> None:
        """Return once the first catch-up is done.

        Raises:
            SubjectStoreError: it is not done within ``timeout_s`` seconds.
        """
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise SubjectStoreError(
                "the subject index is still catching up with the audit log"
            ) from None

    def _near(self) -> bool:
        """Whether the (shared) index is within :data:`NEAR_ENTRIES` of the log."""
        if self._reader is None:
            self._reader = self._open_log()
        try:
            scanned, origin = self.index.watermark()
            return origin == (self._reader.origin() or "") and (
                self._reader.size() - scanned <= NEAR_ENTRIES
            )
        except StorageError:
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None
            raise

    async def _follow(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.index.follows):
                    await self.refresh()
                    self._ready.set()
                elif not self._ready.is_set():
                    async with self._lock:
                        near = await asyncio.to_thread(self._near)
                    if near:
                        self._ready.set()
            except StorageError as exc:
                log.warning("subject index not refreshed", extra={"reason": str(exc)})
            except SubjectStoreError as exc:
                log.warning("subject index not refreshed", extra={"reason": exc.message})
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        """Stop following and close the index and the log reader."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self.index.close()
