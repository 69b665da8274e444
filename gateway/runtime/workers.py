"""``credit-gateway serve --workers N``: N gateway processes on one port, under one
supervisor.

    credit-gateway serve --config gateway.toml --workers 4

Each worker is a whole gateway (``credit-gateway serve --worker``) binding the configured
port with ``SO_REUSEPORT`` (grpc's ``grpc.so_reuseport``): the kernel spreads incoming
connections over them, so one host uses all its cores (one grpc.aio event loop each). A
gRPC channel is one connection: many clients spread well, one client sticks to one
worker. The workers share the stores: PostgreSQL for every store that has to be shared
across hosts; on one host the SQLite ledger, replay, policy and controls files are shared
safely (WAL, ``BEGIN IMMEDIATE``). **The SQLite audit log is not**: it has exactly one
writer (a second one fails and takes the first down), so ``--workers`` above 1 is refused
unless the audit log is on PostgreSQL (``[storage]``).

The supervisor

* starts the N workers and prints ``credit-gateway serving on HOST:PORT (N workers)`` once
  every one serves; a worker that exits before it serves stops them all (exit 2: the
  configuration is wrong and restarting would not help);
* restarts a worker that dies later (0.5 s doubling to 10 s between restarts of one slot,
  back to 0.5 s after it has served 30 s), logging its exit status;
* on SIGTERM or SIGINT sends SIGTERM to every worker (each drains its queries in flight,
  ``drain_grace_s``, and signs its final audit checkpoint), waits, and SIGKILLs a worker
  still running ``drain_grace_s + 15`` s later; exit 0 when every worker exited cleanly;
* serves ``/metrics`` on ``[gateway] metrics_listen`` for all workers together, in
  prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``: the operator's
  folder, or a temporary one removed at exit): counters and histograms are summed over
  workers, live and dead; gauges carry a ``pid`` label, one series per worker (a dead
  worker's are dropped). What multiprocess mode cannot carry is absent from that page:
  ``Info`` metrics (build, policy version), gauges read by a function at scrape time
  (circuit breakers) and the decision cache counters. Workers serve no metrics port of
  their own.

Workers watch their parent: one whose supervisor is gone (even SIGKILLed) drains and
exits rather than serve unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import ConfigError
from gateway.runtime.config import Config

__all__ = ["MULTIPROC_ENV", "Supervisor", "check_workers"]

log = logging.getLogger(__name__)

#: prometheus-client's multiprocess folder variable.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_RESTART_FIRST_S = 0.5
_RESTART_MAX_S = 10.0
#: A worker that has served this long restarts quickly again after its next death.
_HEALTHY_AFTER_S = 30.0
_READY_TIMEOUT_S = 180.0
_KILL_AFTER_EXTRA_S = 15.0


def check_workers(config: Config, workers: int) -> None:
    """Refuse a worker count the configuration cannot support.

    Raises:
        ConfigError: ``workers`` < 1 (``--workers``); more than one worker with the audit
            log on SQLite (``audit``: one writer only) or with port 0 (``gateway.listen``:
            each worker would pick a port of its own).
    """
    if workers < 1:
        raise ConfigError("--workers", "must be at least 1")
    if workers == 1:
        return
    if config.audit is not None and config.storage.url_for("audit") is None:
        raise ConfigError(
            "audit",
            f"--workers {workers} needs the audit log on PostgreSQL ([storage] url): the "
            "SQLite audit log has exactly one writer, and a second process appending to it "
            "would fail and take the first down; run one process, or move the log",
        )
    if config.listen.rpartition(":")[2] == "0":
        raise ConfigError(
            "gateway.listen",
            f"--workers {workers} needs a fixed port: with port 0 each worker would listen "
            "on a port of its own",
        )


@dataclass
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    delay: float = _RESTART_FIRST_S
    restarts: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Run ``workers`` gateway processes for ``config_path`` (see the module docstring).

    ``python``: the interpreter to start workers with (default: this one)."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        workers: int,
        *,
        log_level: str = "INFO",
        python: str = sys.executable,
    ) -> None:
        check_workers(config, workers)
        self._config_path = config_path
        self._config = config
        self._slots = [_Slot(i) for i in range(workers)]
        self._log_level = log_level
        self._python = python
        self._stopping = False
        self._multiproc: Path | None = None
        self._own_multiproc = False
        self._metrics_stop: list[object] = []

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.returncode is None]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self._multiproc is not None:
            env[MULTIPROC_ENV] = str(self._multiproc)
        return env

    async def _spawn(self, slot: _Slot) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            self._python, "-m", "gateway.cli.gateway", "--log-level", self._log_level,
            "serve", "--config", str(self._config_path), "--worker",
            stdout=asyncio.subprocess.PIPE, env=self._env(),
        )  # fmt: skip
        slot.proc, slot.started = proc, time.monotonic()
        slot.pids.append(proc.pid)
        return proc

    async def _ready(self, proc: asyncio.subprocess.Process) -> bool:
        """Wait for the worker's "serving on" line; False when it exits first."""
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return False
            if b"serving on" in line:
                return True

    async def run(self) -> int:
        """Start, supervise and, on SIGTERM/SIGINT, drain the workers. Returns the exit
        status: 0 after a clean drain, 1 when a worker had to be killed or failed to
        drain, 2 when the workers could not start."""
        self._setup_metrics_dir()
        try:
            return await self._run()
        finally:
            self._teardown_metrics()

    async def _run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        procs = [await self._spawn(s) for s in self._slots]
        ready = await asyncio.gather(
            *(asyncio.wait_for(self._ready(p), _READY_TIMEOUT_S) for p in procs),
            return_exceptions=True,
        )
        if not all(r is True for r in ready):
            print(
                "credit-gateway: a worker did not start (see its error above); stopping all",
                file=sys.stderr,
            )
            await self._terminate_all()
            return 2
        self._serve_metrics()
        print(
            f"credit-gateway serving on {self._config.listen} ({len(self._slots)} workers)",
            flush=True,
        )
        watchers = [asyncio.create_task(self._watch(s)) for s in self._slots]
        await stop.wait()
        log.info("draining %d workers", len(self._slots))
        self._stopping = True
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        return await self._terminate_all()

    async def _watch(self, slot: _Slot) -> None:
        """Forward the worker's output; restart it when it dies (not while stopping)."""
        while True:
            proc = slot.proc
            assert proc is not None and proc.stdout is not None
            async for line in proc.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
            code = await proc.wait()
            if self._stopping:
                return
            self._mark_dead(proc.pid)
            if time.monotonic() - slot.started >= _HEALTHY_AFTER_S:
                slot.delay = _RESTART_FIRST_S
            log.error(
                "worker %d (pid %d) exited with status %s; restarting in %.1f s",
                slot.index,
                proc.pid,
                code,
                slot.delay,
            )
            await asyncio.sleep(slot.delay)
            slot.delay = min(slot.delay * 2, _RESTART_MAX_S)
            slot.restarts += 1
            new = await self._spawn(slot)
            if not await self._ready(new):
                continue  # it died before serving: the loop waits for it and retries
            log.warning("worker %d serving again (pid %d)", slot.index, new.pid)

    async def _terminate_all(self) -> int:
        procs = [s.proc for s in self._slots if s.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        grace = self._config.drain_grace_s + _KILL_AFTER_EXTRA_S
        status = 0

        async def reap(proc: asyncio.subprocess.Process) -> int:
            if proc.stdout is not None:
                with contextlib.suppress(Exception):
                    async for line in proc.stdout:
                        sys.stdout.buffer.write(line)
            try:
                return await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                log.error("worker pid %d did not drain in %.0f s; killing it", proc.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                return -9

        codes = await asyncio.gather(*(reap(p) for p in procs))
        for proc, code in zip(procs, codes, strict=True):
            self._mark_dead(proc.pid)
            if code not in (0, -signal.SIGTERM):
                status = 1
        sys.stdout.flush()
        return status

    # --- metrics -----------------------------------------------------------------------------

    def _setup_metrics_dir(self) -> None:
        if not self._config.metrics_listen:
            return
        given = os.environ.get(MULTIPROC_ENV)
        if given:
            folder = Path(given)
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.db"):  # a previous run's workers: not ours to sum
                old.unlink()
        else:
            folder = Path(tempfile.mkdtemp(prefix="credit-gateway-metrics-"))
            self._own_multiproc = True
        self._multiproc = folder

    def _serve_metrics(self) -> None:
        listen = self._config.metrics_listen
        if not listen or self._multiproc is None:
            return
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self._multiproc))  # type: ignore[no-untyped-call]
        host, _, port = listen.rpartition(":")
        try:
            httpd, thread = start_http_server(int(port), addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(
                "gateway.metrics_listen", f"cannot listen on {listen}: {exc.strerror}"
            ) from None
        self._metrics_stop = [httpd, thread]
        log.info("metrics of all workers on http://%s:%d/metrics", host, httpd.server_port)

    def _mark_dead(self, pid: int) -> None:
        if self._multiproc is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self._multiproc))  # type: ignore[no-untyped-call]

    def _teardown_metrics(self) -> None:
        if self._metrics_stop:
            httpd, thread = self._metrics_stop
            httpd.shutdown()  # type: ignore[attr-defined]
            httpd.server_close()  # type: ignore[attr-defined]
            thread.join(5)  # type: ignore[attr-defined]
        if self._own_multiproc and self._multiproc is not None:
            shutil.rmtree(self._multiproc, ignore_errors=True)
