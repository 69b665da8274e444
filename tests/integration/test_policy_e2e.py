"""Tiered access end to end: the Casbin decider in a real gateway over mutual TLS, real agency
certificates and tokens, consent tokens from the development consent issuer, and in-process
departments (``InMemoryStore``) whose ``calls`` show what the gateway asked for.

The decider is passed to ``Gateway`` directly (production builds it from the configuration).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
import pytest_asyncio

from adapters.sdk import StoredRecord
from adapters.testing import InMemoryStore
from gateway.auth import (
    Authenticator,
    CallerAuthenticator,
    Role,
    TokenVerifier,
    TrustedIssuer,
    issue_token,
    load_registry,
)
from gateway.auth.tokens import load_signing_key
from gateway.cli.connect import QueryClient
from gateway.dev.devstack import DepartmentProcess, ensure_audit_keys, serve_fake
from gateway.dev.pki import (
    DEV_AGENCY_ISSUER,
    DEV_CONSENT_ISSUER,
    Pki,
    cert_thumbprint_pem,
    init_pki,
)
from gateway.domain.catalog import Catalog, load_catalog
from gateway.policy import PolicyDecider, build_decider
from gateway.policy.consent import issue_consent
from gateway.runtime.assembly import open_auditor
from gateway.runtime.config import load_config
from gateway.runtime.server import Gateway
from protos.credit.v1 import common_pb2, query_pb2

pytestmark = pytest.mark.asyncio(loop_scope="module")

AUDIENCE = "credit-gateway-policy-e2e"
PERSON = "360426199101010071"
OTHER_PERSON = "34052419800101001X"
ENTERPRISE = "91350200MA2YJ1XR9G"
OK = query_pb2.SECTION_STATUS_OK
WITHHELD = query_pb2.SECTION_STATUS_WITHHELD
R = query_pb2.WithholdReason


@dataclass
class Federation:
    pki: Pki
    gateway: Gateway
    decider: PolicyDecider
    stores: dict[str, InMemoryStore]
    departments: list[DepartmentProcess]

    def client(self, agency: str, *, subject: tuple[str, str] | None = None) -> QueryClient:
        cert = self.pki.agency_cert(agency).read_bytes()
        if subject is None:
            token = issue_token(
                self.pki.agency_token.key(),
                self.pki.agency_token.signing_kid,
                issuer=DEV_AGENCY_ISSUER,
                audience=AUDIENCE,
                subject=agency,
                cert_thumbprint=cert_thumbprint_pem(cert),
            )
        else:
            token = self_service_token(self.pki, agency, cert, subject)
        return QueryClient.connect(
            self.gateway.address,
            ca=self.pki.ca_cert.read_bytes(),
            cert=cert,
            key=self.pki.agency_key(agency).read_bytes(),
            token=token,
        )

    def calls(self) -> dict[str, int]:
        return {d: len(s.calls) for d, s in self.stores.items()}


def self_service_token(pki: Pki, agency: str, cert: bytes, subject: tuple[str, str]) -> str:
    """An agency token carrying the ``subject`` claim the kiosk's issuer attests."""
    key, alg = load_signing_key(pki.agency_token.key())
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
    headers = {"kid": pki.agency_token.signing_kid, "typ": "JWT"}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _record(catalog: Catalog, dept: str, dataset: str, n: int) -> StoredRecord:
    ds = catalog.dataset(dept, dataset)
    assert ds is not None
    samples: dict[int, str | int | bool] = {
        common_pb2.FIELD_TYPE_INTEGER: n,
        common_pb2.FIELD_TYPE_MONEY_FEN: 100 * n,
        common_pb2.FIELD_TYPE_BOOLEAN: True,
        common_pb2.FIELD_TYPE_DATE: "2024-05-01",
    }
    values = {f.name: samples.get(f.type, f"{f.name}-{n}") for f in ds.fields.values()}
    return StoredRecord(f"{dept}-{dataset}-{n}", values)


