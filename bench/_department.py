"""A trivial department for the benchmarks: one dataset, one record for any
subject, answered from memory. Prints ``listening on HOST:PORT``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence

from adapters.sdk import LookupResult, Store, StoredRecord, bound_port, serve
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


async def _main(listen: str) -> None:
    server = await serve(TrivialStore(), listen, server_credentials=None, allowed_clients=None)
    print(f"listening on 127.0.0.1:{bound_port(server)}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    asyncio.run(_main(p.parse_args().listen))
