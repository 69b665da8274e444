"""A federation that lasts: a kept folder keeps its keys, data and tokens; the replay store
survives the restart; ``credit-gateway token refresh`` re-mints before expiry."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from gateway.auth.tokens import load_signing_key
from gateway.cli.connect import QueryClient
from gateway.cli.gateway import main as gateway_main
from gateway.dev.devstack import AUDIENCE, DevStack
from gateway.dev.pki import DEV_AGENCY_ISSUER
from gateway.dev.tokens import refresh_main
from tests.integration.conftest import SUBJECTS, subject

pytestmark = pytest.mark.asyncio(loop_scope="function")


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


def client(stack: DevStack, agency: str, token: str) -> QueryClient:
    return QueryClient.connect(
        stack.gateway.address,
        ca=stack.pki.ca_cert.read_bytes(),
        cert=stack.pki.agency_cert(agency).read_bytes(),
        key=stack.pki.agency_key(agency).read_bytes(),
        token=token,
    )


async def query(stack: DevStack, agency: str, token: str) -> None:
    async with client(stack, agency, token) as c:
        await c.query(
            enterprise=subject(stack, "enterprise_clean"), purpose="supervision_inspection"
        )


def resigned(stack: DevStack, token: str) -> str:
    """The same claims (jti included) signed again: another string, the same jti."""
    key, alg = load_signing_key(stack.pki.agency_token.key())
    body = claims(token)
    body["iat"] -= 1
    body["exp"] -= 1
    headers = {"kid": stack.pki.agency_token.signing_kid, "typ": "JWT"}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


async def test_a_kept_folder_keeps_keys_data_and_tokens_and_refuses_replays(
    tmp_path: Path,
) -> None:
    work = tmp_path / "demo"
    async with await DevStack.create(work, subjects=SUBJECTS) as stack:
        ca = stack.pki.ca_cert.read_bytes()
        tokens = {p: p.read_text() for p in stack.token_specs()}
        data_mtime = (stack.data_dir / "tax.sqlite").stat().st_mtime_ns
        ndrc = stack.tokens["ndrc"].read_text().strip()
        await query(stack, "ndrc", ndrc)
        copy = resigned(stack, ndrc)
        audit_size = stack.audit["log"].stat().st_size
        # A short-lived token is re-minted at the next start; the others are kept.
        short = claims(ndrc) | {"exp": int(time.time()) + 60, "jti": "short-lived"}
        key, alg = load_signing_key(stack.pki.agency_token.key())
        headers = {"kid": stack.pki.agency_token.signing_kid, "typ": "JWT"}
        stack.tokens["bank"].write_text(jwt.encode(short, key, algorithm=alg, headers=headers))

    async with await DevStack.create(work, subjects=SUBJECTS) as stack:
        assert stack.pki.ca_cert.read_bytes() == ca
        assert (stack.data_dir / "tax.sqlite").stat().st_mtime_ns == data_mtime
        assert stack.audit["log"].stat().st_size >= audit_size
        for path, text in tokens.items():
            if path.name != "bank.jwt":
                assert path.read_text() == text, path.name
        bank = claims(stack.tokens["bank"].read_text().strip())
        assert bank["jti"] != "short-lived" and bank["exp"] > time.time() + 3000
        # After the restart: the agency's own token still works (reuse) ...
        await query(stack, "ndrc", ndrc)
        # ... and a copy with its jti, never seen by this process, is refused (the store).
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await query(stack, "ndrc", copy)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "replayed" in (info.value.details() or "")


async def test_token_refresh_and_every_role_in_demo_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with await DevStack.create(tmp_path / "demo", subjects=SUBJECTS) as stack:
        demo = tmp_path / "demo.json"
        described = stack.describe()
        demo.write_text(json.dumps(described))
        assert set(described["finance"]) == {"finance"}
        assert set(described["auditors"]) == {"auditor"}
        kiosk = described["agencies"]["self_service"]
        assert kiosk["subject"] == {"type": "person", "id": described["examples"]["person"]}
        kiosk_claims = claims(Path(kiosk["token_file"]).read_text().strip())
        assert kiosk_claims["subject"] == kiosk["subject"]
        for table in ("finance", "auditors", "officers"):
            for entry in described[table].values():
                assert claims(Path(entry["token_file"]).read_text().strip())["iss"] == (
                    DEV_AGENCY_ISSUER
                )

        old = stack.tokens["ndrc"].read_text().strip()
        capsys.readouterr()
        assert gateway_main(["token", "refresh", "--demo", str(demo), "--agency", "ndrc"]) == 0
        out = capsys.readouterr().out
        new = stack.tokens["ndrc"].read_text().strip()
        assert out.startswith("ndrc: refreshed, expires ") and new not in out
        assert new != old
        assert claims(new)["jti"] != claims(old)["jti"]
        assert claims(new)["cnf"] == claims(old)["cnf"]  # the same certificate binding
        assert claims(new)["aud"] == AUDIENCE
        await query(stack, "ndrc", new)
        await query(stack, "ndrc", old)  # the old one keeps working until it expires

        # The kiosk's subject claim survives a refresh.
        assert refresh_main(["--demo", str(demo), "--all"]) == 0
        assert claims(Path(kiosk["token_file"]).read_text().strip())["subject"] == kiosk["subject"]
        # --if-expiring-within keeps tokens with time left.
        kept = stack.tokens["bank"].read_text()
        assert refresh_main(["--demo", str(demo), "--all", "--if-expiring-within", "600"]) == 0
        assert stack.tokens["bank"].read_text() == kept

        capsys.readouterr()
        assert refresh_main(["--demo", str(demo), "--agency", "nobody"]) == 2
        assert "no principal 'nobody'" in capsys.readouterr().err
        assert refresh_main(["--demo", str(tmp_path / "missing.json"), "--all"]) == 1
        assert refresh_main(["--demo", str(demo)]) == 2  # --agency or --all
