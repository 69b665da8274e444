"""``credit-gateway serve`` for bench.overhead, optionally without the live checks.

    python -m bench._gateway --config gateway.toml [--no-live-checks] [--threads-file F]

Without ``--no-live-checks`` this is ``credit-gateway --log-level WARNING serve`` as shipped.
With it the same configuration is served without the live checks of issue 11, which the
configuration file alone cannot take away: no live controls store (a policy store implies
one beside it), no replay store (seen jtis in memory, as before issue 11) and no rate
limiter (the gateway always builds one; the query path skips admission without it).
Everything else (policy store, audit log, ledger, TLS, tokens) stays as configured.
With ``--threads-file`` it writes its threads' names (native id -> Python name, JSON) there
on SIGUSR1, for a bench that splits its CPU by thread (bench._procs.by_role).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import threading
from pathlib import Path

from gateway.runtime.assembly import build_gateway
from gateway.runtime.config import load_config
from gateway.runtime.logs import configure_logging


async def _serve(config_path: Path, live_checks: bool, threads_file: Path | None) -> None:
    config = load_config(config_path)
    if not live_checks:
        auth = config.auth
        if auth is not None:
            auth = dataclasses.replace(auth, replay_store=None)
        config = dataclasses.replace(config, controls=None, auth=auth)
    gateway = await build_gateway(config)
    if not live_checks:
        gateway.limiter = None  # before start(): the query service is built there
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if threads_file is not None:
        # bench._procs.python_thread_names: which native thread is which Python thread,
        # so that a bench can split the process's CPU by thread role.
        def dump_threads() -> None:
            names = {t.native_id: t.name for t in threading.enumerate()}
            tmp = threads_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(names), encoding="utf-8")
            tmp.replace(threads_file)

        loop.add_signal_handler(signal.SIGUSR1, dump_threads)
    print(f"credit-gateway serving on {gateway.address}", flush=True)
    await stop.wait()
    await gateway.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--no-live-checks", action="store_true")
    p.add_argument("--threads-file", type=Path, help="where SIGUSR1 writes the thread names")
    args = p.parse_args(argv)
    configure_logging("WARNING")
    asyncio.run(_serve(args.config, not args.no_live_checks, args.threads_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
