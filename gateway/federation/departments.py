"""Which departments the gateway may ask now, and checking the others again.

A department is in one of three states (:class:`DepartmentState`): ``serving`` (its
``Describe`` agreed with the catalog), ``unavailable`` (not reached: down, or not checked
yet) or ``refused`` (reached, but kept out: it answers as another department, or its
``Describe`` disagrees with the catalog). Only a serving department is ever asked; the
sections of the others say why, and nothing is charged for them (the meter charges what
was delivered).

    monitor = DepartmentMonitor(clients, catalog=lambda: gateway.catalog,
                                describe_timeout_s=10.0, on_change=changed)
    await monitor.check_all()       # start-up: every department once, concurrently
    monitor.start()                 # then those not serving, in the background
    monitor.add(client)             # a department added by a policy version
    monitor.remove("court")         # a department retired by one
    await monitor.close()

A department not serving is checked again after 1 s, then 2, 4, ... up to 30 s between
tries (:class:`Backoff`); a check is one ``Describe`` that waits up to the describe
timeout for the department to come up, so a department that starts during a check is
seen as soon as the channel connects. :class:`RecheckSchedule` holds the due times on an
injectable clock (unit-tested with a fake one). Every change of state is logged once (the
department id and the reason, never an identifier) and reported to ``on_change`` (the
gateway sets its health and the ``credit_gateway_department_state`` metric there).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass, field

from gateway.domain.catalog import Catalog
from gateway.errors import ConfigError, UpstreamError
from gateway.federation.client import DepartmentClient, DepartmentState

__all__ = ["Backoff", "DepartmentMonitor", "DepartmentState", "RecheckSchedule"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds between checks of a department that is not serving: ``initial_s`` after
    the first failure, multiplied by ``factor`` after each further one, at most ``max_s``."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failed checks (``failures >= 1``)."""
        if failures < 1:
            return 0.0
        # Capped before exponentiation grows without bound on a long outage.
        return min(self.max_s, self.initial_s * self.factor ** min(failures - 1, 64))


@dataclass(slots=True)
class _Entry:
    due: float
    failures: int = 0


@dataclass(slots=True)
class RecheckSchedule:
    """Due times of departments to check again, on ``clock`` (seconds, monotonic).

    Pure bookkeeping, no I/O: :class:`DepartmentMonitor` asks :meth:`due` and
    :meth:`wait_s`, and reports each check with :meth:`failed` or :meth:`succeeded`.
    """

    clock: Callable[[], float] = time.monotonic
    backoff: Backoff = field(default_factory=Backoff)
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def add(self, department: str) -> None:
        """Check ``department`` now (a new one, or one whose catalog entry changed); an
        entry already scheduled is made due now, its failure count kept."""
        entry = self._entries.get(department)
        if entry is None:
            self._entries[department] = _Entry(self.clock())
        else:
            entry.due = min(entry.due, self.clock())

    def remove(self, department: str) -> None:
        """Stop checking ``department`` (retired); unknown names are ignored."""
        self._entries.pop(department, None)

    def succeeded(self, department: str) -> None:
        """The department serves: no more checks, and the next outage starts at 1 s."""
        self._entries.pop(department, None)

    def failed(self, department: str) -> float:
        """A check failed: the next is due after the backoff. Returns that delay (s).
        A department not scheduled (removed meanwhile) stays unscheduled; returns 0."""
        entry = self._entries.get(department)
        if entry is None:
            return 0.0
        entry.failures += 1
        delay = self.backoff.delay(entry.failures)
        entry.due = self.clock() + delay
        return delay

    def due(self, busy: Container[str] = ()) -> list[str]:
        """Departments whose check is due now, in name order, but those in ``busy``
        (being checked already)."""
        now = self.clock()
        return sorted(d for d, e in self._entries.items() if e.due <= now and d not in busy)

    def wait_s(self, busy: Container[str] = ()) -> float | None:
        """Seconds until the next check not in ``busy`` is due (0 if one is due now);
        None if none is scheduled."""
        dues = [e.due for d, e in self._entries.items() if d not in busy]
        if not dues:
            return None
        return max(0.0, min(dues) - self.clock())

    def failures(self, department: str) -> int:
        """Consecutive failed checks of ``department`` (0 if not scheduled)."""
        entry = self._entries.get(department)
        return 0 if entry is None else entry.failures

    def __contains__(self, department: object) -> bool:
        return department in self._entries


#: ``on_change(department, state)``: called on the event loop after every change of state.
StateListener = Callable[[str, DepartmentState], Awaitable[None]]


