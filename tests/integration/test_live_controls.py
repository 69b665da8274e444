"""Live security controls across TWO gateway processes sharing the policy and controls stores.

Gateway A is the development stack's (in this process); gateway B is a separate
``credit-gateway serve`` process on the same configuration except its port, its own audit log
(one writer per log) and no billing. A suspension, a certificate revocation or a consent
revocation made through one is refused by the other on its very next request; a reinstatement
takes a second officer; every action, refused ones too, is a signed ``controls`` record; a
one-time or N-use consent is spent exactly, under concurrent queries through both processes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.auth.tokens import load_signing_key
from gateway.billing.reconcile import read_records
from gateway.cli.connect import QueryClient, open_channel
from gateway.dev.devstack import AUDIENCE, DevStack, ensure_audit_keys, mint_token
from gateway.dev.pki import DEV_AGENCY_ISSUER, cert_thumbprint_pem, issue_crl
from protos.credit.v1 import controls_pb2, controls_pb2_grpc, query_pb2
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
C = controls_pb2
OK = query_pb2.SECTION_STATUS_OK


@dataclass
class Pair:
    stack: DevStack
    b_address: str
    b_audit: Path

    @property
    def a_address(self) -> str:
        return self.stack.gateway.address

    def officer(self, address: str, officer: str) -> controls_pb2_grpc.SecurityControlsStub:
        cert = self.stack.pki.officer_cert(officer)
        channel, metadata = open_channel(
            address,
            ca=self.stack.pki.ca_cert.read_bytes(),
            cert=cert.read_bytes(),
            key=self.stack.pki.officer_key(officer).read_bytes(),
            token=mint_token(self.stack.pki, officer, cert),
        )
        return _Stub(channel, metadata)  # type: ignore[return-value]

    def agency(self, address: str, agency: str, subject: tuple[str, str] | None = None) -> Any:
        pki = self.stack.pki
        cert = pki.agency_cert(agency)
        if subject is None:
            token = mint_token(pki, agency, cert)
        else:
            token = _self_service_token(self.stack, agency, cert.read_bytes(), subject)
        return QueryClient.connect(
            address,
            ca=pki.ca_cert.read_bytes(),
            cert=cert.read_bytes(),
            key=pki.agency_key(agency).read_bytes(),
            token=token,
        )

    def controls_as_agency(
        self, address: str, agency: str, subject: tuple[str, str]
    ) -> controls_pb2_grpc.SecurityControlsStub:
        pki = self.stack.pki
        cert = pki.agency_cert(agency)
        channel, metadata = open_channel(
            address,
            ca=pki.ca_cert.read_bytes(),
            cert=cert.read_bytes(),
            key=pki.agency_key(agency).read_bytes(),
            token=_self_service_token(self.stack, agency, cert.read_bytes(), subject),
        )
        return _Stub(channel, metadata)  # type: ignore[return-value]

    def controls_records(self) -> list[dict[str, Any]]:
        out = []
        for log in (self.stack.audit["log"], self.b_audit):
            signed, unsigned = read_records(log)
            out += [r for r in signed + unsigned if r.get("kind") == "controls"]
        return out


class _Stub:
    """A SecurityControls stub that sends the caller's metadata on every call."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = controls_pb2_grpc.SecurityControlsStub(channel)
        self._metadata = metadata
        self.channel = channel

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        async def call(request: Any) -> Any:
            return await method(request, metadata=self._metadata, timeout=10)

        return call