def _stores(catalog: Catalog) -> dict[str, InMemoryStore]:
    stores: dict[str, InMemoryStore] = {}
    for dept_id, dept in catalog.departments.items():
        data: dict[str, dict[str, list[StoredRecord]]] = {}
        for ds in dept.datasets.values():
            for subject_type, subject_ids in (
                ("person", (PERSON, OTHER_PERSON)),
                ("enterprise", (ENTERPRISE,)),
            ):
                if subject_type in ds.subject_types:
                    for sid in subject_ids:
                        data.setdefault(sid, {})[ds.name] = [_record(catalog, dept_id, ds.name, 1)]
        stores[dept_id] = InMemoryStore.from_catalog(catalog, dept_id, data)
    return stores


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    workdir: Path = tmp_path_factory.mktemp("policy-e2e")
    catalog = load_catalog()
    registry = load_registry()
    pki = await asyncio.to_thread(
        init_pki,
        workdir / "pki",
        departments=list(catalog.departments),
        agencies=registry.ids(Role.AGENCY),
        officers=registry.ids(Role.OFFICER),
        auditors=registry.ids(Role.AUDITOR),
        finance=registry.ids(Role.FINANCE),
        force=True,
    )
    audit_keys = await asyncio.to_thread(ensure_audit_keys, workdir / "audit")
    stores = _stores(catalog)
    departments = list(await asyncio.gather(*(serve_fake(d, s, pki) for d, s in stores.items())))
    lines = [
        "[gateway]", 'listen = "127.0.0.1:0"', "",
        "[tls]", f'cert = "{pki.gateway_server_cert}"', f'key = "{pki.gateway_server_key}"',
        f'client_ca = "{pki.ca_cert}"', "",
        "[auth]", f'audience = "{AUDIENCE}"', "[[auth.issuers]]",
        f'issuer = "{pki.agency_token.issuer}"', f'jwks = "{pki.agency_token.jwks}"', "",
        "[audit]", f'path = "{audit_keys["log"]}"', f'key = "{audit_keys["key"]}"',
        f'pseudonym_key = "{audit_keys["pseudonym_key"]}"', "",
        "[federation]", f'ca = "{pki.ca_cert}"', f'client_cert = "{pki.gateway_client_cert}"',
        f'client_key = "{pki.gateway_client_key}"', "timeout_ms = 2000", "",
    ]  # fmt: skip
    for proc in departments:
        lines += [f"[departments.{proc.id}]", f'address = "{proc.address}"', ""]
    config_path = workdir / "gateway.toml"
    config_path.write_text("\n".join(lines), encoding="utf-8")
    verifier = TokenVerifier(
        [TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)],
        audience=AUDIENCE,
    )
    decider = build_decider(
        catalog, consent_issuers=[(DEV_CONSENT_ISSUER, pki.consent.jwks)], registry=registry
    )
    config = load_config(config_path)
    assert config.audit is not None
    gateway = Gateway(
        config,
        authenticator=CallerAuthenticator(Authenticator(registry, verifier)),
        decider=decider,
        catalog=catalog,
        audit=await open_auditor(config.audit),
        audit_authenticator=Authenticator(registry, verifier, roles=(Role.AGENCY, Role.AUDITOR)),
    )
    try:
        await gateway.start()
    except BaseException:
        await asyncio.gather(*(p.stop() for p in departments))
        raise
    try:
        yield Federation(pki, gateway, decider, stores, departments)
    finally:
        await gateway.stop(grace=1)
        await asyncio.gather(*(p.stop() for p in departments))


def sections(response: query_pb2.QueryResponse) -> dict[str, query_pb2.DepartmentSection]:
    return {s.department: s for s in response.sections}


def consent_for(fed: Federation, **kw: object) -> str:
    args: dict[str, object] = {
        "issuer": DEV_CONSENT_ISSUER,
        "subject_type": "person",
        "subject_id": PERSON,
        "grantee": "bank",
        "purpose": "lending",
        "scope": ["pbccrc/personal_loans"],
        **kw,
    }
    return issue_consent(fed.pki.consent.key(), fed.pki.consent.signing_kid, **args)  # type: ignore[arg-type]


async def test_nogrants_is_answered_without_asking_any_department(fed: Federation) -> None:
    before = fed.calls()
    async with fed.client("nogrants") as client:
        response = await client.query(enterprise=ENTERPRISE, purpose="supervision_inspection")
    assert fed.calls() == before  # data minimisation: nobody was asked
    assert response.policy_version == fed.decider.version
    assert response.sections
    for section in response.sections:
        assert section.status == WITHHELD
        assert not section.datasets
        assert {w.reason for w in section.withheld} <= {
            R.WITHHOLD_REASON_NOT_GRANTED,
            R.WITHHOLD_REASON_STATE_SECRET,
        }


