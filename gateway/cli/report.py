"""``credit-query report``: ask the gateway for a signed credit report and save it.

    credit-query report --demo DIR/demo.json --agency procurement \\
        --enterprise 91350200MA2YJ1XR9G --purpose government_procurement \\
        --out report.pdf --json report.json

The flags are ``credit-query``'s (:mod:`gateway.cli.query` parses them); the report is made
by the gateway (``ReportService.Report``), so the query is audited and charged as any other.
The files are written only once the whole answer is in, each through a temporary file
renamed into place, so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

from gateway.cli.connect import QueryClient
from protos.credit.v1 import query_pb2

__all__ = ["run_report", "write_file"]


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, then a rename).

    Raises OSError if the folder cannot be written.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def run_report(
    conn: dict[str, Any],
    request: query_pb2.QueryRequest,
    timeout: float,
    out: Path,
    json_out: Path | None,
) -> int:
    """Ask for the report of ``request`` over ``conn`` (``address`` and the keyword arguments
    of :meth:`QueryClient.connect`) and write it; returns the exit status (0 written, 1
    refused by the gateway, 2 a file could not be written)."""
    conn = dict(conn)
    address = conn.pop("address")
    async with QueryClient.connect(address, **conn) as client:
        try:
            made = await client.report(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            print(f"credit-query: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    try:
        write_file(out, made.pdf)
        if json_out is not None:
            write_file(json_out, made.json)
    except OSError as exc:
        print(f"credit-query: cannot write the report: {exc}", file=sys.stderr)
        return 2
    receipt = made.response.receipt
    print(
        f"report {made.verification_code} written to {out}"
        + (f" and {json_out}" if json_out is not None else "")
        + f" (audit receipt {receipt.origin} #{receipt.log_index})"
    )
    return 0
