"""Every input gets a clean status: every method of every gateway service, over a real
mutual-TLS federation, as allowed and refused callers, with garbage bytes and with
boundary-value messages generated from the services' own descriptors (hypothesis).

Whatever is sent, the answer is never UNKNOWN or INTERNAL, names no exception, traceback or
server path, and every refusal leaves a record in the audit log that holds nothing the
caller wrote.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.audit.records import decode_record
from gateway.auth.tokens import load_signing_key
from gateway.dev.devstack import AUDIENCE, DevStack
from gateway.dev.pki import DEV_AGENCY_ISSUER, cert_thumbprint_pem
from protos.credit.v1 import audit_pb2, billing_pb2, policy_admin_pb2, query_pb2

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVICES = [
    query_pb2.DESCRIPTOR.services_by_name["QueryService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    billing_pb2.DESCRIPTOR.services_by_name["BillingAdmin"],
    policy_admin_pb2.DESCRIPTOR.services_by_name["PolicyAdmin"],
]
METHODS = [(s.full_name, m) for s in SERVICES for m in s.methods]
#: Who may call each service (role folder of the PKI, principal).
ALLOWED = {
    "credit.v1.QueryService": ("agencies", "ndrc"),
    "credit.v1.AuditService": ("auditors", "auditor"),
    "credit.v1.BillingAdmin": ("finance", "finance"),
    "credit.v1.PolicyAdmin": ("officers", "officer_a"),
}
PRINCIPALS = [("agencies", "ndrc"), ("officers", "officer_a"), ("auditors", "auditor")]
PRINCIPALS += [("finance", "finance")]
#: Planted in every generated string: it must never reach a refusal record.
MARKER = "FUZZ7b1d"
GARBAGE = b"\xff\xff\xff\xff\x0f"
#: Statuses that are not refusals: a retry hint, and a log that cannot record anything.
NOT_REFUSALS = {"NOT_YET_INTEGRATED", "AUDIT_UNAVAILABLE"}
_EXCEPTION_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b")


@dataclass
class Caller:
    label: str
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]


def _forged_token(stack: DevStack, payload: bytes) -> str:
    """A token signed by the trusted issuer's real key over ``payload`` bytes verbatim
    (JSON such as ``"exp": 1e999`` that no JSON encoder would write)."""
    key, alg = load_signing_key(stack.pki.agency_token.key())
    return jwt.PyJWS().encode(
        payload, key, algorithm=alg, headers={"kid": stack.pki.agency_token.signing_kid}
    )


def _claims_with_infinite_exp(stack: DevStack, role_dir: str, principal: str) -> bytes:
    cert = stack.pki.principal_cert(role_dir, principal).read_bytes()
    claims = {
        "iss": DEV_AGENCY_ISSUER,
        "aud": AUDIENCE,
        "sub": principal,
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "cnf": {"x5t#S256": cert_thumbprint_pem(cert)},
    }
    text = json.dumps(claims)
    return (text[:-1] + ', "exp": 1e999}').encode()


@pytest.fixture(scope="module")
def callers(stack: DevStack) -> Iterator[dict[str, Caller]]:
    out: dict[str, Caller] = {}
    for role_dir, principal in PRINCIPALS:
        channel, md = stack.channel(role_dir, principal)
        out[principal] = Caller(principal, channel, md)
    channel, _ = stack.channel("agencies", "ndrc")
    out["no token"] = Caller("no token", channel, ())
    out["bad token"] = Caller("bad token", channel, (("authorization", "Bearer not.a.jwt"),))
    payload = _claims_with_infinite_exp(stack, "agencies", "ndrc")
    forged = _forged_token(stack, payload)
    out["exp 1e999"] = Caller("exp 1e999", channel, (("authorization", f"Bearer {forged}"),))
    yield out


def _status_text(err: grpc.aio.AioRpcError) -> str:
    """The message and every detail of a status, as text."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    details = status.SerializeToString().decode("latin-1") if status is not None else ""
    return f"{err.details()}\n{details}"


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    if status is not None:
        for detail in status.details:
            if detail.Unpack(info):
                return str(info.reason)
    return ""


def _is_refusal_record(record: dict[str, Any]) -> bool:
    kind = record.get("kind")
    if kind == "refusal":
        return True
    if kind == "query":
        return record.get("outcome") not in ("ok", "partial")
    return kind == "policy_admin" and record.get("outcome") == "refused"


