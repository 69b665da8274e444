"""``credit-gateway policy``: the policy workflow for security officers, over gRPC.

::

    credit-gateway policy --demo DIR/demo.json --officer officer_a list
    credit-gateway policy ... draft --policy my-policy.csv --reason "bank: tax arrears"
    credit-gateway policy ... validate 2
    credit-gateway policy ... test 2
    credit-gateway policy ... diff 2 [--base 1] [--with-consent]
    credit-gateway policy ... replay 2 [--last 100]
    credit-gateway policy --demo DIR/demo.json --officer officer_b approve 2 --reason "reviewed"
    credit-gateway policy ... activate 2 --reason "ticket 4711"
    credit-gateway policy ... rollback 1 --reason "bank complaints"
    credit-gateway policy ... show 2 [--file policy.csv]

Connection: ``--demo demo.json --officer ID`` (written by ``credit-gateway demo --serve``),
or ``--gateway HOST:PORT --ca CA --cert CERT --key KEY --token-file JWT`` (an officer's
certificate and token), or ``--gateway HOST:PORT --dev-officer ID`` against a gateway in
insecure development mode. The connection options go before or after the command; with
``--demo``, a connection flag given explicitly wins. Times printed are UTC (``Z``).
``draft`` uploads the files named; the others are taken from the
active version. Exit status: 0 done; 1 validation problems, test failures, or a refusal by
the gateway (its code and message are printed on one line); 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from gateway.api.policy_admin import DEV_OFFICER_HEADER
from gateway.cli.connect import UsageError, add_connection_options, connect_as
from gateway.cli.console import path_arg
from protos.credit.v1 import policy_admin_pb2, policy_admin_pb2_grpc

__all__ = ["policy_main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_FILE_OPTIONS = {
    "model": "model.conf",
    "policy": "policy.csv",
    "catalog": "catalog.toml",
    "prices": "prices.toml",
    "agencies": "agencies.toml",
    "limits": "limits.toml",
    "measures": "measures.toml",
}
_STATE = {
    policy_admin_pb2.CHECK_STATE_NOT_RUN: "-",
    policy_admin_pb2.CHECK_STATE_PASSED: "pass",
    policy_admin_pb2.CHECK_STATE_FAILED: "FAIL",
}


#: The demo.json member flags (see gateway.cli.connect.add_connection_options).
_MEMBERS = {"officer": "with --demo: which officer to act as"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway policy",
        description="Draft, check, approve and activate policy versions (security officers).",
    )
    add_connection_options(p, None, members=_MEMBERS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="every version, newest first")
    s = sub.add_parser("show", help="one version; with --file, print that file")
    s.add_argument("version", type=int)
    s.add_argument("--file", help="print this file of the version (e.g. policy.csv)")

    s = sub.add_parser("draft", help="upload files as a new version")
    for option, name in _FILE_OPTIONS.items():
        s.add_argument(f"--{option}", type=path_arg, help=f"the new {name}")
    s.add_argument(
        "--test",
        type=path_arg,
        action="append",
        default=[],
        help="extra test case file (repeatable)",
    )
    s.add_argument("--reason", required=True, help="why the policy changes")

    for name, text in (
        ("validate", "parse and check references"),
        ("test", "run the policy test matrix"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("version", type=int)

    s = sub.add_parser("diff", help="fields each agency would gain or lose")
    s.add_argument("version", type=int)
    s.add_argument("--base", type=int, default=0, help="compare with this version (default active)")
    s.add_argument("--with-consent", action="store_true", help="also with a full-scope consent")

    s = sub.add_parser("replay", help="re-decide the latest audited queries under a version")
    s.add_argument("version", type=int)
    s.add_argument("--last", type=int, default=100, help="how many queries (default 100)")

    for name, text in (
        ("approve", "approve another officer's version"),
        ("activate", "make an approved, valid, tested version active now"),
        ("rollback", "re-activate an earlier version"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("version", type=int)
        s.add_argument("--reason", required=True)
    for s in sub.choices.values():
        # SUPPRESS: an option given before the command is not reset by the command's default.
        add_connection_options(s, argparse.SUPPRESS, members=_MEMBERS)
    return p


def _connect(args: argparse.Namespace) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    return connect_as(args, group="officers", flag="officer", dev_header=DEV_OFFICER_HEADER)


def _line(v: policy_admin_pb2.VersionInfo) -> str:
    approved = f"approved by {v.approved_by}" if v.approved_by else "not approved"
    mark = "*" if v.active else " "
    return (
        f"{mark}{v.number:>4}  {v.created_at.ToDatetime():%Y-%m-%d %H:%M:%S}Z  by {v.author:<12}"
        f" {approved:<24} validate {_STATE.get(v.validated, '-'):<4} test "
        f"{_STATE.get(v.tested, '-'):<4}  {v.reason}"
    )


def _files(args: argparse.Namespace) -> list[policy_admin_pb2.PolicyFile]:
    files: list[policy_admin_pb2.PolicyFile] = []
    for option, name in _FILE_OPTIONS.items():
        path: Path | None = getattr(args, option)
        if path is not None:
            files.append(policy_admin_pb2.PolicyFile(name=name, content=path.read_text("utf-8")))
    for path in args.test:
        files.append(
            policy_admin_pb2.PolicyFile(name=f"tests/{path.name}", content=path.read_text("utf-8"))
        )
    if not files:
        raise UsageError("draft: name at least one file (--policy, --model, ...)")
    return files


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    channel, metadata = _connect(args)
    stub = policy_admin_pb2_grpc.PolicyAdminStub(channel)
    kw: dict[str, Any] = {"metadata": metadata, "timeout": args.timeout}
    P = policy_admin_pb2
    try:
        cmd = args.command
        if cmd == "list":
            listed = await stub.ListVersions(P.ListVersionsRequest(), **kw)
            for v in listed.versions:
                print(_line(v), file=out)
            return EXIT_OK
        if cmd == "show":
            got = await stub.GetVersion(P.VersionRequest(version=args.version), **kw)
            if args.file:
                for f in got.files:
                    if f.name == args.file:
                        out.write(f.content)
                        return EXIT_OK
                raise UsageError(f"version {args.version} has no file {args.file}")
            print(_line(got.version), file=out)
            print(f"  content sha256 {got.version.content_hash}", file=out)
            print(f"  files: {', '.join(f.name for f in got.files)}", file=out)
            return EXIT_OK
        if cmd == "draft":
            drafted = await stub.Draft(P.DraftRequest(files=_files(args), reason=args.reason), **kw)
            print(f"drafted version {drafted.version.number}", file=out)
            print(_line(drafted.version), file=out)
            return EXIT_OK
        if cmd == "validate":
            checked = await stub.Validate(P.VersionRequest(version=args.version), **kw)
            for problem in checked.problems:
                print(f"problem: {problem}", file=out)
            verdict = "invalid" if checked.problems else "valid"
            print(f"version {args.version}: {verdict}", file=out)
            return EXIT_FAILED if checked.problems else EXIT_OK
        if cmd == "test":
            tested = await stub.Test(P.VersionRequest(version=args.version), **kw)
            for failure in tested.failures:
                print(f"FAIL {failure}", file=out)
            print(
                f"version {args.version}: {tested.cases} cases, {len(tested.failures)} failures",
                file=out,
            )
            return EXIT_FAILED if tested.failures else EXIT_OK
        if cmd == "diff":
            diff = await stub.Diff(
                P.DiffRequest(version=args.version, base=args.base, with_consent=args.with_consent),
                **kw,
            )
            print(f"version {diff.base} -> {diff.version}: {diff.compared} combinations", file=out)
            for c in diff.changes:
                consent = " with consent" if c.consent else ""
                print(f"{c.agency} / {c.purpose} / {c.mode} / {c.subject_type}{consent}:", file=out)
                for field in c.visible:
                    print(f"  + {field}", file=out)
                for field in c.hidden:
                    print(f"  - {field}", file=out)
            if not diff.changes:
                print("no agency sees anything differently", file=out)
            return EXIT_OK
        if cmd == "replay":
            replay = await stub.Replay(P.ReplayRequest(version=args.version, last=args.last), **kw)
            print(
                f"version {replay.version}: {replay.replayed} queries replayed, "
                f"{len(replay.flips)} would be decided differently",
                file=out,
            )
            for fl in replay.flips:
                print(
                    f"  #{fl.log_index} {fl.request_id} {fl.agency} {fl.purpose} {fl.mode} "
                    f"{fl.subject_type} (decided under {fl.decided_under})",
                    file=out,
                )
                for field in fl.granted:
                    print(f"    + {field}", file=out)
                for field in fl.denied:
                    print(f"    - {field}", file=out)
            return EXIT_OK
        if cmd == "approve":
            approved = await stub.Approve(
                P.ApproveRequest(version=args.version, reason=args.reason), **kw
            )
            print(f"approved version {args.version}", file=out)
            print(_line(approved.version), file=out)
            return EXIT_OK
        # activate | rollback
        call = stub.Activate if cmd == "activate" else stub.Rollback
        done = await call(P.ActivateRequest(version=args.version, reason=args.reason), **kw)
        verb = "activated" if cmd == "activate" else "rolled back to"
        print(
            f"{verb} version {args.version} (was {done.previous}); queries now carry "
            f"policy_version {done.policy_version}",
            file=out,
        )
        return EXIT_OK
    finally:
        await channel.close()


def policy_main(
    argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``credit-gateway policy`` command; returns the exit status. Never raises for
    a refusal, a bad argument or an unreachable gateway: it prints one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse exits on --help and on bad usage
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        return asyncio.run(_run(args, out))
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # the reader went away: gateway.cli.console.console_script ends quietly
    except OSError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        print(f"error: {code.name if code else 'UNKNOWN'}: {exc.details()}", file=err)
        return EXIT_USAGE if code == grpc.StatusCode.UNAVAILABLE else EXIT_FAILED