class DepartmentMonitor:
    """Checks departments' ``Describe`` against the catalog and keeps each client's
    :attr:`~gateway.federation.client.DepartmentClient.state` up to date. See the module
    docstring. ``clients`` is the gateway's own mapping (read, never changed here)."""

    def __init__(
        self,
        clients: Mapping[str, DepartmentClient],
        *,
        catalog: Callable[[], Catalog],
        describe_timeout_s: float,
        on_change: StateListener | None = None,
        schedule: RecheckSchedule | None = None,
    ) -> None:
        self._clients = clients
        self._catalog = catalog
        self._describe_timeout_s = describe_timeout_s
        self._on_change = on_change
        self.schedule = schedule or RecheckSchedule()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._checking: dict[str, asyncio.Task[None]] = {}
        self._reports: set[asyncio.Task[None]] = set()

    async def check_all(self) -> None:
        """Check every department once, concurrently (start-up); those not serving are
        scheduled for the background. Never raises for a department's failure."""
        for dept, client in self._clients.items():
            self._watch(client)
            self.schedule.add(dept)
        await asyncio.gather(*(self._check(d) for d in list(self._clients)))

    def start(self) -> None:
        """Check departments not serving in the background until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="department-recheck")

    def add(self, department: str) -> None:
        """Check ``department`` now, in the background: a client just added to the
        gateway's mapping, or one whose catalog entry changed (it keeps its state until
        the check says otherwise)."""
        client = self._clients.get(department)
        if client is not None:
            self._watch(client)
        self.schedule.add(department)
        self._wake.set()

    def _watch(self, client: DepartmentClient) -> None:
        client.on_outage = functools.partial(self._outage, client.department)

    def _outage(self, dept: str) -> None:
        """A serving department's circuit opened on unreachability: keep it out until its
        ``Describe`` agrees again (it may come back as another version of the program)."""
        client = self._clients.get(dept)
        if client is None or client.state is not DepartmentState.SERVING:
            return
        detail = (
            f"department {dept} is unavailable: circuit open after repeated failures; "
            "checked again in the background"
        )
        # At once: the next query does not ask it; the report (health, metric) follows.
        client.state, client.detail = DepartmentState.UNAVAILABLE, detail
        task = asyncio.get_running_loop().create_task(self._report(client))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)
        self.schedule.add(dept)
        self._wake.set()

    async def remove(self, department: str) -> None:
        """Stop checking ``department`` (retired), cancelling a check in flight."""
        self.schedule.remove(department)
        task = self._checking.pop(department, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop the background checks."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._checking.values()):
            task.cancel()
        for task in list(self._checking.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._checking.clear()
        for task in list(self._reports):
            task.cancel()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            for dept in self.schedule.due(busy=self._checking):
                task = asyncio.create_task(self._check(dept), name=f"check-{dept}")
                self._checking[dept] = task
                task.add_done_callback(functools.partial(self._done, dept))
            # A check's end, add() or remove() wakes the loop early.
            wait = self.schedule.wait_s(busy=self._checking)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _done(self, dept: str, task: asyncio.Task[None]) -> None:
        if self._checking.get(dept) is task:
            del self._checking[dept]
        self._wake.set()  # the schedule changed: its next due time may be earlier

    async def _check(self, dept: str) -> None:
        client = self._clients.get(dept)
        if client is None:
            self.schedule.remove(dept)
            return
        state, detail = await self._describe(client)
        if dept not in self.schedule:
            return  # removed (retired) while the check ran
        if state is DepartmentState.SERVING:
            self.schedule.succeeded(dept)
        else:
            self.schedule.failed(dept)
        await self._set(client, state, detail)

    async def _describe(self, client: DepartmentClient) -> tuple[DepartmentState, str]:
        dept = client.department
        try:
            described = await client.describe(self._describe_timeout_s)
        except UpstreamError as exc:
            if exc.reason == "PEER_NOT_DEPARTMENT":
                return DepartmentState.REFUSED, (
                    f"department {dept} is kept out: the server at its address did not "
                    "present the department's own certificate"
                )
            return DepartmentState.UNAVAILABLE, (
                f"department {dept} is unavailable: not reached; checked again in the background"
            )
        if described.department != dept:
            return DepartmentState.REFUSED, (
                f"department {dept} is kept out: its adapter answers as another department"
            )
        try:
            self._catalog().check_describe(described)
        except ConfigError as err:
            return DepartmentState.REFUSED, (
                f"department {dept} is kept out: its Describe disagrees with the catalog "
                f"({err.message})"
            )
        return DepartmentState.SERVING, ""

    async def _set(self, client: DepartmentClient, state: DepartmentState, detail: str) -> None:
        before, checked = client.state, client.checked
        client.state, client.detail, client.checked = state, detail, True
        if before is not state or not checked:
            await self._report(client)

    async def _report(self, client: DepartmentClient) -> None:
        """Log a change of ``client``'s state once and tell the listener."""
        state, detail = client.state, client.detail
        if state is DepartmentState.SERVING:
            log.info(
                "department serving: its Describe agrees with the catalog",
                extra={"department": client.department, "state": state.value},
            )
        else:
            log.warning(detail, extra={"department": client.department, "state": state.value})
        if self._on_change is not None:
            await self._on_change(client.department, state)
