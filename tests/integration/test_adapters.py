"""Department adapters end to end: a real adapter process started through the
CLI, and an in-process adapter over real mutual TLS that lets in only the
gateway's certificate. Real gRPC on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters import cli
from adapters.sdk import FEDERATION_IDENTITY, bound_port, mtls_server_credentials, serve, shutdown
from adapters.sql import SqlStore, load_mapping
from adapters.synth import sample_mapping
from protos.credit.v1 import adapter_pb2, adapter_pb2_grpc, common_pb2

REPO = Path(__file__).resolve().parents[2]


# --- a throwaway PKI (the project's own PKI module is not a dependency here) ----


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    cert_pem: bytes


class ThrowawayCA:
    """A CA that issues EC P-256 server and client certificates for one test."""

    def __init__(self, name: str = "test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self._name = subject
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, server: bool, uri: str | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        elif uri is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        )


def _channel(port: int, ca: ThrowawayCA, client: Issued | None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


# --- shared data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("departments")
    # Through the CLI, as a department (or the demo) would.
    assert cli.main(["generate", "--out", str(out), "--seed", "3", "--subjects", "400"]) == 0
    return out


@pytest.fixture(scope="module")
def subjects(data: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((data / "subjects.json").read_text(encoding="utf-8"))
    return doc["subjects"]


def _lookup(subject_id: str, wanted: dict[str, list[str]]) -> adapter_pb2.LookupRequest:
    subject_type = (
        common_pb2.SUBJECT_TYPE_ENTERPRISE
        if subject_id[:2] == "91"
        else common_pb2.SUBJECT_TYPE_PERSON
    )
    return adapter_pb2.LookupRequest(
        subject=common_pb2.Subject(type=subject_type, id=subject_id),
        wanted=[adapter_pb2.DatasetFields(dataset=d, fields=f) for d, f in wanted.items()],
        request_id="it-1",
        agency_id="xm-finance-bureau",
        purpose="government_procurement",
    )


# --- an adapter process through the CLI ----------------------------------------------


@dataclass
class Process:
    proc: asyncio.subprocess.Process
    port: int
    stderr: Path


@pytest.fixture
async def start_cli(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Process] = []

    async def start(*args: str) -> Process:
        stderr = tmp_path / f"adapter-{len(started)}.log"
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adapters",
                "serve",
                "--listen",
                "127.0.0.1:0",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=REPO,
            )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(stderr.read_text()) from None
        assert line.startswith(b"listening on 127.0.0.1:"), (line, stderr.read_text())
        process = Process(proc, int(line.rsplit(b":", 1)[1]), stderr)
        started.append(process)
        return process

    yield start
    for p in started:
        if p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()


async def test_cli_adapter_over_plaintext_dev_mode(
    data: Path, subjects: dict[str, Any], start_cli: Any
) -> None:
    p = await start_cli(
        "--mapping",
        str(sample_mapping("market")),
        "--db",
        str(data / "market.sqlite"),
        "--insecure-dev-plaintext",
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") as channel:
        stub = adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
        described = await stub.Describe(adapter_pb2.DescribeRequest())
        assert described.department == "market"
        assert {d.name for d in described.datasets} >= {"registration", "administrative_penalties"}

        ent = subjects["enterprise_all_departments"]
        response = await stub.Lookup(
            _lookup(
                ent["id"],
                {"registration": ["name"], "administrative_penalties": ["decided_on", "fine_fen"]},
            )
        )
        assert response.subject_known
        reg, pen = response.results
        assert [dict(r.fields) for r in reg.records] == [
            {"name": common_pb2.FieldValue(text=ent["name"])}
        ]
        assert len(pen.records) == 4
        for rec in pen.records:
            assert set(rec.fields) <= {"decided_on", "fine_fen"}
            assert "decided_on" in rec.fields
        by_id = {r.record_id: r for r in pen.records}
        for note in ent["records"]:
            if note["dataset"] == "administrative_penalties":
                assert by_id[note["record_id"]].event_end_date == note["event_end_date"]
                assert by_id[note["record_id"]].disputed == note["disputed"]

        unknown = await stub.Lookup(
            _lookup(subjects["enterprise_unknown"]["id"], {"registration": ["name"]})
        )
        assert not unknown.subject_known and not unknown.results[0].records

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Lookup(_lookup(ent["id"], {"tax_paid": ["tax_paid_fen"]}))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown dataset 'tax_paid'" in (info.value.details() or "")

        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # SIGTERM drains and exits cleanly.
    p.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(p.proc.wait(), timeout=15) == 0
    assert "WITHOUT TLS" in p.stderr.read_text()


async def test_cli_adapter_over_mutual_tls(
    data: Path, subjects: dict[str, Any], tmp_path: Path, start_cli: Any
) -> None:
    ca = ThrowawayCA()
    server = ca.issue("adapter-pbccrc", server=True)
    gateway = ca.issue("gateway", server=False, uri=FEDERATION_IDENTITY)
    files = {}
    for name, content in [
        ("ca.pem", ca.pem),
        ("server.pem", server.cert_pem),
        ("server.key", server.key_pem),
    ]:
        (tmp_path / name).write_bytes(content)
        files[name] = str(tmp_path / name)
    p = await start_cli(
        "--mapping",
        str(sample_mapping("pbccrc")),
        "--db",
        str(data / "pbccrc.sqlite"),
        "--tls-cert",
        files["server.pem"],
        "--tls-key",
        files["server.key"],
        "--client-ca",
        files["ca.pem"],
    )
    person = subjects["person_with_loans"]
    async with _channel(p.port, ca, gateway) as channel:
        stub = adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
        response = await stub.Lookup(_lookup(person["id"], {"overdue_records": ["overdue_since"]}))
    assert response.subject_known
    assert len(response.results[0].records) == 3
    assert all(set(r.fields) == {"overdue_since"} for r in response.results[0].records)
    p.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(p.proc.wait(), timeout=15) == 0


def test_cli_refuses_to_serve_without_tls_or_the_loud_flag(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        [
            "serve",
            "--mapping",
            str(sample_mapping("tax")),
            "--db",
            str(data / "tax.sqlite"),
            "--listen",
            "127.0.0.1:0",
        ]
    )
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0 and "--tls-cert: required" in err and "--insecure-dev-plaintext" in err
    )


def test_cli_describe_checks_the_catalog(capsys: pytest.CaptureFixture[str], data: Path) -> None:
    assert (
        cli.main(
            [
                "describe",
                "--mapping",
                str(sample_mapping("hrss")),
                "--db",
                str(data / "hrss.sqlite"),
                "--catalog",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "medical_history: text <- diagnoses" in out
    assert "agrees with catalog 2026.11.1" in out


# --- in-process over real mutual TLS: only the gateway's certificate ----------------


@pytest.fixture
async def tls_adapter(data: Path) -> AsyncIterator[tuple[int, ThrowawayCA]]:
    ca = ThrowawayCA()
    server_cert = ca.issue("adapter-court", server=True)
    store = await asyncio.to_thread(
        SqlStore, load_mapping(sample_mapping("court")), data / "court.sqlite"
    )
    server = await serve(
        store,
        "127.0.0.1:0",
        server_credentials=mtls_server_credentials(
            server_cert.cert_pem, server_cert.key_pem, ca.pem
        ),
        allowed_clients=frozenset({FEDERATION_IDENTITY}),
    )
    yield bound_port(server), ca
    await shutdown(server, 0)
    await store.close()


async def test_tls_adapter_answers_the_gateway(
    tls_adapter: tuple[int, ThrowawayCA], subjects: dict[str, Any]
) -> None:
    port, ca = tls_adapter
    person = subjects["person_dishonest_debtor"]
    gateway = ca.issue("gateway", server=False, uri=FEDERATION_IDENTITY)
    async with _channel(port, ca, gateway) as channel:
        stub = adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
        assert (await stub.Describe(adapter_pb2.DescribeRequest())).department == "court"
        response = await stub.Lookup(
            _lookup(person["id"], {"dishonest_debtors": ["case_number", "court"]})
        )
        (rec,) = response.results[0].records
        assert set(rec.fields) == {"case_number", "court"}
        assert rec.event_end_date == ""  # still on the list
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Lookup(_lookup(person["id"], {"dishonest_debtors": ["religion"]}))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_tls_adapter_refuses_other_certificates_of_the_same_ca(
    tls_adapter: tuple[int, ThrowawayCA], subjects: dict[str, Any]
) -> None:
    port, ca = tls_adapter
    async with _channel(port, ca, ca.issue("agency-xm-bank", server=False)) as channel:
        stub = adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
        for call in (
            stub.Describe(adapter_pb2.DescribeRequest()),
            stub.Lookup(
                _lookup(subjects["person_dishonest_debtor"]["id"], {"dishonest_debtors": ["court"]})
            ),
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "only the gateway's certificate" in (info.value.details() or "")


@pytest.mark.parametrize("who", ["no client certificate", "another CA"])
async def test_tls_adapter_refuses_the_handshake(
    tls_adapter: tuple[int, ThrowawayCA], who: str
) -> None:
    port, ca = tls_adapter
    client = ThrowawayCA("rogue CA").issue("gateway", server=False) if who == "another CA" else None
    async with _channel(port, ca, client) as channel:
        stub = adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Describe(adapter_pb2.DescribeRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
