"""``credit-gateway consent issue``: sign a consent token as a development consent issuer.

The token's shape and the rules the gateway holds it to are in :mod:`gateway.policy.consent`.
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli.console import path_arg
from gateway.domain.enums import SubjectType
from gateway.errors import ConfigError
from gateway.policy.consent import (
    CONSENT_ID,
    MAX_CONSENT_LIFETIME_S,
    MAX_CONSENT_USES,
    issue_consent,
    parse_scope,
)
from gateway.runtime.secretfile import write_secret

__all__ = ["consent_main"]


def consent_main(argv: list[str]) -> int:
    """``credit-gateway consent issue --issuer-key F --kid K --iss I --subject-type person
    --subject ID --grantee bank --purpose lending --scope pbccrc/personal_loans
    --scope tier:personal_privacy [--lifetime-days 90] [--aud A] [--cid C]
    [--max-uses N | --once] [--out F]``.

    Prints the token (or writes it to ``--out`` with mode 0600: whoever holds it may use the
    consent). Returns the exit status: 0 ok, 1 the key could not be used, 2 usage error.
    """
    parser = argparse.ArgumentParser(prog="credit-gateway consent")
    sub = parser.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="sign a consent token (development consent issuer)")
    issue.add_argument(
        "--issuer-key", type=path_arg, required=True, help="issuer private key (PEM)"
    )
    issue.add_argument("--kid", required=True, help="the key's kid in the issuer JWKS")
    issue.add_argument("--iss", required=True, help="consent issuer identifier")
    issue.add_argument(
        "--subject-type", required=True, choices=sorted(t.value for t in SubjectType)
    )
    issue.add_argument("--subject", required=True, help="identity number or USCC")
    issue.add_argument("--grantee", required=True, help="agency id the consent is given to")
    issue.add_argument("--purpose", required=True, help="purpose code")
    issue.add_argument(
        "--scope",
        action="append",
        required=True,
        help="dept/dataset, dept/* or tier:<tier>; repeat for several",
    )
    issue.add_argument("--lifetime-days", type=int, default=90)
    issue.add_argument("--aud", help="audience (the gateway), if the gateway requires one")
    issue.add_argument("--cid", help="consent id (default: a random UUID)")
    uses = issue.add_mutually_exclusive_group()
    uses.add_argument(
        "--max-uses", type=int, help="the consent allows N queries, then is spent (default: any)"
    )
    uses.add_argument("--once", action="store_true", help="a one-time consent (--max-uses 1)")
    issue.add_argument("--out", type=path_arg, help="write here instead of stdout")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    if not 0 < args.lifetime_days * 86400 <= MAX_CONSENT_LIFETIME_S:  # the verifier's limit
        print(
            f"credit-gateway consent: --lifetime-days must be 1 to "
            f"{MAX_CONSENT_LIFETIME_S // 86400} (the gateway refuses longer consents)",
            file=sys.stderr,
        )
        return 2
    max_uses = 1 if args.once else args.max_uses
    if max_uses is not None and not 0 < max_uses <= MAX_CONSENT_USES:
        print(
            f"credit-gateway consent: --max-uses must be 1 to {MAX_CONSENT_USES}", file=sys.stderr
        )
        return 2
    if args.cid is not None and CONSENT_ID.match(args.cid) is None:
        print("credit-gateway consent: --cid is malformed", file=sys.stderr)
        return 2
    try:
        parse_scope(args.scope)
    except ValueError as exc:
        print(f"credit-gateway consent: --scope: {exc}", file=sys.stderr)
        return 2
    try:
        token = issue_consent(
            args.issuer_key,
            args.kid,
            issuer=args.iss,
            subject_type=args.subject_type,
            subject_id=args.subject,
            grantee=args.grantee,
            purpose=args.purpose,
            scope=args.scope,
            lifetime_s=args.lifetime_days * 86400,
            audience=args.aud,
            cid=args.cid,
            max_uses=max_uses,
        )
    except ConfigError as exc:
        print(f"credit-gateway consent: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        print(token)
    else:
        write_secret(args.out, token)
    return 0
