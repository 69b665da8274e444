"""Development tokens that last as long as the federation: kept, refreshed, re-minted.

The development stack (:mod:`gateway.dev.devstack`) gives every principal of its PKI a
certificate-bound token file. A token lives at most an hour (the verifier's limit), while a
``demo --serve`` folder may be used for days; so:

* :func:`ensure_token` keeps a token file whose token still has ``min_remaining_s`` to run,
  is bound to the principal's certificate and names the same principal (and self-service
  subject); otherwise it mints a new one. ``demo --serve`` on an existing folder calls it, and
  its serve loop calls it every minute, so the files never run out;
* :func:`refresh_token` re-mints at once: same principal, same certificate binding (the
  thumbprint of the certificate file now), same ``subject`` claim, a new ``jti``, a full
  lifetime. The file is replaced atomically (0600), so a client reading it meanwhile sees
  the old token or the new one, never half of one;
* :func:`refresh_main` is ``credit-gateway token refresh --demo DIR/demo.json
  (--agency ID | --all)``.

The token files are the development issuer's: nothing here is for production, where an
agency's own issuer renews its tokens.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.auth.certs import cert_thumbprint_pem
from gateway.auth.tokens import MAX_LIFETIME_S, load_signing_key
from gateway.cli.console import path_arg
from gateway.dev.pki import DEV_AGENCY_ISSUER, Pki, load_pki
from gateway.errors import ConfigError
from gateway.runtime.secretfile import write_secret

__all__ = [
    "AUDIENCE",
    "REFRESH_BEFORE_S",
    "TokenSpec",
    "ensure_token",
    "refresh_main",
    "refresh_token",
    "token_expiry",
]

#: The development gateway's audience (``[auth] audience``).
AUDIENCE = "credit-gateway"
#: A token with less than this left (seconds) is re-minted by :func:`ensure_token`.
REFRESH_BEFORE_S = 600


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """Whom a token file is for: the principal (``sub``), its certificate file, and for the
    self-service kiosk the subject it attests (``{"type": ..., "id": ...}``)."""

    principal: str
    cert: Path
    subject: Mapping[str, str] | None = None


def mint(pki: Pki, spec: TokenSpec, *, lifetime_s: int = MAX_LIFETIME_S) -> str:
    """A new development-issuer token for ``spec`` (new ``jti``, issued now).

    Raises ConfigError (the issuer key or the certificate cannot be read)."""
    key, alg = load_signing_key(pki.agency_token.key())
    try:
        thumb = cert_thumbprint_pem(spec.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(spec.cert), f"cannot read certificate ({exc})") from None
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEV_AGENCY_ISSUER,
        "aud": AUDIENCE,
        "sub": spec.principal,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": str(uuid.uuid4()),
        "cnf": {"x5t#S256": thumb},
    }
    if spec.subject is not None:
        claims["subject"] = dict(spec.subject)
    headers = {"kid": pki.agency_token.signing_kid, "typ": "JWT"}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWS, unverified (our own file), or None if unreadable."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    return data if isinstance(data, dict) else None


def token_expiry(path: Path) -> int | None:
    """The ``exp`` of the token in ``path`` (Unix seconds), or None if absent or unreadable."""
    try:
        claims = _claims(path.read_text(encoding="utf-8").strip())
    except OSError:
        return None
    exp = None if claims is None else claims.get("exp")
    return exp if isinstance(exp, int) else None


def _write_atomically(path: Path, token: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    write_secret(partial, token)
    partial.replace(path)


def refresh_token(pki: Pki, spec: TokenSpec, path: Path) -> int:
    """Re-mint ``path`` for ``spec`` now; returns the new ``exp``. Raises ConfigError, OSError."""
    token = mint(pki, spec)
    _write_atomically(path, token)
    claims = _claims(token)
    assert claims is not None
    return int(claims["exp"])


def ensure_token(
    pki: Pki, spec: TokenSpec, path: Path, *, min_remaining_s: int = REFRESH_BEFORE_S
) -> bool:
    """Keep ``path`` if its token has ``min_remaining_s`` left and still names ``spec``
    (principal, certificate binding, subject); else re-mint it. Returns True if re-minted.

    Raises ConfigError, OSError (as :func:`refresh_token`)."""
    try:
        claims = _claims(path.read_text(encoding="utf-8").strip())
    except OSError:
        claims = None
    if claims is not None:
        exp = claims.get("exp")
        cnf = claims.get("cnf")
        try:
            thumb = cert_thumbprint_pem(spec.cert.read_bytes())
        except (OSError, ValueError):
            thumb = None
        still_good = (
            isinstance(exp, int)
            and exp - time.time() >= min_remaining_s
            and claims.get("sub") == spec.principal
            and isinstance(cnf, dict)
            and cnf.get("x5t#S256") == thumb
            and claims.get("subject") == (None if spec.subject is None else dict(spec.subject))
        )
        if still_good:
            return False
    refresh_token(pki, spec, path)
    return True


#: demo.json's tables of principals, each ``{id: {"cert", "key", "token_file"}}``.
DEMO_TABLES = ("agencies", "officers", "auditors", "finance")


def _demo_specs(demo: Mapping[str, Any]) -> dict[str, tuple[TokenSpec, Path]]:
    specs: dict[str, tuple[TokenSpec, Path]] = {}
    for table in DEMO_TABLES:
        for principal, entry in demo.get(table, {}).items():
            subject = entry.get("subject")
            spec = TokenSpec(principal, Path(entry["cert"]), subject)
            specs.setdefault(principal, (spec, Path(entry["token_file"])))
    return specs


def refresh_main(argv: list[str]) -> int:
    """``credit-gateway token refresh --demo DIR/demo.json (--agency ID | --all)
    [--if-expiring-within S]``: re-mint development tokens before they expire.

    ``--agency`` names any principal of demo.json (agency, officer, auditor, finance).
    Prints one line per token (never the token). Returns 0 done, 1 a file could not be
    used, 2 usage error.
    """
    parser = argparse.ArgumentParser(
        prog="credit-gateway token refresh",
        description="re-mint demo tokens: same certificate binding, new jti, full lifetime",
    )
    parser.add_argument(
        "--demo", type=path_arg, required=True, help="demo.json of 'credit-gateway demo --serve'"
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--agency", help="one principal's id (agency, officer, auditor, finance)")
    who.add_argument("--all", action="store_true", help="every token of demo.json")
    parser.add_argument(
        "--if-expiring-within",
        type=int,
        metavar="S",
        help="only tokens with less than S seconds left (default: re-mint now)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        try:
            demo = json.loads(args.demo.read_text(encoding="utf-8"))
            specs = _demo_specs(demo)
            pki = load_pki(Path(demo.get("pki") or Path(demo["ca_cert"]).parent))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(str(args.demo), f"not a usable demo.json ({exc!r})") from None
        if args.agency is not None and args.agency not in specs:
            print(
                f"credit-gateway token refresh: --agency: no principal {args.agency!r} in"
                f" {args.demo} (one of: {', '.join(sorted(specs))})",
                file=sys.stderr,
            )
            return 2
        chosen = sorted(specs) if args.all else [args.agency]
        for principal in chosen:
            spec, path = specs[principal]
            if args.if_expiring_within is not None:
                if not ensure_token(pki, spec, path, min_remaining_s=args.if_expiring_within):
                    print(f"{principal}: kept, expires {_when(token_expiry(path))}")
                    continue
                exp = token_expiry(path)
            else:
                exp = refresh_token(pki, spec, path)
            print(f"{principal}: refreshed, expires {_when(exp)}")
    except ConfigError as exc:
        print(f"credit-gateway token refresh: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"credit-gateway token refresh: cannot write a token file ({exc})", file=sys.stderr)
        return 1
    return 0


def _when(exp: int | None) -> str:
    if exp is None:
        return "(unknown)"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
