"""Only the gateway reads a department.

Departments used to accept any client certificate of the CA whose CN was ``credit-gateway``,
and ``certs init --agencies credit-gateway`` made exactly such an agency certificate. Now a
department accepts only the federation identity, the URI SAN ``urn:credit-gateway:federation``
that only the gateway's federation certificate carries; names like the gateway's are refused
by ``certs init`` and the registry. Over real mutual TLS against the federation's real
department adapter processes: certificates from the federation's own CA that look like the
gateway in every other way are refused, and the real gateway still gets its answers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway.dev.devstack import DevStack
from gateway.dev.pki import (
    FEDERATION_IDENTITY,
    GATEWAY_CN,
    GATEWAY_FEDERATION_OU,
)
from protos.credit.v1 import adapter_pb2, adapter_pb2_grpc, common_pb2, query_pb2
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Leaf:
    cert_pem: bytes
    key_pem: bytes


def leaf_from_the_federation_ca(
    stack: DevStack, subject_name: x509.Name, uris: list[str], *, eku_client: bool = True
) -> Leaf:
    """A client certificate signed by the federation's own CA key: a PKI made by hand, as an
    insider with the CA (or an organisation's CA issuing agency certificates) could."""
    ca_key = serialization.load_pem_private_key(stack.pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(stack.pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if eku_client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return Leaf(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def name(cn: str, o: str | None = None, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if o:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


async def ask_department(stack: DevStack, dept: str, cert_pem: bytes, key_pem: bytes) -> None:
    """Describe, Lookup and Health on ``dept``'s real adapter process with this certificate,
    checking the department's server name as the gateway does."""
    creds = grpc.ssl_channel_credentials(stack.pki.ca_cert.read_bytes(), key_pem, cert_pem)
    options = [("grpc.ssl_target_name_override", f"{dept}.department")]
    address = stack.departments[dept].address
    async with grpc.aio.secure_channel(address, creds, options=options) as channel:
        stub = adapter_pb2_grpc.DepartmentAdapterStub(channel)  # type: ignore[misc]
        await stub.Describe(adapter_pb2.DescribeRequest(), timeout=10)
        request = adapter_pb2.LookupRequest(
            subject=common_pb2.Subject(
                type=common_pb2.SUBJECT_TYPE_ENTERPRISE,
                id=subject(stack, "enterprise_all_departments"),
            ),
            wanted=[adapter_pb2.DatasetFields(dataset="registration", fields=["name"])],
            request_id="r-identity",
            agency_id="ndrc",
            purpose="supervision_inspection",
        )
        await stub.Lookup(request, timeout=10)
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


async def refused_by_department(stack: DevStack, dept: str, leaf: Leaf) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ask_department(stack, dept, leaf.cert_pem, leaf.key_pem)
    err = info.value
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
    status = rpc_status.from_call(err)
    assert status is not None
    errinfo = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(errinfo)
    assert errinfo.reason == "NOT_THE_GATEWAY"


async def test_an_agency_certificate_with_cn_credit_gateway_is_refused(stack: DevStack) -> None:
    # What `certs init --agencies credit-gateway` used to make.
    leaf = leaf_from_the_federation_ca(
        stack, name(GATEWAY_CN, o="agency"), ["urn:credit-gateway:agency:credit-gateway"]
    )
    await refused_by_department(stack, "market", leaf)


@pytest.mark.parametrize(
    ("subject_name", "uris"),
    [
        # the federation certificate's subject exactly, but not its identity
        (name(GATEWAY_CN, ou=GATEWAY_FEDERATION_OU), []),
        (name(GATEWAY_CN, ou=GATEWAY_FEDERATION_OU), ["urn:credit-gateway:gateway:federation"]),
        # the identity's look-alikes
        (name("bank", o="agency"), [FEDERATION_IDENTITY.upper()]),
        (name("bank", o="agency"), [FEDERATION_IDENTITY + ":x"]),
        (name("bank", o="agency"), ["urn:credit-gateway:agency:bank"]),
    ],
)
async def test_certificates_that_only_look_like_the_gateway_are_refused(
    stack: DevStack, subject_name: x509.Name, uris: list[str]
) -> None:
    await refused_by_department(
        stack, "tax", leaf_from_the_federation_ca(stack, subject_name, uris)
    )


async def test_every_principal_of_the_pki_is_refused(stack: DevStack) -> None:
    """Agencies, officers, auditors, finance: all from the same CA, none is the gateway."""
    for role_dir, ids in stack.pki.principals.items():
        for ident in ids[:2]:
            leaf = Leaf(
                stack.pki.principal_cert(role_dir, ident).read_bytes(),
                stack.pki.principal_key(role_dir, ident).read_bytes(),
            )
            await refused_by_department(stack, "court", leaf)


async def test_the_federation_identity_is_enough_and_the_real_gateway_works(
    stack: DevStack,
) -> None:
    pki = stack.pki
    # The gateway's own federation certificate is let in directly...
    await ask_department(
        stack, "market", pki.gateway_client_cert.read_bytes(), pki.gateway_client_key.read_bytes()
    )
    # ...and the whole federation still answers through the gateway.
    async with stack.client("ndrc") as client:
        response = await client.query(
            enterprise=subject(stack, "enterprise_all_departments"),
            purpose="supervision_inspection",
        )
    ok = {s.department for s in response.sections if s.status == query_pb2.SECTION_STATUS_OK}
    assert {"market", "tax", "court"} <= ok


async def test_the_federation_certificate_carries_the_identity_and_no_principal_does(
    stack: DevStack,
) -> None:
    def uris(pem: bytes) -> list[str]:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return list(san.get_values_for_type(x509.UniformResourceIdentifier))

    assert uris(stack.pki.gateway_client_cert.read_bytes()) == [FEDERATION_IDENTITY]
    for role_dir, ids in stack.pki.principals.items():
        for ident in ids:
            assert FEDERATION_IDENTITY not in uris(
                stack.pki.principal_cert(role_dir, ident).read_bytes()
            )