async def _send(
    stack: DevStack, caller: Caller, service: str, method: str, body: bytes, what: str
) -> grpc.StatusCode:
    """Call, check the answer and, for a refusal, that it is on the audit record."""
    audit_log = stack.gateway._audit.log  # type: ignore[union-attr]
    before = audit_log.size
    where = f"{service}/{method} as {caller.label} with {what}"
    try:
        await caller.channel.unary_unary(f"/{service}/{method}")(
            body, metadata=caller.metadata, timeout=30
        )
    except grpc.aio.AioRpcError as err:
        code = err.code()
        assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (where, err)
        text = _status_text(err)
        assert "Traceback" not in text and "Error:" not in text, (where, text)
        assert not _EXCEPTION_NAME.search(text), (where, text)
        assert str(stack.workdir) not in text and "/tmp/" not in text, (where, text)
        assert ".py" not in text and "site-packages" not in text, (where, text)
        if _reason(err) in NOT_REFUSALS:
            return code
        assert audit_log.size > before, f"refusal not audited: {where}: {err.details()}"
        leaves = [await audit_log.read_leaf(i) for i in range(before, audit_log.size)]
        records = [decode_record(leaf) for leaf in leaves if leaf is not None]
        assert any(_is_refusal_record(r) for r in records), (where, records)
        for leaf, record in zip(leaves, records, strict=True):
            if record.get("kind") == "refusal":
                assert leaf is not None and MARKER.encode() not in leaf, (where, record)
        return code
    return grpc.StatusCode.OK


async def test_every_method_every_caller_empty_and_garbage(
    stack: DevStack, callers: dict[str, Caller]
) -> None:
    seen: dict[grpc.StatusCode, int] = {}
    for service, method in METHODS:
        for caller in callers.values():
            for what, body in (("an empty request", b""), ("garbage bytes", GARBAGE)):
                code = await _send(stack, caller, service, method.name, body, what)
                seen[code] = seen.get(code, 0) + 1
    # Each kind of answer was met: allowed, refused for who, refused for what.
    assert {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    } <= set(seen), seen


async def test_undecodable_bytes_name_the_message_type(
    stack: DevStack, callers: dict[str, Caller]
) -> None:
    caller = callers["no token"]  # before authentication: the body is looked at first
    for service, method in METHODS:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await caller.channel.unary_unary(f"/{service}/{method.name}")(GARBAGE, timeout=30)
        assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details() == (
            f"request: not a valid {method.input_type.full_name} message"
        )
        assert _reason(exc.value) == "MALFORMED_REQUEST"


async def test_a_token_expiring_at_1e999_is_unauthenticated_everywhere(
    stack: DevStack, callers: dict[str, Caller]
) -> None:
    caller = callers["exp 1e999"]
    for service, method in METHODS:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await caller.channel.unary_unary(f"/{service}/{method.name}")(
                b"", metadata=caller.metadata, timeout=30
            )
        assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED, (service, method.name)
        # Refused by the claim check itself now, naming the claim (our word, not the
        # caller's); the edge's catch-all would say "token is malformed".
        assert exc.value.details() == "token claim 'exp' is not a time in range"
        assert _reason(exc.value) == "TOKEN_MALFORMED"


async def test_policy_versions_beyond_sqlite_integers_are_not_found(
    stack: DevStack, callers: dict[str, Caller]
) -> None:
    officer = callers["officer_a"]
    for version in (2**63, 2**64 - 1):
        for method, request in [
            ("GetVersion", policy_admin_pb2.VersionRequest(version=version)),
            ("Validate", policy_admin_pb2.VersionRequest(version=version)),
            ("Test", policy_admin_pb2.VersionRequest(version=version)),
            ("Approve", policy_admin_pb2.ApproveRequest(version=version, reason="ok")),
            ("Activate", policy_admin_pb2.ActivateRequest(version=version, reason="ok")),
            ("Diff", policy_admin_pb2.DiffRequest(version=1, base=version)),
            ("Replay", policy_admin_pb2.ReplayRequest(version=version)),
        ]:
            code = await _send(
                stack,
                officer,
                "credit.v1.PolicyAdmin",
                method,
                request.SerializeToString(),
                f"version {version}",
            )
            assert code is grpc.StatusCode.NOT_FOUND, (method, version, code)


