"""Step 2 on its own: a QueryRequest -> ValidQuery, or INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import uuid

import pytest

from gateway.domain.catalog import load_catalog
from gateway.domain.purposes import load_purposes
from gateway.errors import InvalidArgumentError, InvalidIdentifierError
from gateway.pipeline.validation import FREE_TEXT_FIELDS, Validator
from protos.credit.v1 import common_pb2, query_pb2

USCC = "91350200MA2YJ1XR9G"
RESIDENT = "11010519491231002X"
PURPOSE = "government_procurement"


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(load_catalog(), load_purposes())


def request(**kw: object) -> query_pb2.QueryRequest:
    fields: dict[str, object] = {
        "request_id": str(uuid.uuid4()),
        "subject": common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_ENTERPRISE, id=USCC),
        "purpose": PURPOSE,
        "mode": query_pb2.QUERY_MODE_FREE,
    }
    fields.update(kw)
    return query_pb2.QueryRequest(**fields)  # type: ignore[arg-type]


def ref(department: str, dataset: str) -> query_pb2.DatasetRef:
    return query_pb2.DatasetRef(department=department, dataset=dataset)


def refused(validator: Validator, req: query_pb2.QueryRequest) -> InvalidArgumentError:
    with pytest.raises(InvalidArgumentError) as info:
        validator.validate(req)
    return info.value


def test_an_enterprise_query_without_datasets_asks_every_enterprise_dataset(
    validator: Validator,
) -> None:
    rid = uuid.uuid4()
    valid = validator.validate(request(request_id=str(rid).upper()))
    assert valid.request_id == str(rid)  # normalised
    assert (valid.subject_type, valid.subject_id, valid.purpose) == ("enterprise", USCC, PURPOSE)
    names = {(d.department, d.name) for d in valid.datasets}
    assert ("market", "registration") in names and ("court", "dishonest_debtors") in names
    assert all("enterprise" in d.subject_types for d in valid.datasets)
    assert ("pbccrc", "personal_loans") not in names


def test_a_person_query_gets_person_datasets(validator: Validator) -> None:
    subject = common_pb2.Subject(type=common_pb2.SUBJECT_TYPE_PERSON, id=RESIDENT)
    valid = validator.validate(request(subject=subject))
    assert valid.subject_type == "person"
    assert all("person" in d.subject_types for d in valid.datasets)


def test_named_datasets_are_kept_in_order_once(validator: Validator) -> None:
    datasets = [ref("tax", "a_list"), ref("market", "registration"), ref("tax", "a_list")]
    valid = validator.validate(request(datasets=datasets))
    assert [(d.department, d.name) for d in valid.datasets] == [
        ("tax", "a_list"),
        ("market", "registration"),
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"subject": common_pb2.Subject(id=USCC)}, "subject.type"),
        ({"purpose": "curiosity"}, "purpose"),
        ({"mode": query_pb2.QUERY_MODE_UNSPECIFIED}, "mode"),
        ({"case_reference": "x" * 257}, "case_reference"),
        ({"datasets": [ref("tax", "no_such")]}, "datasets[0]"),
        ({"datasets": [ref("tax", "a_list"), ref("pbccrc", "personal_loans")]}, "datasets[1]"),
    ],
)
def test_each_malformed_field_is_named(
    validator: Validator, change: dict[str, object], field: str
) -> None:
    err = refused(validator, request(**change))
    assert err.field == field
    assert err.code.name == "INVALID_ARGUMENT"


def test_a_wrong_check_character_is_an_invalid_identifier(validator: Validator) -> None:
    bad = USCC[:-1] + ("0" if USCC[-1] != "0" else "1")
    err = refused(validator, request(subject=common_pb2.Subject(type=1, id=bad)))
    assert isinstance(err, InvalidIdentifierError)
    assert err.reason == "INVALID_IDENTIFIER"


def test_a_dataset_for_the_other_subject_type_says_so(validator: Validator) -> None:
    err = refused(validator, request(datasets=[ref("pbccrc", "personal_loans")]))
    assert "holds no enterprise subjects" in err.problem


@pytest.mark.parametrize("name", FREE_TEXT_FIELDS)
def test_free_text_holding_an_identifier_is_refused_without_repeating_it(
    validator: Validator, name: str
) -> None:
    err = refused(validator, request(**{name: f"about {USCC[:9]} {USCC[9:]}"}))
    assert err.field == name
    assert USCC[:9] not in str(err) and USCC[9:] not in str(err)


def test_an_unknown_purpose_is_not_echoed_whole(validator: Validator) -> None:
    err = refused(validator, request(purpose="p" * 5000))
    assert len(str(err)) < 1000
