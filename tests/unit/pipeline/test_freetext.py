"""Nothing personal in the permanent record: the free-text
screen, the recording rule, and a property test that hides valid identifiers in
every free-text field of a query, runs it through the real validator and the
real QueryAuditor onto a real AuditLog (SQLite file, signed), and through the
JSON log formatter, and finds the identifier in none of the bytes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.audit import Ed25519Signer, generate_key
from gateway.audit.auditor import QueryAuditor
from gateway.audit.log import AuditLog
from gateway.audit.records import decode_record
from gateway.domain.catalog import load_catalog
from gateway.domain.purposes import load_purposes
from gateway.errors import (
    DepartmentTimeoutError,
    GatewayError,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
)
from gateway.pipeline.freetext import (
    PSEUDONYM_PREFIX,
    WITHHELD,
    echo,
    holds_identifier,
    joined_identifier,
    recordable,
    redact,
    scan,
    text_pseudonym,
)
from gateway.pipeline.validation import FREE_TEXT_FIELDS, Validator
from gateway.runtime.logs import JsonFormatter
from protos.credit.v1 import common_pb2, query_pb2
from tests.unit.privacy_kit import compact, hidden, identifiers, leaks, near_hex_token

KEY = b"k" * 32
ISSUE_ID = "11010519491231002X"
ISSUE_15 = "110105491231002"
HEX_UUID = "550e8400e29b41d4a716446655440000"
ENTERPRISE = "91110000600037341L"
SPLIT_ID = "１１０１０５-1949 1231.002x"


# --- the issue's inputs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        ISSUE_ID,
        ISSUE_ID.lower(),
        ISSUE_15,  # first generation, 15 digits, no check character
        f"file of {ISSUE_15}",
        "110105 19491231 002X",  # spaces
        "110105-19491231-002X",  # hyphens
        "110105.1949.1231.002x",  # dots
        "110105_19491231_002X",  # underscores
        "110105/19491231/002X",  # slashes
        "1101\u200b0519491231\u200c002X",  # zero-width
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width
        "１１０１０５ ４９１２３１ ００２",  # full-width, first generation, ideographic space
        "案号(2024)京0105民初 110105-491231-002 号",
        ENTERPRISE,
        "91 1100 0060 0037 341L",
        "９１１１０００００６０００３７３４１Ｌ",
        "91350211M0000XUF46",  # issued in practice, fails its check: still caught
        # Chinese numerals, whole or mixed with digits (an outside tester's inputs):
        "三五〇二〇三一九八七一〇〇六二六四一",
        "3502031987一〇〇六2641",
        "壹壹〇壹〇伍壹玖肆玖壹贰叁壹〇〇贰X",
    ],
)
def test_identifiers_in_free_text_are_caught(text: str) -> None:
    assert holds_identifier(text)
    assert recordable(KEY, text).startswith(PSEUDONYM_PREFIX)
    assert echo(text) == WITHHELD
    assert compact(ISSUE_ID) not in compact(redact(text))
    assert compact(ISSUE_15) not in compact(redact(text))


@pytest.mark.parametrize(
    "text",
    [
        HEX_UUID,  # the issue's UUID in hex form: was refused
        HEX_UUID.upper(),
        "550e8400-e29b-41d4-a716-446655440000",
        f"ticket {HEX_UUID}",
        "officer_a",
        "ticket 4711",
        "(2024)京0105民初12345号",
        "BJ-2024-000123-loan",
        "tel 13800138000",
        "",
        # A reference ending in a UUID (was refused: "PAY20261130" ran into the hex).
        "PAY-20261130-9f0c2a52-8f4e-4a4b-9d55-0c1e6f3b2a01",
        "第一次会议纪要，二〇二六年十一月三十日",
        "一二三四五六七八九十",
    ],
)
def test_ordinary_free_text_passes(text: str) -> None:
    assert not holds_identifier(text)


def test_uuids_are_never_refused() -> None:
    for _ in range(20_000):
        u = uuid.uuid4()
        assert not holds_identifier(u.hex) and not holds_identifier(str(u))


def test_clean_text_is_recorded_as_written() -> None:
    assert recordable(KEY, "ticket 4711") == "ticket 4711"
    assert recordable(KEY, HEX_UUID) == HEX_UUID
    assert recordable(KEY, "") == ""


def test_the_pseudonym_is_keyed_and_an_auditor_can_match_it() -> None:
    recorded = recordable(KEY, ISSUE_ID)
    assert recorded == text_pseudonym(KEY, ISSUE_ID)
    assert recorded == text_pseudonym(KEY, "１１０１０５１９４９１２３１００２Ｘ")  # NFKC
    assert recorded != text_pseudonym(b"j" * 32, ISSUE_ID)
    assert len(recorded) == len(PSEUDONYM_PREFIX) + 64
    assert ISSUE_ID not in recorded


def test_text_that_cannot_be_screened_whole_is_pseudonymised() -> None:
    # Too long to record: a truncation could cut an identifier in two.
    assert recordable(KEY, "x" * 300).startswith(PSEUDONYM_PREFIX)
    # Nobody can write something that reads as a pseudonym.
    assert recordable(KEY, "hmac:00").startswith(PSEUDONYM_PREFIX)
    assert recordable(KEY, "hmac:00") != "hmac:00"


def test_findings_point_into_the_original_text() -> None:
    text = "警员 110105-19491231-002X 查询"
    found = scan(text)
    assert found and all(not f.in_hex for f in found)
    assert min(f.start for f in found) == text.index("1")
    assert max(f.end for f in found) == text.index("X") + 1
    assert redact(text) == "警员 [redacted] 查询"


# --- the validator ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(load_catalog(), load_purposes())


def query(**fields: str) -> query_pb2.QueryRequest:
    req = query_pb2.QueryRequest(
        request_id=str(uuid.uuid4()),
        purpose="supervision_inspection",
        mode=query_pb2.QUERY_MODE_FREE,
    )
    req.subject.type = common_pb2.SUBJECT_TYPE_ENTERPRISE
    req.subject.id = ENTERPRISE
    for name, value in fields.items():
        setattr(req, name, value)
    return req


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("officer_id", ISSUE_ID),
        ("case_reference", ISSUE_15),
        ("case_reference", "110105 19491231 002X"),
        ("represented_party", "110105-19491231-002X"),
        ("officer_id", "１１０１０５１９４９１２３１００２Ｘ"),
    ],
)
def test_the_validator_refuses_naming_the_field_never_the_text(
    validator: Validator, field: str, text: str
) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        validator.validate(query(**{field: text}))
    assert exc.value.field == field
    assert not leaks(ISSUE_ID if "X" in compact(text) else ISSUE_15, json.dumps(str(exc.value)))


def test_the_validator_accepts_a_hex_uuid(validator: Validator) -> None:
    valid = validator.validate(query(case_reference=HEX_UUID, officer_id=str(uuid.uuid4())))
    assert valid.subject_id == ENTERPRISE


def test_an_unknown_purpose_is_not_echoed_if_it_holds_an_identifier(
    validator: Validator,
) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        validator.validate(query(purpose=f"check {ISSUE_ID}"))
    assert exc.value.field == "purpose" and WITHHELD in exc.value.message
    with pytest.raises(InvalidArgumentError) as exc:
        validator.validate(query(purpose="curiosity"))
    assert "'curiosity'" in exc.value.message  # ordinary text still helps the caller


def test_a_dataset_name_is_not_echoed_if_it_holds_an_identifier(validator: Validator) -> None:
    req = query()
    req.datasets.add(department="market", dataset=ISSUE_ID)
    with pytest.raises(InvalidArgumentError) as exc:
        validator.validate(req)
    assert exc.value.field == "datasets[0]" and ISSUE_ID not in exc.value.message


# --- the auditor on a real log ----------------------------------------------------------


class Harness:
    """A real QueryAuditor over a real AuditLog (SQLite file, signed), driven
    from synchronous hypothesis examples on one event loop."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        skey, _ = generate_key("credit-gateway.test/audit")
        self.log = self.loop.run_until_complete(
            AuditLog.open(path, Ed25519Signer.from_key_string(skey))
        )
        self.auditor = QueryAuditor(
            self.log, KEY, gateway_origin=self.log.origin, purposes=tuple(load_purposes())
        )

    def record(
        self,
        request: query_pb2.QueryRequest,
        error: GatewayError | None,
        *,
        valid: Validator | None = None,
        consent_id: str = "",
    ) -> bytes:
        q = valid.validate(request) if valid is not None else None
        response = None
        if error is None:
            assert q is not None
            response = query_pb2.QueryResponse(request_id=q.request_id, policy_version="p1")
        receipt = self.loop.run_until_complete(
            self.auditor.append_query(q, None, request, response, error, consent_id=consent_id)
        )
        assert receipt is not None
        leaf = self.loop.run_until_complete(self.log.read_leaf(receipt.index))
        assert leaf is not None
        return leaf

    def close(self) -> None:
        self.loop.run_until_complete(self.log.close())
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "audit.sqlite")
    yield h
    h.close()