def _self_service_token(stack: DevStack, agency: str, cert: bytes, subject: tuple[str, str]) -> str:
    key, alg = load_signing_key(stack.pki.agency_token.key())
    now = int(time.time())
    claims = {
        "iss": DEV_AGENCY_ISSUER,
        "aud": AUDIENCE,
        "sub": agency,
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "cnf": {"x5t#S256": cert_thumbprint_pem(cert)},
        "subject": {"type": subject[0], "id": subject[1]},
    }
    headers = {"kid": stack.pki.agency_token.signing_kid, "typ": "JWT"}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_b(stack: DevStack, port: int) -> tuple[Path, Path]:
    """Gateway A's configuration with another port, its own audit log, no billing."""
    audit = ensure_audit_keys(stack.workdir / "audit-b", "credit-gateway.dev/audit-b")
    text = stack.config_path.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^listen = ".*"$', f'listen = "127.0.0.1:{port}"', text)
    text = re.sub(r'(?m)^metrics_listen = ".*"\n', "", text)
    text = re.sub(r'(?m)^path = ".*audit.sqlite"$', f'path = "{audit["log"]}"', text)
    text = re.sub(r'(?m)^key = ".*log.key"$', f'key = "{audit["key"]}"', text)
    text = re.sub(r"(?ms)^\[billing\]\n.*?\n\n", "", text)
    path = stack.workdir / "gateway-b.toml"
    path.write_text(text, encoding="utf-8")
    return path, audit["log"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(stack: DevStack) -> AsyncIterator[Pair]:
    port = _free_port()
    config, audit_b = _config_b(stack, port)
    assert "[controls]" in config.read_text() and "[billing]" not in config.read_text()
    script = Path(sys.executable).parent / "credit-gateway"
    proc = await asyncio.create_subprocess_exec(
        str(script), "serve", "--config", str(config),
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        pki = stack.pki
        channel, _ = open_channel(
            address,
            ca=pki.ca_cert.read_bytes(),
            cert=pki.agency_cert("bank").read_bytes(),
            key=pki.agency_key("bank").read_bytes(),
        )
        try:
            await asyncio.wait_for(channel.channel_ready(), 60)
        finally:
            await channel.close()
        yield Pair(stack, address, audit_b)
    finally:
        proc.terminate()
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
        assert proc.returncode in (0, -15), err.decode()[-2000:]


async def _refused(client: Any, **query: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await client.query(**query)
    return exc.value


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


#: Propagation delays measured (seconds), printed at the end of the module.
DELAYS: dict[str, float] = {}


async def test_a_suspension_through_a_is_refused_by_b_on_its_next_request(pair: Pair) -> None:
    enterprise = subject(pair.stack, "enterprise_clean")
    query = {"enterprise": enterprise, "purpose": "supervision_inspection"}
    async with pair.agency(pair.b_address, "ndrc") as b_client:
        await b_client.query(**query)  # served, and its token cached by B
        a = pair.officer(pair.a_address, "officer_a")
        done = await a.SuspendAgency(C.SuspendAgencyRequest(agency_id="ndrc", reason="key leaked"))
        returned = time.perf_counter()
        assert done.newly
        err = await _refused(b_client, **query)  # the very next request
        DELAYS["suspension"] = time.perf_counter() - returned
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(err) == "AGENCY_SUSPENDED"
    again = await a.SuspendAgency(C.SuspendAgencyRequest(agency_id="ndrc", reason="twice"))
    assert not again.newly and again.suspended_at == done.suspended_at


async def test_a_reinstatement_takes_a_second_officer(pair: Pair) -> None:
    query = {
        "enterprise": subject(pair.stack, "enterprise_clean"),
        "purpose": "supervision_inspection",
    }
    a = pair.officer(pair.a_address, "officer_a")
    b = pair.officer(pair.b_address, "officer_b")
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await a.ReinstateAgency(C.ReinstateAgencyRequest(agency_id="ndrc"))
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    asked = await a.ReinstateAgency(C.ReinstateAgencyRequest(agency_id="ndrc", reason="new key"))
    assert asked.state == C.REINSTATEMENT_STATE_PENDING
    with pytest.raises(grpc.aio.AioRpcError) as same:
        await a.ReinstateAgency(C.ReinstateAgencyRequest(agency_id="ndrc"))
    assert same.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(same.value) == "FOUR_EYES"
    async with pair.agency(pair.a_address, "ndrc") as a_client:
        err = await _refused(a_client, **query)  # still suspended: pending is not reinstated
        assert _reason(err) == "AGENCY_SUSPENDED"
        approved = await b.ReinstateAgency(C.ReinstateAgencyRequest(agency_id="ndrc"))
        assert approved.state == C.REINSTATEMENT_STATE_REINSTATED
        assert approved.requested_by == "officer_a"
        await a_client.query(**query)  # A serves it again at once
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await b.ReinstateAgency(C.ReinstateAgencyRequest(agency_id="ndrc", reason="again"))
    assert none.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_agency_cannot_use_the_controls(pair: Pair) -> None:
    pki = pair.stack.pki
    cert = pki.agency_cert("bank")
    channel, metadata = open_channel(
        pair.b_address,
        ca=pki.ca_cert.read_bytes(),
        cert=cert.read_bytes(),
        key=pki.agency_key("bank").read_bytes(),
        token=mint_token(pki, "bank", cert),
    )
    stub = _Stub(channel, metadata)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.SuspendAgency(C.SuspendAgencyRequest(agency_id="guarantor", reason="x"))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await channel.close()


async def test_a_certificate_revoked_through_b_is_refused_by_a(pair: Pair) -> None:
    query = {
        "enterprise": subject(pair.stack, "enterprise_clean"),
        "purpose": "government_procurement",
    }
    thumb = cert_thumbprint_pem(pair.stack.pki.agency_cert("procurement").read_bytes())
    async with pair.agency(pair.a_address, "procurement") as a_client:
        await a_client.query(**query)
        b = pair.officer(pair.b_address, "officer_b")
        done = await b.RevokeCertificate(
            C.RevokeCertificateRequest(thumbprint=thumb, reason="lost")
        )
        returned = time.perf_counter()
        assert done.newly_revoked == 1
        err = await _refused(a_client, **query)
        DELAYS["certificate"] = time.perf_counter() - returned
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _reason(err) == "CERT_REVOKED"


async def test_a_crl_of_the_development_ca_revokes_by_serial(pair: Pair) -> None:
    stack = pair.stack
    crl = issue_crl(stack.pki, certs=[stack.pki.agency_cert("guarantor")])
    query = {"enterprise": subject(stack, "enterprise_clean"), "purpose": "guarantee"}
    async with pair.agency(pair.b_address, "guarantor") as b_client:
        a = pair.officer(pair.a_address, "officer_a")
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await a.RevokeCertificate(C.RevokeCertificateRequest(crl=b"not a CRL"))
        assert forged.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        done = await a.RevokeCertificate(C.RevokeCertificateRequest(crl=crl, reason="CRL 1"))
        assert (done.newly_revoked, done.listed) == (1, 1)
        err = await _refused(b_client, **query)
    assert _reason(err) == "CERT_REVOKED"


def _consent(stack: DevStack, person: str, **extra: Any) -> tuple[str, str]:
    from gateway.policy.consent import issue_consent

    token = issue_consent(
        stack.pki.consent.key(),
        stack.pki.consent.signing_kid,
        issuer=stack.pki.consent.issuer,
        subject_type="person",
        subject_id=person,
        grantee="bank",
        purpose="lending",
        scope=["pbccrc/*"],
        lifetime_s=86400,
        **extra,
    )
    cid = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["cid"]
    return token, str(cid)


def _pbccrc(response: query_pb2.QueryResponse) -> Any:
    return next(s for s in response.sections if s.department == "pbccrc")


async def test_a_consent_revoked_through_a_is_withheld_by_b(pair: Pair) -> None:
    person = subject(pair.stack, "person_with_loans")
    token, cid = _consent(pair.stack, person)
    query = {"person": person, "purpose": "lending", "mode": "paid", "consent_token": token}
    async with pair.agency(pair.b_address, "bank") as b_client:
        first = _pbccrc(await b_client.query(**query))
        assert first.status == OK, (first.status, [w.detail for w in first.withheld])
        a = pair.officer(pair.a_address, "officer_a")
        done = await a.RevokeConsent(C.RevokeConsentRequest(consent_id=cid, reason="withdrawn"))
        returned = time.perf_counter()
        section = _pbccrc(await b_client.query(**query))
        DELAYS["consent"] = time.perf_counter() - returned
    assert done.newly and section.status != OK
    assert any("consent revoked" in w.detail for w in section.withheld), section
    status = await a.ConsentStatus(C.ConsentStatusRequest(consent_id=cid))
    assert status.state == C.CONSENT_STATE_REVOKED and status.revoked_via == "officer"
    assert status.revoked_at == done.revoked_at and status.uses == 1, status


async def test_a_subject_revokes_its_own_consent_through_self_service(pair: Pair) -> None:
    person = subject(pair.stack, "person_with_loans")
    other = subject(pair.stack, "person_dishonest_debtor")
    token, cid = _consent(pair.stack, person)
    stranger = pair.controls_as_agency(pair.b_address, "self_service", ("person", other))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stranger.RevokeMyConsent(C.RevokeMyConsentRequest(consent_token=token))
    assert _reason(exc.value) == "OTHER_SUBJECT"
    bank = pair.controls_as_agency(pair.b_address, "bank", ("person", person))
    with pytest.raises(grpc.aio.AioRpcError) as not_kiosk:
        await bank.RevokeMyConsent(C.RevokeMyConsentRequest(consent_token=token))
    assert _reason(not_kiosk.value) == "NOT_SELF_SERVICE"
    mine = pair.controls_as_agency(pair.b_address, "self_service", ("person", person))
    done = await mine.RevokeMyConsent(C.RevokeMyConsentRequest(consent_token=token, reason="no"))
    assert done.consent_id == cid and done.newly
    query = {"person": person, "purpose": "lending", "mode": "paid", "consent_token": token}
    async with pair.agency(pair.a_address, "bank") as a_client:
        section = _pbccrc(await a_client.query(**query))
    assert section.status != OK
    a = pair.officer(pair.a_address, "officer_a")
    status = await a.ConsentStatus(C.ConsentStatusRequest(consent_id=cid))
    assert status.state == C.CONSENT_STATE_REVOKED and status.revoked_via == "subject"


@pytest.mark.parametrize("max_uses", [1, 3])
async def test_a_limited_consent_is_spent_exactly_under_concurrent_queries(
    pair: Pair, max_uses: int
) -> None:
    person = subject(pair.stack, "person_with_loans")
    token, cid = _consent(pair.stack, person, max_uses=max_uses)
    query = {"person": person, "purpose": "lending", "mode": "paid", "consent_token": token}
    async with (
        pair.agency(pair.a_address, "bank") as a_client,
        pair.agency(pair.b_address, "bank") as b_client,
    ):
        responses = await asyncio.gather(
            *(c.query(**query) for _ in range(4) for c in (a_client, b_client))
        )
    seen = [(_pbccrc(r).status, sorted({w.detail for w in _pbccrc(r).withheld})) for r in responses]
    # A use is an attempt: counted when the consent is bound, before the departments are
    # asked, so on a loaded machine a used one may come back unavailable. Exactly max_uses
    # responses used it; every other one was refused as spent.
    spent = [
        r
        for r in responses
        if any("consent revoked/spent" in w.detail for w in _pbccrc(r).withheld)
    ]
    assert len(responses) - len(spent) == max_uses, seen
    assert sum(_pbccrc(r).status == OK for r in responses) >= 1, seen
    a = pair.officer(pair.a_address, "officer_a")
    status = await a.ConsentStatus(C.ConsentStatusRequest(consent_id=cid))
    assert status.state == C.CONSENT_STATE_SPENT
    assert (status.uses, status.max_uses) == (max_uses, max_uses)
    # Each granted query's record names the consent and its use count: 1..max_uses.
    await asyncio.sleep(1.5)  # the logs' checkpoints
    uses = []
    for log in (pair.stack.audit["log"], pair.b_audit):
        signed, unsigned = read_records(log)
        uses += [
            r.get("consent_uses")
            for r in signed + unsigned
            if r.get("kind") == "query" and r.get("consent_id") == cid
        ]
    assert sorted(u for u in uses if u is not None) == list(range(1, max_uses + 1)), uses


async def test_every_action_is_on_the_record_refused_ones_too(pair: Pair) -> None:
    records = pair.controls_records()
    seen = {(r["action"], r["outcome"]) for r in records}
    for expected in [
        ("suspend", "ok"),
        ("reinstate_request", "ok"),
        ("reinstate_request", "refused"),
        ("reinstate_approve", "ok"),
        ("reinstate_approve", "refused"),
        ("revoke_certificate", "ok"),
        ("revoke_certificate", "refused"),
        ("revoke_consent", "ok"),
        ("revoke_my_consent", "ok"),
        ("revoke_my_consent", "refused"),
        ("consent_status", "ok"),
        ("suspend", "refused"),
    ]:
        assert expected in seen, expected
    approve = next(
        r for r in records if r["action"] == "reinstate_approve" and r["outcome"] == "ok"
    )
    assert (approve["actor"], approve["requested_by"], approve["agency"]) == (
        "officer_b",
        "officer_a",
        "ndrc",
    )
    four_eyes = next(
        r for r in records if r["action"] == "reinstate_approve" and r["outcome"] == "refused"
    )
    assert four_eyes["error"] == "FOUR_EYES" and four_eyes["actor"] == "officer_a"
    print("propagation delays (s):", {k: round(v, 4) for k, v in DELAYS.items()})
    assert all(v < 1.0 for v in DELAYS.values()), DELAYS


async def test_the_cli_suspends_asks_and_approves_through_either_process(pair: Pair) -> None:
    import io

    from gateway.cli.controls import controls_main

    stack = pair.stack

    def officer(address: str, who: str) -> list[str]:
        return [
            "--gateway", address,
            "--ca", str(stack.pki.ca_cert),
            "--cert", str(stack.pki.officer_cert(who)),
            "--key", str(stack.pki.officer_key(who)),
            "--token-file", str(stack.officer_tokens[who]),
        ]  # fmt: skip

    async def run(argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(controls_main, argv, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    a, b = officer(pair.a_address, "officer_a"), officer(pair.b_address, "officer_b")
    code, out, _ = await run([*a, "suspend", "suspended_agency", "--reason", "audit finding"])
    assert code == 0 and "suspended_agency suspended since" in out
    code, out, _ = await run([*a, "reinstate", "suspended_agency", "--reason", "fixed"])
    assert code == 0 and "a second officer must approve" in out
    code, _, err = await run([*a, "reinstate", "suspended_agency"])
    assert code == 1 and "PERMISSION_DENIED" in err
    code, out, _ = await run([*b, "reinstate", "suspended_agency"])
    assert code == 0 and "reinstated (asked by officer_a" in out
    code, out, _ = await run([*b, "status", "never-seen-1"])
    assert code == 0 and "unseen" in out and "used 0 time(s)" in out
    code, _, err = await run([*b, "status", "bad id!"])
    assert code == 1 and "INVALID_ARGUMENT" in err


async def test_reflection_lists_the_controls_service(pair: Pair) -> None:
    import shutil

    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    pki = pair.stack.pki
    proc = await asyncio.create_subprocess_exec(
        grpcurl, "-cacert", str(pki.ca_cert), "-cert", str(pki.officer_cert("officer_a")),
        "-key", str(pki.officer_key("officer_a")), pair.b_address, "list",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "credit.v1.SecurityControls" in out.decode().split()
