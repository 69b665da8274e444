"""``credit-query``: the agencies' command-line client.

    credit-query --demo DIR/demo.json --agency procurement \\
        --enterprise 91350200MA2YJ1XR9G --purpose government_procurement
    credit-query --gateway HOST:PORT --ca ca.pem --cert me.pem --key me.key \\
        --token-file me.jwt --person 360426199101010071 --purpose lending --mode paid --json

A readable table by default; ``--json`` prints the response as JSON for
scripts. Exit status: 0 answered, 1 refused by the gateway (the status line is
printed), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from gateway import names
from gateway.client import QueryClient, build_request
from protos.credit.v1 import common_pb2, query_pb2

__all__ = ["main", "render"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-query", description="Query credit-gateway about one subject."
    )
    conn = p.add_argument_group("connection")
    conn.add_argument(
        "--demo", type=Path, help="demo.json written by 'credit-gateway demo --serve'"
    )
    conn.add_argument("--agency", help="with --demo: which demo agency to act as")
    conn.add_argument("--gateway", help="gateway address HOST:PORT")
    conn.add_argument("--ca", type=Path, help="CA certificate (PEM)")
    conn.add_argument("--cert", type=Path, help="this agency's client certificate (PEM)")
    conn.add_argument("--key", type=Path, help="this agency's private key (PEM)")
    conn.add_argument("--token-file", type=Path, help="file holding this agency's JWT")
    conn.add_argument(
        "--timeout", type=float, default=10.0, help="deadline in seconds (default 10)"
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--enterprise", metavar="USCC", help="unified social credit code")
    who.add_argument("--person", metavar="ID", help="resident identity number")
    p.add_argument("--purpose", required=True, help="purpose code (policies/purposes.toml)")
    p.add_argument("--mode", choices=("free", "paid"), default="free")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="DEPT/DATASET",
        help="repeatable; default all",
    )
    p.add_argument("--consent-file", type=Path, help="file holding a consent token")
    p.add_argument("--case-reference", default="")
    p.add_argument("--officer-id", default="")
    p.add_argument("--represented-party", default="")
    p.add_argument("--request-id", help="UUID; default a fresh one")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    return p


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    if args.demo:
        demo = json.loads(args.demo.read_text(encoding="utf-8"))
        conn: dict[str, Any] = {"address": demo["gateway_address"]}
        if "ca_cert" in demo:
            agency = demo["agencies"].get(args.agency or "")
            if agency is None:
                raise SystemExit(
                    f"credit-query: --agency must be one of {', '.join(sorted(demo['agencies']))}"
                )
            conn |= {
                "ca": Path(demo["ca_cert"]).read_bytes(),
                "cert": Path(agency["cert"]).read_bytes(),
                "key": Path(agency["key"]).read_bytes(),
                "token": Path(agency["token_file"]).read_text(encoding="utf-8").strip(),
            }
        else:
            conn["dev_agency"] = args.agency or "development"
        return conn
    if not args.gateway:
        raise SystemExit("credit-query: name --gateway (or --demo)")
    conn = {"address": args.gateway}
    if args.ca:
        if not (args.cert and args.key and args.token_file):
            raise SystemExit("credit-query: --ca needs --cert, --key and --token-file")
        conn |= {
            "ca": args.ca.read_bytes(),
            "cert": args.cert.read_bytes(),
            "key": args.key.read_bytes(),
            "token": args.token_file.read_text(encoding="utf-8").strip(),
        }
    else:
        conn["dev_agency"] = args.agency or "development"
    return conn


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        request = build_request(
            enterprise=args.enterprise,
            person=args.person,
            purpose=args.purpose,
            mode=args.mode,
            datasets=args.dataset,
            consent_token=args.consent_file.read_text(encoding="utf-8").strip()
            if args.consent_file
            else "",
            case_reference=args.case_reference,
            officer_id=args.officer_id,
            represented_party=args.represented_party,
            request_id=args.request_id,
        )
        conn = _connection(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"credit-query: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(conn, request, args.timeout, args.json))


async def _run(
    conn: dict[str, Any], request: query_pb2.QueryRequest, timeout: float, as_json: bool
) -> int:
    address = conn.pop("address")
    async with QueryClient.connect(address, **conn) as client:
        try:
            response = await client.send(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            print(f"credit-query: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps(json_format.MessageToDict(response), ensure_ascii=False, indent=2))
    else:
        render(response, sys.stdout)
    return 0


_STATUS = {k: v.replace("_", " ") for k, v in names.STATUS.items()}
_REASON = {k: v.replace("_", " ") for k, v in names.REASON.items()}


def _value(v: common_pb2.FieldValue) -> str:
    kind = v.WhichOneof("kind")
    if kind == "money_fen":
        return f"¥{v.money_fen / 100:,.2f}" if v.money_fen % 100 else f"¥{v.money_fen // 100:,}"
    if kind == "boolean":
        return "yes" if v.boolean else "no"
    if kind is None:
        return "-"
    return str(getattr(v, kind))


def render(response: query_pb2.QueryResponse, out: TextIO) -> None:
    """Write a readable account of one answer."""
    head = f"query {response.request_id} on {response.query_date}, policy {response.policy_version}"
    charge = response.charge
    if charge.amount_fen:
        head += (
            f", charged ¥{charge.amount_fen / 100:,.2f} (balance ¥{charge.balance_fen / 100:,.2f})"
        )
    elif charge.lines:
        head += f", free ({charge.free_remaining} free queries left)"
    print(head, file=out)
    for section in response.sections:
        status = _STATUS.get(section.status, "?")
        timing = (
            f", {section.latency_ms} ms"
            if section.status != query_pb2.SECTION_STATUS_WITHHELD
            else ""
        )
        print(
            f"\n[{section.department}] {status}{timing}"
            + (f": {section.detail}" if section.detail else ""),
            file=out,
        )
        for ds in section.datasets:
            if not ds.records and not ds.aged_out:
                continue  # an empty dataset says nothing a reader needs
            aged = f", {ds.aged_out} aged out" if ds.aged_out else ""
            print(f"  {ds.dataset}: {len(ds.records)} record(s){aged}", file=out)
            for rec in ds.records:
                mark = "  [DISPUTED]" if rec.disputed else ""
                cells = ", ".join(f"{k}={_value(rec.fields[k])}" for k in sorted(rec.fields))
                print(f"    - {cells}{mark}", file=out)
        if section.withheld:
            print("  withheld:", file=out)
            # One line per dataset and reason: a reader wants why, not a field list first.
            groups: dict[tuple[str, query_pb2.WithholdReason.ValueType, str], list[str]] = {}
            for w in section.withheld:
                groups.setdefault((w.dataset, w.reason, w.detail), []).append(w.field)
            for (dataset, reason, detail), fields in groups.items():
                why = _REASON.get(reason, "?") + (f" ({detail})" if detail else "")
                print(f"    {dataset}: {', '.join(fields)}: {why}", file=out)
    if response.receipt.leaf_hash:
        print(
            f"\naudit receipt: {response.receipt.origin} #{response.receipt.log_index} "
            f"leaf {response.receipt.leaf_hash.hex()[:16]}...",
            file=out,
        )


if __name__ == "__main__":
    raise SystemExit(main())