def test_a_query_refused_for_its_officer_id_records_only_a_pseudonym(
    harness: Harness, validator: Validator
) -> None:
    """The issue's case: refused *because* officer_id holds 11010519491231002X."""
    request = query(officer_id=ISSUE_ID)
    with pytest.raises(InvalidArgumentError) as exc:
        validator.validate(request)
    leaf = harness.record(request, exc.value)
    record = decode_record(leaf)
    assert record["outcome"] == "invalid_argument" and record["error_field"] == "officer_id"
    assert record["officer_id"] == text_pseudonym(KEY, ISSUE_ID)
    for form in (ISSUE_ID, ISSUE_ID.lower(), "１１０１０５１９４９１２３１００２Ｘ"):
        assert form.encode() not in leaf
    assert not leaks(ISSUE_ID, leaf)
    # The same text is still matched by an auditor holding the key.
    assert record["officer_id"] == recordable(KEY, ISSUE_ID)


def test_a_refused_query_records_clean_text_and_a_known_purpose_as_written(
    harness: Harness,
) -> None:
    request = query(officer_id="officer_a", case_reference="ticket 4711")
    record = decode_record(harness.record(request, PermissionDeniedError("no")))
    assert record["officer_id"] == "officer_a" and record["case_reference"] == "ticket 4711"
    assert record["purpose"] == "supervision_inspection"
    request = query(purpose="curiosity")
    record = decode_record(harness.record(request, InvalidArgumentError("purpose", "unknown")))
    assert record["purpose"] == text_pseudonym(KEY, "curiosity")


