"""A trivial department for the benchmarks: one dataset, one record for any
subject, answered from memory. Prints ``listening on HOST:PORT``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.sdk import (
    FEDERATION_IDENTITY,
    LookupResult,
    Store,
    StoredRecord,
    bound_port,
    mtls_server_credentials,
    serve,
)
from gateway.dev.pki import load_pki
from protos.credit.v1 import common_pb2

SCHEMA = {"profile": {"name": common_pb2.FIELD_TYPE_TEXT, "rating": common_pb2.FIELD_TYPE_TEXT}}
CATALOG = """
version = "bench"
[departments.bench]
name = "bench"
[departments.bench.datasets.profile]
subject_types = ["enterprise"]
[departments.bench.datasets.profile.fields]
name = { type = "text", tier = "public" }
rating = { type = "text", tier = "public" }
"""


PRICES = """
version = "bench"
currency = "CNY"
timezone = "Asia/Shanghai"
[free]
daily_quota = 100000000
[self_query]
free_per_year = 2
[prices.bench]
profile = 100
"""


POLICY = """
g, ndrc, role:bench
p, role:bench, bench/*, public, administrative_licensing, any, allow
"""


class TrivialStore(Store):
    department = "bench"

    def __init__(self) -> None:
        self._result = LookupResult(
            records={
                "profile": [StoredRecord("r1", {"name": "厦门示例科技有限公司", "rating": "A"})]
            },
            subject_known=True,
        )

    def schema(self) -> Mapping[str, Mapping[str, common_pb2.FieldType.ValueType]]:
        return SCHEMA

    async def lookup(
        self, subject_type: str, subject_id: str, wanted: Mapping[str, Sequence[str]]
    ) -> LookupResult:
        return self._result


async def _main(listen: str, pki_dir: str | None) -> None:
    creds = None
    allowed = None
    if pki_dir:
        pki = load_pki(Path(pki_dir))
        creds = mtls_server_credentials(
            pki.department_cert("bench").read_bytes(),
            pki.department_key("bench").read_bytes(),
            pki.ca_cert.read_bytes(),
        )
        allowed = frozenset({FEDERATION_IDENTITY})
    server = await serve(TrivialStore(), listen, server_credentials=creds, allowed_clients=allowed)
    print(f"listening on 127.0.0.1:{bound_port(server)}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--pki", help="serve mutual TLS with this development PKI")
    args = p.parse_args()
    asyncio.run(_main(args.listen, args.pki))
