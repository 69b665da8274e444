"""A federation that lasts: a kept folder keeps its keys, data and tokens; the replay store
survives the restart; ``credit-gateway token refresh`` re-mints before expiry."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from gateway.auth.tokens import load_signing_key
from gateway.cli.connect import QueryClient
from gateway.cli.gateway import main as gateway_main
from gateway.dev.devstack import AUDIENCE, DevStack, mint_token
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


async def test_two_gateway_processes_share_the_replay_store(tmp_path: Path) -> None:
    """A jti first used through one gateway is refused with another token string through a
    second gateway process naming the same replay store; the same string works in both."""
    async with await DevStack.create(tmp_path / "demo", subjects=SUBJECTS) as stack:
        toml = stack.config_path.read_text()
        second = tmp_path / "second"
        second.mkdir()
        audit_log = str(stack.audit["log"])
        for old, new in [
            (audit_log, str(second / "audit.sqlite")),
            (str(stack.workdir / "policy-versions.sqlite"), str(second / "policy.sqlite")),
            (str(stack.workdir / "ledger.sqlite"), str(second / "ledger.sqlite")),
        ]:
            assert old in toml
            toml = toml.replace(old, new)
        assert str(stack.workdir / "replay.sqlite") in toml  # shared
        (second / "gateway.toml").write_text(toml)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli.gateway", "--log-level", "WARNING",
            "serve", "--config", str(second / "gateway.toml"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert "serving on" in line, line
            address = line.split()[-1]
            other = replace(stack, gateway=_Address(address))  # type: ignore[arg-type]

            first = mint_token(stack.pki, "ndrc", stack.pki.agency_cert("ndrc"))
            await query(stack, "ndrc", first)
            await query(other, "ndrc", first)  # the same string: reuse, in either process
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await query(other, "ndrc", resigned(stack, first))
            assert "replayed" in (info.value.details() or "")

            fresh = mint_token(stack.pki, "ndrc", stack.pki.agency_cert("ndrc"))
            await query(other, "ndrc", fresh)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await query(stack, "ndrc", resigned(stack, fresh))
            assert "replayed" in (info.value.details() or "")
        finally:
            proc.terminate()
            await proc.wait()


class _Address:
    def __init__(self, address: str) -> None:
        self.address = address
