"""GB 32100 position classes, checked on the raw input before any case mapping.

Positions 3-8 of a unified social credit code are the numeric administrative division code
(GB/T 2260); a letter there is refused naming its position even when the mod-31 check
character fits. ASCII lower case is read as the capital it stands for (the alphabet has no
two characters differing by case); no other case mapping ever applies.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.identifiers import (
    USCC_ALPHABET,
    IdentifierError,
    uscc_check_char,
    validate_uscc,
)

DIGITS = "0123456789"
LETTERS = "".join(c for c in USCC_ALPHABET if not c.isdigit())

valid_codes = st.builds(
    lambda head, division, tail: (body := head + division + tail) + uscc_check_char(body),
    st.text(alphabet=USCC_ALPHABET, min_size=2, max_size=2),
    st.text(alphabet=DIGITS, min_size=6, max_size=6),
    st.text(alphabet=USCC_ALPHABET, min_size=9, max_size=9),
)


def test_the_issue_example_is_refused_at_position_3() -> None:
    # 91 MA0000 6000373410: "MA" sits in the division code; the check character fits.
    body = "91MA00006000373410"[:17]
    assert uscc_check_char(body) == "0"
    with pytest.raises(IdentifierError, match="position 3: 'M' is not a digit") as exc:
        validate_uscc("91MA00006000373410")
    assert "91MA00006000373410" not in str(exc.value)


@given(valid_codes)
def test_valid_codes_are_accepted_as_they_are(code: str) -> None:
    assert validate_uscc(code) == code


@given(valid_codes)
def test_ascii_lower_case_is_the_same_code(code: str) -> None:
    assert validate_uscc(code.lower()) == code
    assert validate_uscc(f" {code.lower()}\t") == code


@given(valid_codes, st.integers(3, 8), st.sampled_from(LETTERS + LETTERS.lower()))
def test_a_letter_in_the_division_code_is_refused_naming_its_position(
    code: str, pos: int, letter: str
) -> None:
    body = code[: pos - 1] + letter + code[pos:17]
    # Even with the check character recomputed to fit: the class is checked first.
    forged = body + uscc_check_char(body.upper())
    with pytest.raises(IdentifierError, match=f"bad character at position {pos}:"):
        validate_uscc(forged)


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\u017f", "U+017F"),  # long s: str.upper() makes it 'S' (not in the alphabet)
        ("\ufb00", "U+FB00"),  # ligature ff: str.upper() makes it 'FF' (two characters)
        ("\uff21", "U+FF21"),  # full-width A
        ("\u0430", "U+0430"),  # Cyrillic a
    ],
)
@pytest.mark.parametrize("pos", [1, 2, 9, 17, 18])
def test_non_ascii_is_refused_at_its_position_never_case_mapped(
    char: str, shown: str, pos: int
) -> None:
    code = "91350200MA2YJ1XR9G"
    raw = code[: pos - 1] + char + code[pos:]
    with pytest.raises(IdentifierError, match=re.escape(f"position {pos}: {shown} is not")):
        validate_uscc(raw)


def test_a_ligature_cannot_stretch_a_short_string_to_18() -> None:
    # 17 characters; str.upper() would make 18 and the old validator then read a code.
    raw = "91350200MA2YJ1X\ufb00G"
    assert len(raw) == 17 and len(raw.upper()) == 18
    with pytest.raises(IdentifierError, match="wrong length"):
        validate_uscc(raw)


def test_unicode_spaces_are_characters_not_padding() -> None:
    with pytest.raises(IdentifierError, match="wrong length"):
        validate_uscc("\u300091350200MA2YJ1XR9G")
