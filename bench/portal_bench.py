"""The public lookup page: what a lookup through the page costs on top of the query it makes.

Run ``python -m bench.portal_bench [--n N] [--concurrency C]``. A script, not a test. It
starts the local federation (real departments over mutual TLS, the real gateway, audit log
and ledger) and the page (uvicorn, the rate limit set out of reach), then, in one run:

* N sequential lookups of one enterprise through the page (HTTP GET of its page, the HTML
  rendered) against N sequential queries the portal agency sends itself over gRPC (the
  same request the page sends): medians and the ratio page/query;
* the same with C clients at once: lookups per second through the page and queries per
  second direct, and the ratio.

Both paths are the portal agency, whose limit at the gateway (``policies/limits.toml``:
50 queries/s, burst 200) they share; a run in which anything is not answered OK is void.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from gateway.cli.connect import QueryClient, build_request
from gateway.dev.devstack import DevStack
from gateway.portal import PortalConfig, PortalServer


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - loopback
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def _timed(n: int, call: Callable[[], Awaitable[None]]) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t)
    return samples


async def _rate(n: int, concurrency: int, call: Callable[[], Awaitable[None]]) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t)


async def main(n: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory(prefix="portal-bench-") as tmp:
        stack = await DevStack.create(Path(tmp), subjects=600)
        server = await PortalServer.start(
            PortalConfig(
                listen="127.0.0.1:0",
                gateway=stack.gateway.address,
                ca=stack.pki.ca_cert,
                cert=stack.pki.agency_cert("portal"),
                key=stack.pki.agency_key("portal"),
                token_file=stack.tokens["portal"],
                rate_per_minute=1e9,
                burst=10**9,
            )
        )
        client: QueryClient = stack.client("portal")
        try:
            code = str(stack.subjects["enterprise_all_departments"]["id"])
            page = f"{server.url}enterprise/{code}"

            refused = 0

            async def via_page() -> None:
                nonlocal refused
                if await asyncio.to_thread(_get, page) != 200:
                    refused += 1

            async def direct() -> None:
                nonlocal refused
                try:
                    await client.send(build_request(enterprise=code, purpose="public_lookup"))
                except grpc.aio.AioRpcError:
                    refused += 1

            await via_page()  # warm both paths: channels, caches, templates
            await direct()
            page_s = await _timed(n, via_page)
            query_s = await _timed(n, direct)
            page_rate = await _rate(n, concurrency, via_page)
            query_rate = await _rate(n, concurrency, direct)
        finally:
            await client.close()
            await server.stop()
            await stack.close()
    if refused:
        # The portal agency's own limit at the gateway (policies/limits.toml) bound, or
        # something failed: the figures would not compare like with like.
        print(f"VOID: {refused} lookups or queries were not answered OK")
        return
    print(f"portal lookups vs direct queries of the portal agency, n={n}, one run")
    print(f"  sequential: page {_ms(page_s):.1f} ms, query {_ms(query_s):.1f} ms (medians),"
          f" page/query {statistics.median(page_s) / statistics.median(query_s):.2f}")  # fmt: skip
    print(f"  {concurrency} at once: page {page_rate:.0f}/s, query {query_rate:.0f}/s,"
          f" page/query {page_rate / query_rate:.2f}")  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="lookups per measurement (default 200)")
    p.add_argument("--concurrency", type=int, default=8, help="clients at once (default 8)")
    args = p.parse_args()
    asyncio.run(main(args.n, args.concurrency))
