"""``credit-audit``: the auditors' tool for the gateway's audit log.

It needs only the standard library and ``cryptography``, so it can run on an
auditor's machine against a copy of the log (the SQLite file or an export
folder) and the log's public key::

    credit-audit keygen --name gateway.example/audit --private audit.key --public audit.pub
    credit-audit verify audit.db --key audit.pub [--checkpoint kept.note] [--allow-unsigned-tail]
    credit-audit verify audit.db --key audit.pub --workers 4 --progress   # large logs
    credit-audit export audit.db --key audit.pub --out exported/
    credit-audit export "postgresql://auditor@db.example/gateway" --key audit.pub \\
        --password-file pg.pass --out exported/    # the log many gateways share
    credit-audit prove audit.db --key audit.pub 42 [--size 512] > entry42.tlog-proof
    credit-audit check-proof entry42.tlog-proof --key audit.pub --leaf entry42.json
    credit-audit history audit.db --key audit.pub --subject-type person \\
        --subject 11010519491231002X --pseudonym-key pseudonym.key
    credit-audit who audit.db --key audit.pub --agency bank-001 --since 2025-01-01
    credit-audit digest response.bin     # the receipt's response_digest of a saved answer
    credit-audit check-report report.pdf --key audit.pub [--log audit.db]
    credit-audit check-report report.json --key audit.pub \\
        --log "postgresql://auditor@db.example/gateway" --password-file pg.pass

Exit status: 0 success, 1 verification failed (the one line printed names the
first bad index and why), 2 usage or I/O error. ``history`` and ``who`` verify
the whole log first and answer only from a log that verifies.

A ``postgresql://`` LOG (no password in it: ``--password-file`` or
``--password-env``) is read in one consistent snapshot; only that path imports
the PostgreSQL driver (psycopg), so verifying a file or an export still needs
nothing beyond the standard library and ``cryptography``.

``check-report`` verifies a signed credit report (the PDF, or its JSON form) offline: the
gateway's signatures (over the content and, for a PDF, over the whole file), the
verification code, and the inclusion proof of its audit receipt against a signed checkpoint;
with ``--log`` also that this copy of the log verifies and holds that checkpoint's tree.

Only what a signed checkpoint covers is verified. Records after the last
checkpoint (the unsigned tail: a live log's last second, a crashed log not yet
reopened, or a forged record appended to a copy) make ``verify`` fail, saying
how many, unless ``--allow-unsigned-tail``; ``history`` and ``who`` leave them
out and say how many they left out; ``export`` copies only signed records.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.checkpoint import TlogProof, open_checkpoint, verify_tlog_proof
from gateway.audit.digest import response_digest
from gateway.audit.errors import (
    AuditError,
    KeyFormatError,
    LogIntegrityError,
    NoteError,
    ProofError,
    StorageError,
)
from gateway.audit.note import generate_key, load_verifiers, write_key_files
from gateway.audit.progress import SHOW_FROM, Progress
from gateway.audit.records import (
    SUBJECT_TYPES,
    generate_pseudonym_key,
    load_pseudonym_key,
    pseudonymize,
    write_pseudonym_key,
)
from gateway.audit.reportcheck import ReportCheck, ReportError, check_report
from gateway.audit.schema import QueryRecord
from gateway.audit.store import LogReader
from gateway.audit.verify import MAX_WORKERS, PARALLEL_FROM, VerifyReport, verify_log
from gateway.cli.console import console_script
from gateway.domain.identifiers import IdentifierError, validate_subject
from gateway.stores.sqlite.audit import open_reader

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad arguments found after parsing (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credit-audit",
        description="Verify, export and query the credit-gateway audit log.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def password_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--password-file", metavar="FILE", help="PostgreSQL password, for a postgresql:// LOG"
        )
        p.add_argument(
            "--password-env", metavar="NAME", help="environment variable holding that password"
        )

    def with_log(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "log",
            metavar="LOG",
            help="the SQLite log file, an export folder or a postgresql:// URL (no password)",
        )
        p.add_argument("--key", required=True, metavar="FILE", help="verifier key file")
        password_options(p)
        p.add_argument(
            "--workers",
            type=int,
            metavar="N",
            help="processes that parse and hash records (default: one per CPU, at most "
            f"{MAX_WORKERS}, on logs of {PARALLEL_FROM:,} entries or more; 1 = this one)",
        )
        p.add_argument(
            "--progress",
            action="store_true",
            help=f"show progress on standard error even when it is not a terminal "
            f"(a terminal gets it on logs of {SHOW_FROM:,} entries or more)",
        )
        return p

    p = sub.add_parser("keygen", help="create a log signing key pair")
    p.add_argument("--name", required=True, help="key name = the log's origin")
    p.add_argument("--private", required=True, metavar="FILE", help="signer key (mode 0600)")
    p.add_argument("--public", required=True, metavar="FILE", help="verifier key")
    p.add_argument("--pseudonym-key", metavar="FILE", help="also create a pseudonym key")

    p = with_log("verify", "check every record, hash, checkpoint and signature")
    p.add_argument("--checkpoint", metavar="KEPT_FILE", help="a signed checkpoint kept earlier")
    p.add_argument("--strict", action="store_true", help="also check each record is canonical JSON")
    p.add_argument(
        "--allow-unsigned-tail",
        action="store_true",
        help="accept (but never count as verified) records after the last signed checkpoint",
    )

    p = with_log("export", "verify, then write the signed records, checkpoints and key")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty folder")

    p = with_log("prove", "write a c2sp.org/tlog-proof of one entry")
    p.add_argument("index", type=int, metavar="INDEX")
    p.add_argument("--size", type=int, metavar="N", help="checkpoint size (default: latest)")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")

    p = sub.add_parser("check-proof", help="check a tlog-proof against a leaf and the key")
    p.add_argument("proof", metavar="PROOF_FILE")
    p.add_argument("--key", required=True, metavar="FILE", help="verifier key file")
    p.add_argument("--leaf", required=True, metavar="LEAF_FILE", help="the exact record bytes")

    p = with_log("history", "who queried one subject, when, for what purpose")
    p.add_argument("--subject-type", required=True, choices=SUBJECT_TYPES)
    p.add_argument("--subject", required=True, metavar="ID", help="credit code or ID number")
    p.add_argument("--pseudonym-key", required=True, metavar="FILE")

    p = sub.add_parser(
        "digest",
        help="the receipt's response_digest of a QueryResponse saved as received (binary)",
    )
    p.add_argument("response", metavar="RESPONSE_FILE", help="protobuf bytes, any serialiser")

    p = sub.add_parser(
        "check-report",
        help="verify a signed credit report (PDF or JSON) and its audit receipt, offline",
    )
    p.add_argument("report", metavar="FILE", help="report.pdf or report.json")
    p.add_argument("--key", required=True, metavar="FILE", help="the log's verifier key file")
    p.add_argument(
        "--log",
        metavar="LOG",
        help="also check against this log: a SQLite file, an export folder or a "
        "postgresql:// URL (no password)",
    )
    password_options(p)

    p = with_log("who", "list one agency's queries")
    p.add_argument("--agency", required=True, metavar="AGENCY_ID")
    p.add_argument("--since", metavar="ISO8601", help="only queries at or after this time")
    return parser


def _verified(
    args: argparse.Namespace, reader: LogReader, *, allow_unsigned_tail: bool, **kw: Any
) -> VerifyReport:
    kept = None
    if getattr(args, "checkpoint", None):
        kept = Path(args.checkpoint).read_text(encoding="utf-8")
    strict = bool(getattr(args, "strict", False))
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise _UsageError(f"--workers must be 1 or more; got {workers}")
    return verify_log(
        reader,
        load_verifiers(args.key),
        kept=kept,
        strict=strict,
        allow_unsigned_tail=allow_unsigned_tail,
        on_progress=Progress("verifying", force=bool(getattr(args, "progress", False))),
        workers=workers,
        **kw,
    )


def _unsigned_note(report: VerifyReport, what: str) -> None:
    """Say on standard error what was left out because no signature covers it."""
    if report.unsigned:
        print(
            f"note: {report.unsigned} records after the last signed checkpoint "
            f"(indexes {report.verified_size}..{report.size - 1}) are not verified and {what}",
            file=sys.stderr,
        )


def _cmd_keygen(args: argparse.Namespace) -> int:
    skey, vkey = generate_key(args.name)
    write_key_files(skey, vkey, args.private, args.public)
    if args.pseudonym_key:
        write_pseudonym_key(args.pseudonym_key, generate_pseudonym_key())
    print(vkey)
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace, reader: LogReader) -> int:
    report = _verified(args, reader, allow_unsigned_tail=args.allow_unsigned_tail)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    root = base64.b64encode(report.latest.root_hash).decode() if report.latest else "-"
    tail = f"; {report.unsigned} later entries NOT verified" if report.unsigned else ""
    print(
        f"OK: {report.verified_size} entries, {report.checkpoints} checkpoints verified; "
        f"latest checkpoint: size {report.verified_size}, root {root}{tail}"
    )
    return EXIT_OK


def _cmd_export(args: argparse.Namespace, reader: LogReader) -> int:
    report = _verified(args, reader, allow_unsigned_tail=True)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise _UsageError(f"{out}: folder is not empty")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    with (out / "records.jsonl").open("wb") as f:
        for entry in reader.iter_entries():
            if entry.index >= report.verified_size:
                break  # unsigned: an export holds only what a signature covers
            # Canonical JSON escapes every control character, so a leaf never
            # contains a raw newline and one line is exactly one leaf.
            f.write(entry.leaf + b"\n")
    for cp in reader.checkpoints():
        (out / "checkpoints" / f"{cp.seq:08d}.note").write_text(cp.note, encoding="utf-8")
    (out / "verifier.key").write_text(Path(args.key).read_text(encoding="utf-8"), "utf-8")
    (out / "origin").write_text((report.origin or "") + "\n", encoding="utf-8")
    _unsigned_note(report, "were not exported")
    print(f"exported {report.verified_size} records and {report.checkpoints} checkpoints to {out}")
    return EXIT_OK


def _cmd_prove(args: argparse.Namespace, reader: LogReader) -> int:
    # Proofs are made against signed checkpoints only, so an unsigned tail
    # cannot be proved and need not stop proving what is signed.
    report = _verified(args, reader, allow_unsigned_tail=True)
    verifiers = load_verifiers(args.key)
    # The checkpoints were all verified above; pick the one to prove against.
    chosen = None
    for row in reversed(reader.checkpoints()):
        cp = open_checkpoint(row.note, verifiers)
        if (args.size is None and cp.size > args.index) or cp.size == args.size:
            chosen = (row.note, cp)
            break
    if chosen is None:
        want = f"of size {args.size}" if args.size is not None else "covering it"
        raise _UsageError(f"entry {args.index}: no signed checkpoint {want}")
    note, cp = chosen
    if not 0 <= args.index < cp.size:
        raise _UsageError(f"entry {args.index} is not in the checkpoint of size {cp.size}")
    proof = TlogProof(args.index, tuple(report.tree.inclusion_proof(args.index, cp.size)), note)
    if args.out:
        Path(args.out).write_text(proof.text(), encoding="utf-8")
    else:
        sys.stdout.write(proof.text())
    return EXIT_OK


def _cmd_check_proof(args: argparse.Namespace) -> int:
    text = Path(args.proof).read_text(encoding="utf-8")
    leaf = Path(args.leaf).read_bytes()
    # A leaf copied out of records.jsonl keeps its line end; canonical JSON
    # never ends in a newline, so dropping one is unambiguous.
    leaf = leaf.removesuffix(b"\n")
    cp = verify_tlog_proof(text, leaf, load_verifiers(args.key))
    index = TlogProof.parse(text).index
    print(f"OK: entry {index} is in {cp.origin} at tree size {cp.size}")
    return EXIT_OK


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    # Naive times are read as UTC, the log's own convention.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _queries(reader: LogReader, args: argparse.Namespace) -> list[tuple[int, QueryRecord]]:
    """The query records a signed checkpoint covers; the unsigned tail is left out."""
    found: list[tuple[int, QueryRecord]] = []

    def collect(index: int, record: dict[str, Any]) -> None:
        if record.get("kind") == QueryRecord.KIND:
            found.append((index, QueryRecord.from_json(record)))

    report = _verified(args, reader, allow_unsigned_tail=True, on_record=collect)
    _unsigned_note(report, "are not listed")
    return [(i, r) for i, r in found if i < report.verified_size]


def _print_queries(rows: Sequence[tuple[int, QueryRecord]], what: str) -> None:
    print(f"{len(rows)} {what}")
    if rows:
        print("index\ttime\tagency_id\tpurpose")
    for index, r in rows:
        print(f"{index}\t{r.time}\t{r.agency_id}\t{r.purpose}")


def _cmd_history(args: argparse.Namespace, reader: LogReader) -> int:
    key = load_pseudonym_key(args.pseudonym_key)
    try:
        # A mistyped identifier would match nothing and read as "0 queries".
        subject = validate_subject(args.subject_type, args.subject)
        pseudonym = pseudonymize(key, args.subject_type, subject)
    except IdentifierError as err:
        raise _UsageError(f"--subject: {err.problem}") from None
    rows = [(i, r) for i, r in _queries(reader, args) if r.subject_pseudonym == pseudonym]
    _print_queries(rows, f"queries about this {args.subject_type}")
    return EXIT_OK


def _cmd_who(args: argparse.Namespace, reader: LogReader) -> int:
    try:
        since = _parse_time(args.since) if args.since else None
    except ValueError:
        raise _UsageError(f"--since {args.since!r} is not an ISO 8601 time") from None
    rows = []
    for index, record in _queries(reader, args):
        if record.agency_id != args.agency:
            continue
        if since is not None:
            try:
                if _parse_time(record.time) < since:
                    continue
            except ValueError:
                pass  # a record without a readable time is listed, not hidden
        rows.append((index, record))
    _print_queries(rows, f"queries by {args.agency}")
    return EXIT_OK


def _open_log(args: argparse.Namespace) -> LogReader:
    """The log named on the command line (``LOG``, or ``--log`` of ``check-report``): the
    one reader every command uses. A ``postgresql://`` URL is read in one snapshot through
    psycopg, imported only here (verification offline never needs it).

    Raises :class:`_UsageError` for a password option without a ``postgresql://`` LOG or a
    URL that holds a password; :class:`StorageError` when the log cannot be read."""
    if not str(args.log).startswith(("postgresql://", "postgres://")):
        if args.password_file or args.password_env:
            raise _UsageError("--password-file and --password-env are for a postgresql:// LOG")
        return open_reader(args.log)
    # Imported here only: psycopg stays out of offline verification.
    from gateway.stores.postgres.audit import PostgresAuditStore
    from gateway.stores.postgres.url import PgConfigError, PgTarget

    try:
        target = PgTarget(
            url=args.log,
            password_file=Path(args.password_file) if args.password_file else None,
            password_env=args.password_env,
            application_name="credit-audit",
        )
    except PgConfigError as err:
        raise _UsageError(f"LOG: {err}") from None
    return PostgresAuditStore(target, snapshot=True)


def _cmd_check_report(args: argparse.Namespace) -> int:
    verifiers = load_verifiers(args.key)
    if not args.log and (args.password_file or args.password_env):
        raise _UsageError("--password-file and --password-env are for a postgresql:// --log")
    checked = check_report(Path(args.report).read_bytes(), verifiers)
    if args.log:
        reader = _open_log(args)
        try:
            _against_log(checked, verify_log(reader, verifiers, allow_unsigned_tail=True))
        finally:
            reader.close()
    content = checked.content
    cp = checked.checkpoint
    form = "PDF file and content signatures" if checked.pdf else "content signature"
    against = f"; the log {args.log} agrees" if args.log else ""
    print(
        f"OK: report {checked.verification_code} ({content.get('generated_at')}): {form} "
        f"verified; receipt entry {content['receipt']['log_index']} is in {cp.origin} "
        f"at tree size {cp.size}{against}"
    )
    return EXIT_OK


def _against_log(checked: ReportCheck, report: VerifyReport) -> None:
    """The report's checkpoint must be a view of this log: same tree at its size."""
    cp = checked.checkpoint
    if cp.size > report.size:
        raise ReportError(
            f"the log copy has {report.size} entries; the report's checkpoint covers {cp.size}"
        )
    if report.tree.root(cp.size) != cp.root_hash:
        raise ReportError(f"the log copy disagrees with the report's checkpoint (size {cp.size})")


_LOG_COMMANDS = {
    "verify": _cmd_verify,
    "export": _cmd_export,
    "prove": _cmd_prove,
    "history": _cmd_history,
    "who": _cmd_who,
}


def _run(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        return _cmd_keygen(args)
    if args.command == "check-proof":
        return _cmd_check_proof(args)
    if args.command == "check-report":
        return _cmd_check_report(args)
    if args.command == "digest":
        print(response_digest(Path(args.response).read_bytes()).hex())
        return EXIT_OK
    load_verifiers(args.key)  # a bad key file is a usage error, before any reading
    reader = _open_log(args)
    try:
        return _LOG_COMMANDS[args.command](args, reader)
    finally:
        reader.close()


@console_script
def main(argv: list[str] | None = None) -> int:
    """Run ``credit-audit`` with ``argv`` (default: the command line); returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on bad usage
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        return _run(args)
    except LogIntegrityError as err:
        print(f"FAILED: {err}", file=sys.stderr)
    except (ProofError, NoteError, ReportError) as err:
        print(f"FAILED: {err}", file=sys.stderr)
    except (StorageError, KeyFormatError, _UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except AuditError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # the reader went away: gateway.cli.console.console_script ends quietly
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
