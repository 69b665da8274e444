"""GB 32100 and GB 11643 validation: worked examples and properties."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.identifiers import (
    USCC_ALPHABET,
    IdentifierError,
    resident_id_check_char,
    uscc_check_char,
    validate_resident_id,
    validate_subject,
    validate_uscc,
)


@pytest.mark.parametrize("code", ["91110000600037341L", "91350200MA2YJ1XR9G", "913502000728319549"])
def test_valid_uscc(code: str) -> None:
    assert validate_uscc(code) == code
    assert validate_uscc(code.lower()) == code


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("91110000600037341M", "wrong check character at position 18: expected L, got M"),
        # Issued in practice but failing the check: agencies' input is rejected.
        ("91350211M0000XUF46", "wrong check character"),
        ("9111000060003734", "wrong length"),
        ("91110000600037341LL", "wrong length"),
        ("9111000060003734IL", "bad character at position 17"),
        ("O1110000600037341L", "bad character at position 1"),
        ("91110000600037341Z", "bad character at position 18"),
    ],
)
def test_invalid_uscc(code: str, problem: str) -> None:
    with pytest.raises(IdentifierError, match=problem) as exc:
        validate_uscc(code)
    assert exc.value.field == "subject.id"
    assert code not in str(exc.value)


@pytest.mark.parametrize(
    "number", ["360426199101010071", "34052419800101001X", "11010519491231002X"]
)
def test_valid_resident_id(number: str) -> None:
    assert validate_resident_id(number) == number


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("110105194912310021", "wrong check character at position 18: expected X, got 1"),
        ("11010519490231002X", "impossible birth date"),  # 31 February
        ("11010518991231002X", "impossible birth date"),
        ("1101051949123100", "wrong length"),
        ("11010519491A31002X", "bad character at position 12"),
        ("11010519491231002Y", "bad character at position 18"),
        ("11010519491231\u0660\u0660\u0660X", "bad character at position 15: U\\+0660"),
    ],
)
def test_invalid_resident_id(number: str, problem: str) -> None:
    with pytest.raises(IdentifierError, match=problem):
        validate_resident_id(number)


def test_future_birth_date_is_impossible() -> None:
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    body = "110105" + tomorrow.strftime("%Y%m%d") + "001"
    with pytest.raises(IdentifierError, match="impossible birth date"):
        validate_resident_id(body + resident_id_check_char(body))


def test_validate_subject_dispatches_on_type() -> None:
    assert validate_subject("enterprise", "91110000600037341L") == "91110000600037341L"
    assert validate_subject("person", "360426199101010071") == "360426199101010071"
    with pytest.raises(IdentifierError, match="subject.type"):
        validate_subject("robot", "360426199101010071")


# Positions 3-8 are the numeric administrative division code (GB 32100 section 4).
uscc_bodies = st.builds(
    lambda head, division, tail: head + division + tail,
    st.text(alphabet=USCC_ALPHABET, min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
    st.text(alphabet=USCC_ALPHABET, min_size=9, max_size=9),
)


@given(uscc_bodies)
def test_uscc_with_its_check_char_validates(body: str) -> None:
    assert validate_uscc(body + uscc_check_char(body)) == body + uscc_check_char(body)


@given(uscc_bodies, st.integers(0, 17), st.sampled_from(USCC_ALPHABET))
def test_uscc_single_substitution_is_caught(body: str, pos: int, ch: str) -> None:
    code = body + uscc_check_char(body)
    mutated = code[:pos] + ch + code[pos + 1 :]
    if mutated == code or (2 <= pos <= 7 and not ch.isdigit()):
        return  # a letter in 3-8 is refused by its class: tests/unit/domain/test_uscc_positions.py
    # Weights are units mod 31 (31 is prime), so any one-character change breaks the check.
    with pytest.raises(IdentifierError, match="wrong check character"):
        validate_uscc(mutated)


@given(
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2020, 12, 31)),
    st.integers(0, 999),
    st.integers(0, 16),
    st.integers(1, 9),
)
def test_resident_id_properties(born: dt.date, seq: int, pos: int, delta: int) -> None:
    body = "350203" + born.strftime("%Y%m%d") + f"{seq:03d}"
    number = body + resident_id_check_char(body)
    assert validate_resident_id(number) == number
    # Change one digit outside the birth date: the check character catches it.
    if 6 <= pos < 14:
        return
    digit = str((int(body[pos]) + delta) % 10)
    mutated = body[:pos] + digit + body[pos + 1 :] + number[17]
    with pytest.raises(IdentifierError, match="wrong check character"):
        validate_resident_id(mutated)
