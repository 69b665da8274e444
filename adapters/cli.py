"""``credit-adapter``: run a department adapter, generate sample data, check a mapping.

::

    credit-adapter serve --mapping market.toml --db market.sqlite --listen 0.0.0.0:7443 \\
        --tls-cert adapter.pem --tls-key adapter.key --client-ca ca.pem
    credit-adapter serve ... --listen 127.0.0.1:0 --insecure-dev-plaintext
    credit-adapter generate --out data/ [--seed 1] [--subjects 10000]
    credit-adapter describe --mapping market.toml [--db market.sqlite] [--catalog [FILE]]
    credit-adapter objection list --mapping market.toml --db market.sqlite
    credit-adapter objection answer --mapping market.toml --db market.sqlite \\
        --id OBJECTION_ID --outcome corrected|confirmed|undetermined [--note TEXT]

``objection`` is the department's side of an objection (Decree 631 Art. 25) or a
credit-repair application (outcomes ``repair_approved``, ``repair_refused``): ``list`` prints
those not answered yet, oldest due first; ``answer`` records the department's answer in the
mapping's objections table, where the gateway reads it on its next poll. A correction itself
is made in the department's records first.

With TLS, ``serve`` answers only a client certificate carrying the gateway's federation
identity, the URI SAN ``urn:credit-gateway:federation`` (``--allow-client URI`` names
another; a common name is refused as an identity: anyone with a certificate from the CA
may choose one).

``serve`` prints one line, ``listening on HOST:PORT``, on stdout once it
accepts connections (so a parent process can read the port chosen for
``:0``), logs to stderr, and drains gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
import time
from pathlib import Path

import grpc

from gateway.cli.console import path_arg
from gateway.console import console_script
from gateway.errors import ConfigError, GatewayError

from . import sdk, synth
from .sql import ObjectionTable, SqlStore, catalog_disagreements, load_mapping

__all__ = ["main"]

log = logging.getLogger("adapters.cli")


@console_script
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "generate":
            return _generate(args)
        if args.command == "objection":
            return _objection(args)
        return _describe(args)
    except GatewayError as err:
        # One clear line; configuration errors name the offending key.
        print(f"credit-adapter: error: {err.message}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="credit-adapter", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve one department's database to the gateway")
    serve.add_argument(
        "--mapping", required=True, type=path_arg, help="the SQL mapping file (TOML)"
    )
    serve.add_argument(
        "--db", required=True, type=path_arg, help="the SQLite file, opened read-only"
    )
    serve.add_argument("--listen", required=True, help="HOST:PORT; port 0 picks a free port")
    tls = serve.add_argument_group("mutual TLS (required unless --insecure-dev-plaintext)")
    tls.add_argument("--tls-cert", type=path_arg, help="this adapter's certificate chain (PEM)")
    tls.add_argument("--tls-key", type=path_arg, help="this adapter's private key (PEM)")
    tls.add_argument("--client-ca", type=path_arg, help="CA that issues the gateway's certificate")
    tls.add_argument(
        "--allow-client",
        action="append",
        metavar="URI",
        help="client identity (certificate URI SAN) to accept; repeatable (default: the"
        f" gateway's federation identity, {sdk.FEDERATION_IDENTITY}); never a common name",
    )
    serve.add_argument(
        "--insecure-dev-plaintext",
        action="store_true",
        help="serve WITHOUT TLS or client authentication: local development only",
    )
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to drain on SIGTERM")
    serve.add_argument("--workers", type=int, default=4, help="SQLite reader threads")
    serve.add_argument("--log-level", default="INFO", help="logging level (stderr)")

    gen = sub.add_parser("generate", help="write synthetic sample databases and subjects.json")
    gen.add_argument("--out", required=True, type=path_arg, help="output directory")
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--subjects", type=int, default=10_000)

    desc = sub.add_parser("describe", help="show (and check) a mapping file")
    desc.add_argument("--mapping", required=True, type=path_arg)
    desc.add_argument("--db", type=path_arg, help="also check the mapping against this database")
    desc.add_argument(
        "--catalog",
        nargs="?",
        const="",
        metavar="FILE",
        help="also check agreement with the catalog (default: the packaged one)",
    )
    obj = sub.add_parser("objection", help="the department's side of objections")
    osub = obj.add_subparsers(dest="action", required=True)
    olist = osub.add_parser("list", help="objections not answered yet, oldest due first")
    answer = osub.add_parser("answer", help="answer one objection")
    for p in (olist, answer):
        p.add_argument("--mapping", required=True, type=path_arg)
        p.add_argument("--db", required=True, type=path_arg)
    answer.add_argument("--id", required=True, help="the objection id (a UUID)")
    answer.add_argument(
        "--outcome", required=True, choices=[o for o in sdk.OUTCOMES if o != "pending"]
    )
    answer.add_argument("--note", default="", help="the department's account of its check")
    return parser


# --- serve ----------------------------------------------------------------------


def _server_credentials(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    tls_given = [
        f"--{name.replace('_', '-')}"
        for name in ("tls_cert", "tls_key", "client_ca", "allow_client")
        if getattr(args, name)
    ]
    if args.insecure_dev_plaintext:
        if tls_given:
            raise ConfigError(tls_given[0], "cannot be combined with --insecure-dev-plaintext")
        return None
    missing = [
        f"--{name.replace('_', '-')}"
        for name in ("tls_cert", "tls_key", "client_ca")
        if not getattr(args, name)
    ]
    if missing:
        raise ConfigError(
            missing[0],
            "required: department adapters serve mutual TLS "
            "(or pass --insecure-dev-plaintext for local development)",
        )

    def read(path: Path, flag: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(flag, f"cannot read {path}: {exc.strerror}") from None

    return sdk.mtls_server_credentials(
        read(args.tls_cert, "--tls-cert"),
        read(args.tls_key, "--tls-key"),
        read(args.client_ca, "--client-ca"),
    )


async def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("--listen", "must be HOST:PORT, e.g. 127.0.0.1:7443 or [::1]:0")
    credentials = _server_credentials(args)
    if credentials is None:
        log.warning(
            "serving WITHOUT TLS (--insecure-dev-plaintext): anyone who can reach %s can "
            "query this department; for local development only",
            args.listen,
        )
    mapping = load_mapping(args.mapping)
    # Opening checks the mapping against the database: blocking, so in a thread.
    store = await asyncio.to_thread(SqlStore, mapping, args.db, workers=args.workers)
    try:
        server = await sdk.serve(
            store,
            args.listen,
            server_credentials=credentials,
            allowed_clients=(
                frozenset(args.allow_client or (sdk.FEDERATION_IDENTITY,))
                if credentials is not None
                else None
            ),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "department %s serving %d datasets from %s",
            mapping.department,
            len(mapping.datasets),
            args.db,
        )
        # The one line a parent process waits for.
        print(f"listening on {host}:{sdk.bound_port(server)}", flush=True)
        await stop.wait()
        log.info("draining (up to %.1f s)", args.grace)
        await sdk.shutdown(server, args.grace)
    finally:
        await store.close()
    return 0


# --- generate -------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> int:
    if args.subjects < 0:
        raise ConfigError("--subjects", "must not be negative")
    started = time.perf_counter()
    summary = synth.generate(args.out, seed=args.seed, subjects=args.subjects)
    elapsed = time.perf_counter() - started
    print(
        f"wrote {summary.enterprises} enterprises and {summary.persons} persons "
        f"(seed {args.seed}) to {summary.out_dir} in {elapsed:.2f} s"
    )
    for dept, rows in summary.rows.items():
        print(f"  {dept}.sqlite: {rows} rows  (mapping: {synth.sample_mapping(dept)})")
    print(f"  {summary.subjects_file.name}: sample subjects")
    return 0


# --- describe -------------------------------------------------------------------


def _describe(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    print(f"department {mapping.department}: {len(mapping.datasets)} datasets")
    for ds in mapping.datasets.values():
        extras = [f"record_id={ds.record_id}"]
        if ds.event_end_date:
            extras.append(f"event_end_date={ds.event_end_date}")
        if ds.disputed:
            extras.append(f"disputed={ds.disputed}")
        print(
            f"  {ds.name} ({ds.title}) [{', '.join(sorted(ds.subject_types))}] {' '.join(extras)}"
        )
        for f in ds.fields.values():
            print(f"    {f.name}: {f.type_name} <- {f.column}")
    status = 0
    if args.db is not None:
        store = SqlStore(mapping, args.db, workers=1, take_objections=False)
        asyncio.run(store.close())
        print(f"agrees with database {args.db}")
    if args.catalog is not None:
        from gateway.catalog import load_catalog

        catalog = load_catalog(Path(args.catalog) if args.catalog else None)
        problems = catalog_disagreements(mapping, catalog)
        for problem in problems:
            print(f"disagrees with catalog {catalog.version}: {problem}")
        if problems:
            status = 1
        else:
            print(f"agrees with catalog {catalog.version}")
    return status


# --- objection ------------------------------------------------------------------


def _objection(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    if mapping.objections_table is None:
        raise ConfigError("objections.table", "this mapping keeps no objections table")
    if not args.db.is_file():
        raise ConfigError("--db", f"no database file at {args.db}")
    try:
        table = ObjectionTable(args.db, mapping.objections_table)
    except sqlite3.Error as exc:
        raise ConfigError("--db", f"cannot open the objections table: {exc}") from None
    try:
        if args.action == "list":
            for oid, kind, dataset, record_id, due_on in table.pending():
                print(f"{oid}  {kind:9}  {dataset}  record {record_id}  due {due_on}")
            return 0
        if not table.answer(args.id, args.outcome, note=args.note):
            print(f"credit-adapter: error: no objection {args.id!r}", file=sys.stderr)
            return 1
        print(f"objection {args.id}: {args.outcome}")
        return 0
    finally:
        table.close()
