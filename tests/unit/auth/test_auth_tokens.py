"""TokenVerifier rules, its reuse/replay cache, key configuration, minting and the CLI."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.auth.tokens import (
    TokenVerifier,
    TrustedIssuer,
    issue_token,
    load_signing_key,
    token_main,
)
from gateway.dev.pki import Pki, cert_thumbprint_pem
from gateway.errors import AuthenticationError, ConfigError
from tests.helpers import Clock

AUD = "urn:credit-gateway:unit"
T0 = 1_900_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def verifier(auth_pki: Pki, clock: Clock) -> TokenVerifier:
    issuer = TrustedIssuer.from_jwks_file(auth_pki.agency_token.issuer, auth_pki.agency_token.jwks)
    return TokenVerifier([issuer], audience=AUD, clock=clock)


def thumb(pki: Pki, agency: str = "ndrc") -> str:
    return cert_thumbprint_pem(pki.agency_cert(agency).read_bytes())


def mint(pki: Pki, **kw: Any) -> str:
    kid = kw.pop("kid", pki.agency_token.signing_kid)
    kw.setdefault("issuer", pki.agency_token.issuer)
    kw.setdefault("audience", AUD)
    kw.setdefault("subject", "ndrc")
    kw.setdefault("cert_thumbprint", thumb(pki))
    kw.setdefault("now", T0)
    return issue_token(pki.agency_token.key(kid), kid, **kw)


def reason(verifier: TokenVerifier, token: str | None, cert: str) -> str:
    with pytest.raises(AuthenticationError) as info:
        verifier.verify(token, cert)
    assert info.value.reason.startswith("TOKEN_")
    if token:
        assert token not in info.value.message
    return info.value.reason


def test_good_token(auth_pki: Pki, verifier: TokenVerifier) -> None:
    v = verifier.verify(mint(auth_pki, jti="j1"), thumb(auth_pki))
    assert (v.subject, v.jti, v.kid, v.algorithm) == (
        "ndrc",
        "j1",
        auth_pki.agency_token.signing_kid,
        "EdDSA",
    )
    assert v.expires_at - v.issued_at == 3600
    assert "claims" not in repr(v)


def test_es256_key_of_the_same_issuer(auth_pki: Pki, verifier: TokenVerifier) -> None:
    es256 = next(k for k in auth_pki.agency_token.keys if k.startswith("es256-"))
    assert verifier.verify(mint(auth_pki, kid=es256), thumb(auth_pki)).algorithm == "ES256"


def test_audience_may_be_a_list(auth_pki: Pki, verifier: TokenVerifier) -> None:
    key, _ = load_signing_key(auth_pki.agency_token.key())
    claims = {
        "iss": auth_pki.agency_token.issuer,
        "aud": ["urn:other", AUD],
        "sub": "ndrc",
        "iat": int(T0),
        "exp": int(T0) + 60,
        "jti": "list-aud",
        "cnf": {"x5t#S256": thumb(auth_pki)},
    }
    token = jwt.encode(claims, key, "EdDSA", headers={"kid": auth_pki.agency_token.signing_kid})
    assert verifier.verify(token, thumb(auth_pki)).jti == "list-aud"


@pytest.mark.parametrize(
    ("offset", "ok"),
    [(3600 + 59, True), (3600 + 60, False)],  # leeway 60 s after exp
)
def test_expiry_leeway(
    auth_pki: Pki, verifier: TokenVerifier, clock: Clock, offset: int, ok: bool
) -> None:
    token = mint(auth_pki)
    clock.now = T0 + offset
    if ok:
        verifier.verify(token, thumb(auth_pki))
    else:
        assert reason(verifier, token, thumb(auth_pki)) == "TOKEN_EXPIRED"


@pytest.mark.parametrize(("skew", "ok"), [(60, True), (61, False)])
def test_issued_in_the_future_leeway(
    auth_pki: Pki, verifier: TokenVerifier, skew: int, ok: bool
) -> None:
    token = mint(auth_pki, now=T0 + skew)
    if ok:
        verifier.verify(token, thumb(auth_pki))
    else:
        assert reason(verifier, token, thumb(auth_pki)) == "TOKEN_NOT_YET_VALID"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"audience": "urn:x"}, "TOKEN_WRONG_AUDIENCE"),
        ({"issuer": "urn:x"}, "TOKEN_WRONG_ISSUER"),
        ({"lifetime_s": 3601}, "TOKEN_LIFETIME_TOO_LONG"),
        ({"cert_thumbprint": "A" * 43}, "TOKEN_CERT_MISMATCH"),
    ],
)
def test_claim_rules(
    auth_pki: Pki, verifier: TokenVerifier, kwargs: dict[str, Any], expected: str
) -> None:
    assert reason(verifier, mint(auth_pki, **kwargs), thumb(auth_pki)) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", "TOKEN_MISSING"),
        (None, "TOKEN_MISSING"),
        ("a.b", "TOKEN_MALFORMED"),
        ("a.b.c.d", "TOKEN_MALFORMED"),
        ("!!!.e30.x", "TOKEN_MALFORMED"),
        ("W10.e30.AA", "TOKEN_MALFORMED"),  # header is a JSON array
        ("x" * 9000, "TOKEN_MALFORMED"),
        ("e30.e30.", "TOKEN_ALG_NOT_ALLOWED"),  # header {} names no algorithm
    ],
)
def test_garbage(verifier: TokenVerifier, token: str | None, expected: str) -> None:
    assert reason(verifier, token, "t") == expected


def test_header_without_kid_or_with_unknown_kid(auth_pki: Pki, verifier: TokenVerifier) -> None:
    key, _ = load_signing_key(auth_pki.agency_token.key())
    no_kid = jwt.encode({"sub": "x"}, key, "EdDSA")
    assert reason(verifier, no_kid, "t") == "TOKEN_UNKNOWN_KEY"
    other = jwt.encode({"sub": "x"}, key, "EdDSA", headers={"kid": "nope"})
    assert reason(verifier, other, "t") == "TOKEN_UNKNOWN_KEY"


def test_alg_must_match_the_key(auth_pki: Pki, verifier: TokenVerifier) -> None:
    es256 = next(k for k in auth_pki.agency_token.keys if k.startswith("es256-"))
    key, _ = load_signing_key(auth_pki.agency_token.key(es256))
    # an ES256 signature presented under the Ed25519 key's kid
    token = jwt.encode(
        {"sub": "x"}, key, "ES256", headers={"kid": auth_pki.agency_token.signing_kid}
    )
    assert reason(verifier, token, "t") == "TOKEN_ALG_NOT_ALLOWED"


def test_payload_must_be_an_object(auth_pki: Pki, verifier: TokenVerifier) -> None:
    key, _ = load_signing_key(auth_pki.agency_token.key())
    token = jwt.api_jws.encode(
        b"[1]", key, "EdDSA", headers={"kid": auth_pki.agency_token.signing_kid}
    )
    assert reason(verifier, token, "t") == "TOKEN_MALFORMED"


@pytest.mark.parametrize(
    ("claim", "value", "expected"),
    [
        ("iat", True, "TOKEN_MALFORMED"),
        ("exp", "soon", "TOKEN_MALFORMED"),
        ("sub", "", "TOKEN_MALFORMED"),
        ("aud", [1], "TOKEN_MALFORMED"),
        ("cnf", {"jkt": "x"}, "TOKEN_CLAIM_MISSING"),
        ("exp", int(T0) - 1, "TOKEN_MALFORMED"),  # expires before issued (still in leeway)
        ("jti", None, "TOKEN_CLAIM_MISSING"),
        ("iss", None, "TOKEN_CLAIM_MISSING"),
        ("aud", None, "TOKEN_CLAIM_MISSING"),
        ("iat", None, "TOKEN_CLAIM_MISSING"),
        # Times outside any clock: "exp": 1e999 parses as infinity, and int() of it
        # raised OverflowError (INTERNAL) before.
        ("exp", float("inf"), "TOKEN_MALFORMED"),
        ("exp", float("nan"), "TOKEN_MALFORMED"),
        ("iat", float("-inf"), "TOKEN_MALFORMED"),
        ("nbf", float("nan"), "TOKEN_MALFORMED"),
        ("exp", 2**64, "TOKEN_MALFORMED"),
    ],
)
def test_claim_types(
    auth_pki: Pki, verifier: TokenVerifier, claim: str, value: Any, expected: str
) -> None:
    key, _ = load_signing_key(auth_pki.agency_token.key())
    claims: dict[str, Any] = {
        "iss": auth_pki.agency_token.issuer,
        "aud": AUD,
        "sub": "ndrc",
        "iat": int(T0),
        "exp": int(T0) + 60,
        "jti": "j",
        "cnf": {"x5t#S256": thumb(auth_pki)},
    }
    if value is None:
        del claims[claim]
    else:
        claims[claim] = value
    token = jwt.encode(claims, key, "EdDSA", headers={"kid": auth_pki.agency_token.signing_kid})
    assert reason(verifier, token, thumb(auth_pki)) == expected


# --- reuse, replay and the cache -------------------------------------------------------


def test_reuse_is_served_from_the_cache(
    auth_pki: Pki, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = mint(auth_pki)
    first = verifier.verify(token, thumb(auth_pki))

    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("a cached token must not be verified again")

    monkeypatch.setattr(verifier, "_verify_fully", boom)
    assert verifier.verify(token, thumb(auth_pki)) is first
    # the fast path still checks the binding
    assert reason(verifier, token, thumb(auth_pki, "bank")) == "TOKEN_CERT_MISMATCH"


def test_replay_with_a_different_string(auth_pki: Pki, verifier: TokenVerifier) -> None:
    a = mint(auth_pki, jti="same")
    b = mint(auth_pki, jti="same", now=T0 - 1)
    verifier.verify(a, thumb(auth_pki))
    assert reason(verifier, b, thumb(auth_pki)) == "TOKEN_REPLAYED"
    verifier.verify(a, thumb(auth_pki))  # the first one is unaffected


def test_a_refused_token_does_not_burn_its_jti(auth_pki: Pki, verifier: TokenVerifier) -> None:
    wrong = mint(auth_pki, jti="j2", cert_thumbprint=thumb(auth_pki, "bank"))
    assert reason(verifier, wrong, thumb(auth_pki)) == "TOKEN_CERT_MISMATCH"
    verifier.verify(mint(auth_pki, jti="j2"), thumb(auth_pki))


def test_expired_entries_are_purged(auth_pki: Pki, verifier: TokenVerifier, clock: Clock) -> None:
    for i in range(5):
        verifier.verify(mint(auth_pki, jti=f"p{i}", lifetime_s=600), thumb(auth_pki))
    long_lived = mint(auth_pki, jti="long", lifetime_s=3600)
    verifier.verify(long_lived, thumb(auth_pki))
    assert verifier.cached_tokens == 6
    clock.now = T0 + 600 + 60  # the short ones are past exp + leeway
    verifier.verify(long_lived, thumb(auth_pki))
    assert verifier.cached_tokens == 1
    # once the first token with a jti has expired, the jti is free again
    verifier.verify(mint(auth_pki, jti="p0", now=clock.now), thumb(auth_pki))
    clock.now = T0 + 7200
    assert reason(verifier, long_lived, thumb(auth_pki)) == "TOKEN_EXPIRED"
    assert verifier.cached_tokens == 0


def test_the_verified_token_cache_is_bounded_and_replay_still_refused(
    auth_pki: Pki, clock: Clock
) -> None:
    issuer = TrustedIssuer.from_jwks_file(auth_pki.agency_token.issuer, auth_pki.agency_token.jwks)
    verifier = TokenVerifier([issuer], audience=AUD, clock=clock, max_cached=3)
    tokens = [mint(auth_pki, jti=f"b{i}") for i in range(5)]
    for token in tokens:
        verifier.verify(token, thumb(auth_pki))
    assert verifier.cached_tokens == 3
    # The dropped one verifies again (the same string), and its jti is still taken.
    verifier.verify(tokens[0], thumb(auth_pki))
    assert verifier.cached_tokens == 3
    assert reason(verifier, mint(auth_pki, jti="b1", now=T0 - 1), thumb(auth_pki)) == (
        "TOKEN_REPLAYED"
    )
    clock.now = T0 + 7200  # everything expired: the jti records go too
    verifier.verify(mint(auth_pki, jti="b1", now=clock.now), thumb(auth_pki))
    assert verifier.cached_tokens == 1


# --- configuration -----------------------------------------------------------------------


def _jwks(auth_pki: Pki) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(auth_pki.agency_token.jwks.read_text())
    return data


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda j: j["keys"].clear(), "non-empty"),
        (lambda j: j["keys"][0].pop("kid"), "kid"),
        (lambda j: j["keys"][1].update(kid=j["keys"][0]["kid"]), "appears twice"),
        (lambda j: j["keys"].append({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}), "public"),
        (lambda j: j["keys"][0].update(d="AAAA"), "public"),
        (lambda j: j["keys"][0].update(x="!"), "unusable"),
        (lambda j: j["keys"][1].update(alg="ES384", crv="P-384"), "unusable"),
    ],
)
def test_bad_jwks(auth_pki: Pki, mutate: Any, problem: str) -> None:
    data = _jwks(auth_pki)
    mutate(data)
    with pytest.raises(ConfigError, match=problem):
        TrustedIssuer.from_jwks("urn:i", data, source="jwks.json")


def test_jwks_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        TrustedIssuer.from_jwks_file("urn:i", tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="JSON"):
        TrustedIssuer.from_jwks_file("urn:i", tmp_path / "bad.json")


def test_kid_shared_by_two_issuers_is_refused(auth_pki: Pki) -> None:
    a = TrustedIssuer.from_jwks("urn:a", _jwks(auth_pki))
    b = TrustedIssuer.from_jwks("urn:b", _jwks(auth_pki))
    with pytest.raises(ConfigError, match="two trusted issuers"):
        TokenVerifier([a, b], audience=AUD)
    with pytest.raises(ConfigError, match="no trusted"):
        TokenVerifier([], audience=AUD)


def test_signing_key_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_signing_key(tmp_path / "k.key")
    (tmp_path / "k.key").write_text("not a key")
    with pytest.raises(ConfigError, match="PEM"):
        load_signing_key(tmp_path / "k.key")


# --- minting CLI -------------------------------------------------------------------------


def test_token_cli(auth_pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "issue",
        "--issuer-key",
        str(auth_pki.agency_token.key()),
        "--kid",
        auth_pki.agency_token.signing_kid,
        "--iss",
        auth_pki.agency_token.issuer,
        "--aud",
        AUD,
        "--sub",
        "bank",
        "--cert",
        str(auth_pki.agency_cert("bank")),
        "--lifetime",
        "600",
    ]
    assert token_main(args) == 0
    printed = capsys.readouterr().out.strip()
    out = tmp_path / "bank.jwt"
    assert token_main([*args, "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    issuer = TrustedIssuer.from_jwks_file(auth_pki.agency_token.issuer, auth_pki.agency_token.jwks)
    verifier = TokenVerifier([issuer], audience=AUD)
    for token in (printed, out.read_text().strip()):
        v = verifier.verify(token, thumb(auth_pki, "bank"))
        assert v.subject == "bank" and v.expires_at - v.issued_at == 600
    payload = json.loads(base64.urlsafe_b64decode(printed.split(".")[1] + "=="))
    assert payload["cnf"] == {"x5t#S256": thumb(auth_pki, "bank")}


def test_token_cli_errors(auth_pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    assert token_main(["issue"]) == 2
    base = ["issue", "--kid", "k", "--iss", "i", "--aud", "a", "--sub", "s"]
    cert = ["--cert", str(auth_pki.agency_cert("bank"))]
    assert token_main([*base, *cert, "--issuer-key", "/nonexistent.key"]) == 1
    key = ["--issuer-key", str(auth_pki.agency_token.key())]
    assert token_main([*base, *key, "--cert", "/nonexistent.pem"]) == 1
    assert token_main([*base, *key, *cert, "--lifetime", "0"]) == 2
    assert "credit-gateway token" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive"):
        mint(auth_pki, lifetime_s=0)