async def test_billing_boundaries_are_invalid_arguments(
    stack: DevStack, callers: dict[str, Caller]
) -> None:
    finance = callers["finance"]
    for method, request in [
        ("Statement", billing_pb2.StatementRequest(
            account_id="bank", from_date="2026-01-01", to_date="2026-01-02",
            page_token="9999999999999999999",
        )),
        ("TopUp", billing_pb2.TopUpRequest(
            account_id="bank", amount_fen=2**63 - 1, reference="max"
        )),
        ("TopUp", billing_pb2.TopUpRequest(
            account_id="bank", amount_fen=-(2**63), reference="min"
        )),
        ("GetBalance", billing_pb2.GetBalanceRequest(account_id="x" * 100_000)),
    ]:  # fmt: skip
        code = await _send(
            stack, finance, "credit.v1.BillingAdmin", method, request.SerializeToString(), "edges"
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (method, code)


# --- boundary values, generated from the descriptors -----------------------------------

_FD = descriptor.FieldDescriptor
_INT_RANGES = {
    _FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FD.TYPE_UINT32: (0, 2**32 - 1),
    _FD.TYPE_FIXED32: (0, 2**32 - 1),
    _FD.TYPE_UINT64: (0, 2**64 - 1),
    _FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        MARKER * 12_500,  # 100,000 characters
        f"{MARKER} 11010519491231002X",
        "../../../../etc/passwd",
        "'; DROP TABLE versions; --",
        "\u202e\u0000\ufeff",
        "9223372036854775808",
        "-1",
        "2026-02-30",
        "market/registration",
    ]
) | st.text(max_size=30).map(lambda s: MARKER + s)


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (lo, lo + 1, -1, 0, 1, 2**31, 2**53, hi - 1, hi) if lo <= v <= hi})
    return st.sampled_from(edges) | st.integers(lo, hi)


def _scalar(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type in _INT_RANGES:
        return _ints(*_INT_RANGES[field.type])
    if field.type == _FD.TYPE_BOOL:
        return st.booleans()
    if field.type == _FD.TYPE_STRING:
        return _STRINGS
    if field.type == _FD.TYPE_BYTES:
        return st.binary(max_size=64) | st.just(b"\x00" * 100_000)
    if field.type == _FD.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.sampled_from([*numbers, 999, -1])
    if field.type in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    assert field.message_type is not None
    return _messages(field.message_type, depth + 1)


def _messages(desc: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(desc)
    if depth > 2:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue
        one = _scalar(field, depth)
        if field.is_repeated:
            # Few, or very many of one small value: a "huge repeated field" that still
            # fits gRPC's 4 MiB message limit (past it, grpc refuses before any of ours).
            fields[field.name] = st.lists(one, max_size=3) | one.map(_many)
        else:
            fields[field.name] = one
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _many(value: Any) -> list[Any]:
    size = value.ByteSize() if isinstance(value, Message) else len(str(value))
    return [value] * (5_000 if size <= 200 else 2)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        target = getattr(msg, name)
        if isinstance(value, list):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def _examples(desc: descriptor.Descriptor, n: int) -> list[Message]:
    """``n`` messages drawn by hypothesis (collected, then sent from the event loop)."""
    drawn: list[Message] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(_messages(desc))
    def collect(msg: Message) -> None:
        drawn.append(msg)

    collect()
    return drawn


async def test_boundary_values_on_every_method(stack: DevStack, callers: dict[str, Caller]) -> None:
    sent: dict[str, int] = {}
    for service, method in METHODS:
        allowed = callers[ALLOWED[service][1]]
        refused = callers["ndrc" if service != "credit.v1.QueryService" else "auditor"]
        for i, msg in enumerate(_examples(method.input_type, 10)):
            caller = refused if i == 0 else allowed
            body = msg.SerializeToString()
            what = f"a generated {method.input_type.name} ({len(body)} bytes): {str(msg)[:300]}"
            await _send(stack, caller, service, method.name, body, what)
            sent[method.full_name] = sent.get(method.full_name, 0) + 1
    # Messages without fields have one value; every other method got many.
    assert len(sent) == len(METHODS) and sum(sent.values()) > 6 * len(METHODS), sent


async def test_a_query_refused_before_authentication_names_the_certificate(
    stack: DevStack, callers: dict[str, Caller]
) -> None:
    audit_log = stack.gateway._audit.log  # type: ignore[union-attr]
    body = query_pb2.QueryRequest(request_id=str(uuid.uuid4()), purpose="lending")
    code = await _send(
        stack, callers["bad token"], "credit.v1.QueryService", "Query",
        body.SerializeToString(), "a bad token",
    )  # fmt: skip
    assert code is grpc.StatusCode.UNAUTHENTICATED
    leaf = await audit_log.read_leaf(audit_log.size - 1)
    assert leaf is not None
    record = decode_record(leaf)
    cert = stack.pki.principal_cert("agencies", "ndrc").read_bytes()
    assert record["kind"] == "query" and record["outcome"] == "token_malformed"
    assert record["agency_id"] == "" and record["cert_thumbprint"] == cert_thumbprint_pem(cert)