async def test_bank_with_consent_gets_loans_and_only_granted_fields_are_asked(
    fed: Federation,
) -> None:
    token = consent_for(fed, cid="e2e-consent-1")
    before = fed.calls()
    async with fed.client("bank") as client:
        response = await client.query(
            person=PERSON,
            purpose="lending",
            mode="paid",
            datasets=["pbccrc/personal_loans", "pbccrc/overdue_records", "hrss/social_security"],
            consent_token=token,
        )
    by_dept = sections(response)
    pbccrc = by_dept["pbccrc"]
    assert pbccrc.status == OK
    loans = next(d for d in pbccrc.datasets if d.dataset == "personal_loans")
    assert loans.records and loans.records[0].fields["lender"].text == "lender-1"
    # The consent covers personal loans only: overdue records are withheld, out of scope.
    overdue = [w for w in pbccrc.withheld if w.dataset == "overdue_records"]
    assert overdue and all(w.reason == R.WITHHOLD_REASON_CONSENT_REQUIRED for w in overdue)
    assert all("out of scope" in w.detail for w in overdue)
    # hrss: nothing allowed (no consent for it; medical history prohibited) -> not asked.
    hrss = by_dept["hrss"]
    assert hrss.status == WITHHELD
    reasons = {w.field: w.reason for w in hrss.withheld}
    assert reasons["medical_history"] == R.WITHHOLD_REASON_PROHIBITED_ITEM
    assert reasons["employer"] == R.WITHHOLD_REASON_CONSENT_REQUIRED
    after = fed.calls()
    assert after["hrss"] == before["hrss"]
    assert after["pbccrc"] == before["pbccrc"] + 1
    asked = fed.stores["pbccrc"].calls[-1].wanted
    assert set(asked) == {"personal_loans"}  # overdue records were not even asked for


async def test_bank_without_consent_or_in_free_mode(fed: Federation) -> None:
    before = fed.calls()
    async with fed.client("bank") as client:
        no_consent = await client.query(
            person=PERSON,
            purpose="lending",
            mode="paid",
            datasets=["pbccrc/personal_loans", "court/dishonest_debtors"],
        )
        free = await client.query(
            person=PERSON,
            purpose="lending",
            mode="free",
            datasets=["court/dishonest_debtors"],
            consent_token=consent_for(fed),
        )
    s = sections(no_consent)
    assert s["court"].status == OK  # the rest of the query proceeds
    assert s["pbccrc"].status == WITHHELD
    assert {w.detail for w in s["pbccrc"].withheld} == {
        "consent missing: no consent token was sent"
    }
    court = sections(free)["court"]
    assert court.status == WITHHELD
    assert {w.reason for w in court.withheld} == {R.WITHHOLD_REASON_PAID_MODE_REQUIRED}
    after = fed.calls()
    assert after["pbccrc"] == before["pbccrc"] and after["court"] == before["court"] + 1


async def test_consent_for_another_subject_is_refused(fed: Federation) -> None:
    async with fed.client("bank") as client:
        response = await client.query(
            person=OTHER_PERSON,
            purpose="lending",
            mode="paid",
            datasets=["pbccrc/personal_loans"],
            consent_token=consent_for(fed),
        )
    pbccrc = sections(response)["pbccrc"]
    assert pbccrc.status == WITHHELD
    assert all("other subject" in w.detail for w in pbccrc.withheld)
    assert PERSON not in str(response) and OTHER_PERSON not in str(pbccrc.withheld)


async def test_subject_queries_itself_through_the_kiosk(fed: Federation) -> None:
    async with fed.client("self_service", subject=("person", PERSON)) as client:
        own = await client.query(person=PERSON, purpose="self_query")
        other = await client.query(person=OTHER_PERSON, purpose="self_query")
    s = sections(own)
    assert s["pbccrc"].status == OK and s["hrss"].status == OK
    assert {w.field: w.reason for w in s["hrss"].withheld} == {
        "medical_history": R.WITHHOLD_REASON_PROHIBITED_ITEM
    }
    returned = {f for d in s["hrss"].datasets for r in d.records for f in r.fields}
    assert "annual_wage_fen" in returned and "medical_history" not in returned
    assert {w.field for w in s["court"].withheld} == {"classified_particulars"}
    for section in other.sections:
        assert section.status == WITHHELD
        assert all(
            w.reason
            in (
                R.WITHHOLD_REASON_NOT_GRANTED,
                R.WITHHOLD_REASON_STATE_SECRET,
                R.WITHHOLD_REASON_PROHIBITED_ITEM,
            )
            for w in section.withheld
        )


async def test_a_malformed_subject_claim_is_unauthenticated(fed: Federation) -> None:
    async with fed.client("self_service", subject=("person", "110105194912310021")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.query(person=PERSON, purpose="self_query")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_bank_cannot_claim_to_be_the_subject(fed: Federation) -> None:
    cert = fed.pki.agency_cert("bank").read_bytes()
    token = self_service_token(fed.pki, "bank", cert, ("person", PERSON))
    client = QueryClient.connect(
        fed.gateway.address,
        ca=fed.pki.ca_cert.read_bytes(),
        cert=cert,
        key=fed.pki.agency_key("bank").read_bytes(),
        token=token,
    )
    async with client:
        response = await client.query(
            person=PERSON, purpose="self_query", datasets=["pbccrc/personal_loans"]
        )
    assert sections(response)["pbccrc"].status == WITHHELD
