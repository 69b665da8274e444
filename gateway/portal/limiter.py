"""The public page's rate limit: a token bucket per client address.

Anyone may use the page without an account, so the only handle on a client is its network
address (behind a reverse proxy, the address the proxy vouches for: see
:class:`~gateway.portal.config.PortalConfig` ``trusted_proxies``). An IPv6 client is keyed by
its /64 network, because one host usually holds a whole /64 and could otherwise take a new
address per request. Every lookup and every report download takes one token; a client without
a token is answered 429 with ``Retry-After`` (whole seconds, rounded up: RFC 9110 section
10.2.3) and the gateway is not asked.

Memory is bounded: at most ``max_clients`` buckets are kept, the least recently seen dropped
first (a dropped client starts again with a full bucket, which is what a client that has
been quiet that long would have anyway, or near it). Runs on the event loop: not
thread-safe, O(1) per request.

    limiter = ClientLimiter(rate_per_s=10 / 60, burst=10)
    wait = limiter.admit("203.0.113.7")      # 0.0: go ahead; > 0: seconds to wait
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.pipeline.limits import TokenBucket

__all__ = ["ClientLimiter", "client_key", "retry_after_header"]


def client_key(address: str) -> str:
    """The key a client is limited by: an IPv4 address as it is, an IPv6 address as its
    /64 network (an IPv4-mapped IPv6 address as the IPv4 one), anything else (a Unix
    socket, no address) as it is. Never raises."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` for a wait of ``wait_s`` seconds: whole seconds, rounded up, at
    least 1 (a client retrying after it finds its token there)."""
    return str(max(1, math.ceil(wait_s)))


class ClientLimiter:
    """Token buckets per client key (see the module docstring). ``rate_per_s`` tokens per
    second refill each bucket up to ``burst``; ``clock`` is a monotonic clock in seconds.

    Raises:
        ValueError: a rate or burst that is not positive, or ``max_clients`` below 1.
    """

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)) or burst < 1 or max_clients < 1:
            raise ValueError("rate_per_s and burst must be positive, max_clients at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, address: str) -> float:
        """Take a token for the client at ``address``: 0.0 when taken, otherwise the
        seconds until one is there (nothing is taken then)."""
        key = client_key(address)
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return 0.0
        return bucket.wait_s(now)
