"""Self-service identity: CallerAuthenticator fills Caller.subject_id from the verified
token's ``subject`` claim, for subject_self_service agencies only."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from gateway.auth import Authenticator, CallerAuthenticator, TokenVerifier, TrustedIssuer
from gateway.auth.registry import load_registry
from gateway.auth.tokens import load_signing_key
from gateway.dev.pki import Pki, cert_thumbprint_pem
from gateway.errors import AuthenticationError
from tests.helpers import FakeContext, make_pki
from tests.unit.policy.conftest import ENTERPRISE, PERSON

AUD = "urn:credit-gateway:unit"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(
        tmp_path_factory,
        departments=["tax"],
        agencies=["self_service", "bank"],
        name="self-service",
    )


def caller_auth(pki: Pki) -> CallerAuthenticator:
    issuer = TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)
    verifier = TokenVerifier([issuer], audience=AUD)
    return CallerAuthenticator(Authenticator(load_registry(), verifier))


def context(pki: Pki, agency: str, **extra: Any) -> FakeContext:
    cert = pki.agency_cert(agency).read_bytes()
    key, alg = load_signing_key(pki.agency_token.key())
    now = int(time.time())
    claims = {
        "iss": pki.agency_token.issuer,
        "aud": AUD,
        "sub": agency,
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "cnf": {"x5t#S256": cert_thumbprint_pem(cert)},
        **extra,
    }
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": pki.agency_token.signing_kid})
    return FakeContext(cert, [("authorization", f"Bearer {token}")])


def test_self_service_subject_fills_the_caller(pki: Pki) -> None:
    auth = caller_auth(pki)
    person = auth.authenticate(
        context(pki, "self_service", subject={"type": "person", "id": PERSON})
    )
    assert (person.agency_id, person.kind, person.subject_type, person.subject_id) == (
        "self_service",
        "subject_self_service",
        "person",
        PERSON,
    )
    firm = auth.authenticate(
        context(pki, "self_service", subject={"type": "enterprise", "id": ENTERPRISE})
    )
    assert (firm.subject_type, firm.subject_id) == ("enterprise", ENTERPRISE)
    assert auth.authenticate(context(pki, "self_service")).subject_id == ""


def test_other_agencies_cannot_speak_for_a_subject(pki: Pki) -> None:
    caller = caller_auth(pki).authenticate(
        context(pki, "bank", subject={"type": "person", "id": PERSON})
    )
    assert caller.subject_id == ""


@pytest.mark.parametrize(
    "claim",
    [
        PERSON,
        {"type": "person"},
        {"type": "robot", "id": PERSON},
        {"type": "person", "id": "110105194912310021"},  # wrong check character
        {"type": "enterprise", "id": PERSON},
        {"type": "person", "id": 360426199101010071},
    ],
)
def test_malformed_subject_claims_are_refused(pki: Pki, claim: object) -> None:
    with pytest.raises(AuthenticationError) as err:
        caller_auth(pki).authenticate(context(pki, "self_service", subject=claim))
    assert err.value.reason == "TOKEN_MALFORMED"
    assert PERSON not in err.value.message
