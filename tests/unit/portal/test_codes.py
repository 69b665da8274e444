"""What a visitor types: a code to look up, a mistake explained in Chinese, or a person."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.domain.identifiers import IdentifierError, validate_uscc
from gateway.portal.codes import FULL_WIDTH, PERSONAL_MESSAGE, check_code, looks_personal
from tests.unit.privacy_kit import credit_code, resident_id_15, resident_id_18


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("91350200MA2YJ1XR9G", "91350200MA2YJ1XR9G"),
        ("  91350200ma2yj1xr9g\t", "91350200MA2YJ1XR9G"),
        ("913502000728319549", "913502000728319549"),  # all digits, and still a code
        ("\u300091110000600037341L\u3000", "91110000600037341L"),  # ideographic spaces around
        ("９１３５０２００ＭＡ２ＹＪ１ＸＲ９Ｇ", "91350200MA2YJ1XR9G"),  # full width, as IMEs type
        ("９１３５０２００ｍａ２ｙｊ１ｘｒ９ｇ", "91350200MA2YJ1XR9G"),
    ],
)
def test_valid_codes_are_looked_up_in_upper_case(typed: str, code: str) -> None:
    check = check_code(typed)
    assert check.ok and check.code == code


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "请输入18位统一社会信用代码"),
        ("9135020", "您输入了7位"),
        ("91350200MA2YJ1XR9G0", "您输入了19位"),
        ("91A50200MA2YJ1XR9G", "第3位应为数字"),
        ("91350200MA2YJ1XR9I", "第18位不是统一社会信用代码使用的字符"),
        ("91350200MO2YJ1XR9G", "第10位不是统一社会信用代码使用的字符"),
        ("91110000600037341M", "校验码（第18位）与前17位不符"),
        ("9" * 65, "输入过长"),
    ],
)
def test_a_bad_code_gets_a_chinese_message_saying_what_to_fix(typed: str, says: str) -> None:
    check = check_code(typed)
    assert not check.ok and not check.personal
    assert says in check.message
    assert typed.strip() not in check.message or not typed.strip()


@pytest.mark.parametrize(
    "typed",
    [
        "360426199101010071",  # valid
        "34052419800101001x",  # valid, lower-case x
        "110105194912310021",  # wrong check digit: still a person's number
        "3604 2619 9101 0100 71",  # with spaces
        "360426-19910101-0071",
        "３６０４２６１９９１０１０１００７１",  # full-width digits
        "360426910101007",  # first generation, 15 digits
    ],
)
def test_a_resident_identity_number_is_refused_and_never_repeated(typed: str) -> None:
    check = check_code(typed)
    assert not check.ok and check.personal
    assert check.message == PERSONAL_MESSAGE
    assert check.echo == ""


def _is_code(text: str) -> bool:
    try:
        validate_uscc(text)
    except IdentifierError:
        return False
    return True


@given(st.one_of(resident_id_18(), resident_id_15()))
def test_every_resident_identity_number_is_refused_as_personal(number: str) -> None:
    assume(not _is_code(number))  # both at once: see the next test
    check = check_code(number)
    assert check.personal and not check.ok and check.echo == ""
    assert number not in check.message


def test_a_number_that_is_both_is_looked_up_as_an_enterprise_only() -> None:
    # Valid under GB 11643 and GB 32100 at once (about one valid identity number in 31):
    # the page asks the gateway about an *enterprise* with that code, so no person's record
    # can come back, and an enterprise whose code happens to read as one is still found.
    both = "100000196609223396"
    assert _is_code(both) and looks_personal(both)
    assert check_code(both).code == both


@given(credit_code())
def test_every_valid_code_is_accepted(code: str) -> None:
    assert check_code(code).code == code


@given(
    st.text(max_size=30)
    | st.text("0123456789ABCDEFGHJKLMNPQRTUWXYIOSVZabc ", max_size=20)
    | st.text("０１２３４５６７８９ＡＢＣＭＬＹＩＯ9a\u3000", max_size=20)
)
def test_the_page_accepts_exactly_what_the_gateway_accepts(typed: str) -> None:
    try:
        expected: str | None = validate_uscc(
            typed.translate(FULL_WIDTH).strip(" \t\r\n\x0b\x0c\u3000")
        )
    except IdentifierError:
        expected = None
    check = check_code(typed)
    assert check.code == expected
    if expected is None:
        assert check.message  # every refusal says why
        assert not (check.personal and check.echo)


def test_a_date_that_does_not_exist_is_not_a_person() -> None:
    assert not looks_personal("360426199102300071")  # 30 February
    assert looks_personal("360426199102280071")