def test_a_consent_id_that_is_a_uuid_is_recorded_as_written(harness: Harness) -> None:
    """A verified consent's UUID id stays followable, even one whose hex holds a
    check-valid credit-code shape (about one in thirty did turn into a
    pseudonym); an issuer's id of another form is free text."""
    holding = next(
        c for c in (str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(10**5)) if scan(c)
    )
    request = query(officer_id="officer_a")
    record = decode_record(harness.record(request, PermissionDeniedError("no"), consent_id=holding))
    assert record["consent_id"] == holding
    other = f"cid:{ISSUE_ID}"
    record = decode_record(harness.record(request, PermissionDeniedError("no"), consent_id=other))
    assert record["consent_id"] == text_pseudonym(KEY, other)


_ERRORS = st.sampled_from(
    [
        InvalidArgumentError("case_reference", "holds an identifier"),
        PermissionDeniedError("denied"),
        DepartmentTimeoutError("slow"),
        InternalError("bug"),
    ]
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(secret=hidden(), error=_ERRORS)
def test_no_hidden_identifier_reaches_a_record_or_a_log(
    harness: Harness, validator: Validator, secret: tuple[str, str], error: GatewayError
) -> None:
    identifier, text = secret
    fields = (*FREE_TEXT_FIELDS, "purpose")
    for field in fields:
        request = query(**{field: text})
        # Validation refuses it, naming the field and not repeating the text.
        try:
            validator.validate(request)
        except InvalidArgumentError as exc:
            refused: InvalidArgumentError | None = exc
        else:
            refused = None
        if not near_hex_token(text):
            assert refused is not None and refused.field == field
        if refused is not None:
            assert not leaks(identifier, json.dumps(refused.message))
        # Refused at any step, or failed: only a pseudonym is recorded.
        assert not leaks(identifier, harness.record(request, refused or error))
    # Every field at once, and an answered query whose consent id is the text.
    everything = query(**dict.fromkeys(fields, text))
    assert not leaks(identifier, harness.record(everything, error, consent_id=text))
    assert not leaks(identifier, harness.record(query(), None, valid=validator, consent_id=text))
    # The log: the message with its arguments, every allowed field, a traceback.
    # (Hex tokens, request ids among them, are left whole in log lines.)
    if not near_hex_token(text):
        assert not leaks(identifier, log_line(text))


def log_line(text: str) -> str:
    logger = logging.getLogger("tests.privacy")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError(text)
        except ValueError:
            logger.exception(
                "policy version %d %sd by %s",
                3,
                "activate",
                text,
                extra={"reason": text, "request_id": text, "kid": text, "agency": text},
            )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    assert json.loads(line)["msg"].startswith("policy version 3 activate")
    return line


def test_a_log_line_keeps_request_ids_whole() -> None:
    ids = [str(uuid.uuid4()) for _ in range(5000)]
    for request_id in ids:
        assert redact(request_id) == request_id
        # After a word too: "by" + the first digits once read as a credit code
        # outside the token, and one line in twelve lost part of its request id.
        assert redact(f"activated by {request_id}") == f"activated by {request_id}"
    line = json.loads(log_line(ids[0]))
    assert line["request_id"] == ids[0] and line["msg"].endswith(ids[0])


def test_a_log_line_keeps_what_is_not_an_identifier() -> None:
    # (Latin letters run on into a number once separators go, and may be masked with it.)
    line = json.loads(log_line(f"警员甲（{ISSUE_ID}）"))
    assert line["msg"] == "policy version 3 activated by 警员甲（[redacted]）"
    assert line["reason"] == "警员甲（[redacted]）"
    assert "ValueError" in line["exc"] and ISSUE_ID not in line["exc"]


class _Metadata:
    """The one call the development authenticators make on a gRPC context."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = pairs

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.pairs


def test_development_headers_never_carry_an_identifier_into_labels_or_records() -> None:
    from typing import Any, cast

    from gateway.api.policy_admin import DEV_OFFICER_HEADER, dev_officer
    from gateway.auth.identity import InsecureDevAuthenticator
    from gateway.errors import AuthenticationError

    agencies = InsecureDevAuthenticator()
    ok = cast(Any, _Metadata((InsecureDevAuthenticator.HEADER, "bank")))
    assert agencies.authenticate(ok).agency_id == "bank"
    assert dev_officer(cast(Any, _Metadata((DEV_OFFICER_HEADER, "officer_a")))) == "officer_a"
    for text in (ISSUE_ID, SPLIT_ID):
        with pytest.raises(AuthenticationError) as exc:
            agencies.authenticate(cast(Any, _Metadata((InsecureDevAuthenticator.HEADER, text))))
        assert not leaks(ISSUE_ID, json.dumps(exc.value.message))
        with pytest.raises(AuthenticationError) as exc:
            dev_officer(cast(Any, _Metadata((DEV_OFFICER_HEADER, text))))
        assert not leaks(ISSUE_ID, json.dumps(exc.value.message))


# --- an identifier split across the fields of one request --------------------------------


@pytest.mark.parametrize(
    ("officer_id", "case_reference", "represented_party"),
    [
        ("110105194912", "31002X", ""),  # an outside tester's input
        ("", "31002X (case)", "110105194912"),  # in another order
        ("9111000060", "0037", "341L"),  # a credit code over three fields
        ("一一〇一〇五一九四九", "一二三一〇〇二X", ""),
    ],
)
def test_an_identifier_split_across_fields_is_refused_and_never_recorded(
    harness: Harness,
    validator: Validator,
    officer_id: str,
    case_reference: str,
    represented_party: str,
) -> None:
    request = query(
        officer_id=officer_id, case_reference=case_reference, represented_party=represented_party
    )
    with pytest.raises(InvalidArgumentError) as exc:
        validator.validate(request)
    assert exc.value.field == "case_reference+officer_id+represented_party"
    record = decode_record(harness.record(request, exc.value))
    for name, text in (
        ("officer_id", officer_id),
        ("case_reference", case_reference),
        ("represented_party", represented_party),
    ):
        assert record[name] == (text_pseudonym(KEY, text) if text else "")


def test_numbers_that_only_meet_by_chance_are_not_refused(validator: Validator) -> None:
    """An officer's number and a case number side by side: a 15-digit run across
    the junction, but no real identifier (no birth date, no check character)."""
    texts = ["警号 1234567", "2026-00012345", ""]
    assert not joined_identifier(texts)
    validator.validate(query(officer_id=texts[0], case_reference=texts[1]))


@given(hidden_id=identifiers, cuts=st.lists(st.integers(1, 17), min_size=1, max_size=2))
@settings(max_examples=150, deadline=None)
def test_property_a_real_identifier_split_anyhow_is_found(hidden_id: str, cuts: list[int]) -> None:
    points = sorted({min(c, len(hidden_id) - 1) for c in cuts})
    parts = [hidden_id[a:b] for a, b in zip([0, *points], [*points, len(hidden_id)], strict=True)]
    assume(not any(holds_identifier(p) for p in parts))
    assert joined_identifier(parts)


def test_a_validated_query_says_whether_its_texts_were_screened_clean(
    validator: Validator,
) -> None:
    """ValidQuery.plain_text: nothing at all found (the record then takes the texts
    without a second screening); a hex token's finding is allowed but not plain."""
    assert validator.validate(query(officer_id="officer 7", case_reference="2026-11")).plain_text
    assert validator.validate(query()).plain_text
    assert validator.validate(query(case_reference=HEX_UUID)).plain_text  # finds nothing
    # A digest whose digits read as a real resident number: allowed, not plain.
    digest = "deadbeef110105194912310021cafebabe0000"
    assert scan(digest) and not holds_identifier(digest)
    assert not validator.validate(query(case_reference=digest)).plain_text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[0-9A-Z \-]{6,30}", fullmatch=True))
def test_a_text_screened_clean_is_recorded_as_free_text_would(text: str) -> None:
    """The record's shortcut for a validated query's texts (no second screening) gives
    what recordable gives, for every text the screening finds nothing in."""
    auditor = QueryAuditor(None, KEY, gateway_origin="gw")  # type: ignore[arg-type]
    if not scan(text):
        assert (
            auditor.free_text(text, scanned=True)
            == recordable(KEY, text, scanned=True)
            == auditor.free_text(text)
            == recordable(KEY, text)
        )
    for odd in ("hmac:" + "0" * 64, "x" * 257):  # the other conditions still hold
        assert auditor.free_text(odd, scanned=True) == recordable(KEY, odd) != odd
