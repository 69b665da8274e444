"""``credit-gateway controls``: live security controls over gRPC (``credit.v1.SecurityControls``).

::

    credit-gateway controls --demo DIR/demo.json --officer officer_a suspend bank_x --reason R
    credit-gateway controls ... reinstate bank_x --reason "new key issued"   # asks (officer_a)
    credit-gateway controls --demo DIR/demo.json --officer officer_b reinstate bank_x  # approves
    credit-gateway controls ... revoke-cert --serial 4f:1a:... | --thumbprint T | --crl ca.crl
    credit-gateway controls ... revoke-consent CID [--on-behalf-of issuer|subject] [--reason R]
    credit-gateway controls ... status CID
    credit-gateway controls --demo DIR/demo.json --agency self_service revoke-my-consent \\
        --consent-file consent.jwt

Connection: as ``credit-gateway policy``: ``--demo demo.json --officer ID`` (or ``--agency ID``
for ``revoke-my-consent``: a subject's self-service agency), or ``--gateway HOST:PORT --ca CA
--cert CERT --key KEY --token-file JWT``, or ``--gateway HOST:PORT --dev-officer ID`` against a
gateway in insecure development mode. Times printed are UTC (``Z``). Exit status: 0 done; 1 a
refusal by the gateway (its code and message on one line); 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.api.policy_admin import DEV_OFFICER_HEADER
from gateway.cli.connect import UsageError, add_connection_options, connect_as
from gateway.cli.console import path_arg
from protos.credit.v1 import controls_pb2, controls_pb2_grpc

__all__ = ["controls_main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_STATE_NAMES = {
    controls_pb2.CONSENT_STATE_UNSEEN: "unseen (never used here, not revoked)",
    controls_pb2.CONSENT_STATE_LIVE: "live",
    controls_pb2.CONSENT_STATE_EXPIRED: "expired",
    controls_pb2.CONSENT_STATE_REVOKED: "revoked",
    controls_pb2.CONSENT_STATE_SPENT: "spent",
}


#: The demo.json member flags (see gateway.cli.connect.add_connection_options).
_MEMBERS = {
    "officer": "with --demo: which officer to act as",
    "agency": "with --demo, for revoke-my-consent: which agency",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="credit-gateway controls",
        description="Suspend, reinstate and revoke while the gateway serves (security officers).",
    )
    add_connection_options(p, None, members=_MEMBERS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("suspend", help="suspend an agency now (one officer suffices)")
    s.add_argument("agency_id")
    s.add_argument("--reason", required=True, help="why")
    s = sub.add_parser(
        "reinstate", help="ask for an agency's reinstatement, or approve one (a second officer)"
    )
    s.add_argument("agency_id")
    s.add_argument("--reason", default="", help="why (required when asking)")
    s = sub.add_parser("revoke-cert", help="revoke a client certificate, or a CRL's serials")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", help="hex serial (0x and colons allowed)")
    which.add_argument("--thumbprint", help="SHA-256 thumbprint (base64url or hex)")
    which.add_argument("--crl", type=path_arg, help="a CRL file (DER or PEM) of the federation CA")
    s.add_argument("--reason", default="")
    s = sub.add_parser("revoke-consent", help="revoke a consent by id (officer)")
    s.add_argument("consent_id")
    s.add_argument("--on-behalf-of", choices=("issuer", "subject"), default="issuer")
    s.add_argument("--reason", default="")
    s = sub.add_parser(
        "revoke-my-consent", help="a subject revokes its consent (self-service agency)"
    )
    s.add_argument("--consent-file", type=path_arg, required=True, help="the consent token")
    s.add_argument("--reason", default="")
    s = sub.add_parser("status", help="whether a consent is live, expired, revoked or spent")
    s.add_argument("consent_id")
    for s in sub.choices.values():
        add_connection_options(s, argparse.SUPPRESS, members=_MEMBERS)
    return p


def _connect(args: argparse.Namespace) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    if args.command == "revoke-my-consent":  # the subject, through the self-service agency
        return connect_as(args, group="agencies", flag="agency", dev_header=DEV_OFFICER_HEADER)
    return connect_as(args, group="officers", flag="officer", dev_header=DEV_OFFICER_HEADER)


def _time(ts: Timestamp) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    channel, metadata = _connect(args)
    stub = controls_pb2_grpc.SecurityControlsStub(channel)
    kw: dict[str, Any] = {"metadata": metadata, "timeout": args.timeout}
    C = controls_pb2
    try:
        cmd = args.command
        if cmd == "suspend":
            s = await stub.SuspendAgency(
                C.SuspendAgencyRequest(agency_id=args.agency_id, reason=args.reason), **kw
            )
            what = "suspended" if s.newly else "already suspended"
            print(f"{args.agency_id} {what} since {_time(s.suspended_at)}", file=out)
        elif cmd == "reinstate":
            r = await stub.ReinstateAgency(
                C.ReinstateAgencyRequest(agency_id=args.agency_id, reason=args.reason), **kw
            )
            if r.state == C.REINSTATEMENT_STATE_PENDING:
                print(
                    f"reinstatement of {args.agency_id} asked; a second officer must approve it",
                    file=out,
                )
            else:
                print(
                    f"{args.agency_id} reinstated (asked by {r.requested_by}, approved now)",
                    file=out,
                )
        elif cmd == "revoke-cert":
            req = C.RevokeCertificateRequest(reason=args.reason)
            if args.serial:
                req.serial = args.serial
            elif args.thumbprint:
                req.thumbprint = args.thumbprint
            else:
                req.crl = args.crl.read_bytes()
            c = await stub.RevokeCertificate(req, **kw)
            print(f"{c.newly_revoked} of {c.listed} certificate(s) newly revoked", file=out)
        elif cmd in ("revoke-consent", "revoke-my-consent"):
            if cmd == "revoke-consent":
                done = await stub.RevokeConsent(
                    C.RevokeConsentRequest(
                        consent_id=args.consent_id,
                        on_behalf_of=args.on_behalf_of,
                        reason=args.reason,
                    ),
                    **kw,
                )
            else:
                token = args.consent_file.read_text(encoding="utf-8").strip()
                done = await stub.RevokeMyConsent(
                    C.RevokeMyConsentRequest(consent_token=token, reason=args.reason), **kw
                )
            what = "revoked" if done.newly else "already revoked"
            print(f"consent {done.consent_id} {what} since {_time(done.revoked_at)}", file=out)
        else:  # status
            st = await stub.ConsentStatus(C.ConsentStatusRequest(consent_id=args.consent_id), **kw)
            line = f"consent {st.consent_id}: {_STATE_NAMES.get(st.state, 'unknown')}"
            if st.HasField("revoked_at"):
                line += f" since {_time(st.revoked_at)} (by {st.revoked_via})"
            limit = f" of {st.max_uses}" if st.max_uses else ""
            line += f"; used {st.uses}{limit} time(s)"
            if st.HasField("last_used"):
                line += f", last {_time(st.last_used)}"
            if st.HasField("expires_at"):
                line += f"; expires {_time(st.expires_at)}"
            print(line, file=out)
        return EXIT_OK
    finally:
        await channel.close()


def controls_main(
    argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``credit-gateway controls`` command; returns the exit status. Never raises for
    a refusal, a bad argument or an unreachable gateway: it prints one line on ``err``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        return asyncio.run(_run(args, out))
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        print(f"error: {code.name if code else 'UNKNOWN'}: {exc.details()}", file=err)
        return EXIT_USAGE if code == grpc.StatusCode.UNAVAILABLE else EXIT_FAILED
