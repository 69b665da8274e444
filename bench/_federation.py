"""The seven departments of the shipped catalog (policies/catalog.toml) for the fan-out
benches, in one process: one gRPC server each, answered from memory with records of
realistic size (every field of the catalog filled, Chinese text, two records per
dataset) for one enterprise and, optionally, one person. Prints
``listening on dept=HOST:PORT,dept=HOST:PORT,...``.

    python -m bench._federation --subject USCC [--person ID] [--pki DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
from pathlib import Path

from adapters.sdk import (
    FEDERATION_IDENTITY,
    StoredRecord,
    Value,
    bound_port,
    mtls_server_credentials,
    serve,
)
from adapters.testing import InMemoryStore
from gateway.dev.pki import load_pki
from gateway.domain.catalog import Catalog, load_catalog
from protos.credit.v1 import common_pb2

_TEXT = "厦门市思明区示例科技发展有限公司"


def _value(ftype: int, n: int) -> Value:
    if ftype == common_pb2.FIELD_TYPE_TEXT:
        return f"{_TEXT[: 8 + n % 8]}{n:04d}"
    if ftype == common_pb2.FIELD_TYPE_DATE:
        return dt.date(2024, 1 + n % 12, 1 + n % 28)
    if ftype == common_pb2.FIELD_TYPE_MONEY_FEN:
        return 1_234_500 + n * 100
    if ftype == common_pb2.FIELD_TYPE_INTEGER:
        return 40 + n
    return n % 2 == 0


def records_for(
    catalog: Catalog, department: str, subject_type: str = "enterprise"
) -> dict[str, list[StoredRecord]]:
    """dataset -> two records with every catalog field of ``department`` filled, for
    the datasets a subject of ``subject_type`` may have."""
    out: dict[str, list[StoredRecord]] = {}
    for ds in catalog.departments[department].datasets.values():
        if subject_type not in ds.subject_types:
            continue
        out[ds.name] = [
            StoredRecord(
                f"{department}-{ds.name}-{n}",
                {f.name: _value(f.type, n) for f in ds.fields.values()},
                event_end_date=dt.date(2025, 6, 1) if ds.negative and n else None,
            )
            for n in range(2)
        ]
    return out


async def _main(subject: str, person: str | None, pki_dir: str | None) -> None:
    catalog = load_catalog()
    creds = None
    allowed = None
    pki = load_pki(Path(pki_dir)) if pki_dir else None
    addresses = []
    servers = []  # kept referenced: a grpc.aio server that is garbage-collected stops
    for dept in sorted(catalog.departments):
        data = {subject: records_for(catalog, dept)}
        if person:
            data[person] = records_for(catalog, dept, "person")
        store = InMemoryStore.from_catalog(catalog, dept, data)
        store.calls = collections.deque(maxlen=4)  # type: ignore[assignment]  # bounded
        if pki is not None:
            creds = mtls_server_credentials(
                pki.department_cert(dept).read_bytes(),
                pki.department_key(dept).read_bytes(),
                pki.ca_cert.read_bytes(),
            )
            allowed = frozenset({FEDERATION_IDENTITY})
        server = await serve(
            store, "127.0.0.1:0", server_credentials=creds, allowed_clients=allowed
        )
        servers.append(server)
        addresses.append(f"{dept}=127.0.0.1:{bound_port(server)}")
    print(f"listening on {','.join(addresses)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--subject", required=True, help="the enterprise (USCC)")
    p.add_argument("--person", help="a person too (resident identity number)")
    p.add_argument("--pki", help="serve mutual TLS with this development PKI")
    args = p.parse_args()
    asyncio.run(_main(args.subject, args.person, args.pki))
