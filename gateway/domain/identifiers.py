"""Validation of the two subject identifiers the gateway accepts.

* Unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters
  over a 31-symbol alphabet (positions 3-8, the division code, digits only),
  the last one a check character (mod 31).
* Resident identity number (居民身份证号码, GB 11643-1999): 17 digits (address
  code, birth date, sequence) and an ISO 7064 MOD 11-2 check character.

>>> validate_uscc("91110000600037341L")
'91110000600037341L'
>>> validate_resident_id("11010519491231002x")
'11010519491231002X'

Every failure raises :class:`IdentifierError` (a ``ValueError``) whose
``problem`` names it: wrong length, bad character at position N, wrong check
character, impossible birth date. Messages never repeat the identifier itself:
it is personal data and error messages end up in logs.

This module imports only the standard library, so the auditors' tool
(``credit-audit history``, which must not need gRPC) checks an identifier with
the very rules the gateway applies. The gateway's own callers turn the error
into :class:`~gateway.errors.IdentifierError` (INVALID_ARGUMENT).
"""

from __future__ import annotations

import datetime as _dt
from typing import Final


class IdentifierError(ValueError):
    """An identifier failed validation: ``field`` names the request field
    (``subject.id`` or ``subject.type``), ``problem`` what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


__all__ = [
    "RESIDENT_ID_WEIGHTS",
    "USCC_ALPHABET",
    "USCC_WEIGHTS",
    "IdentifierError",
    "resident_id_check_char",
    "uscc_check_char",
    "validate_resident_id",
    "validate_subject",
    "validate_uscc",
]

USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE: Final = {c: i for i, c in enumerate(USCC_ALPHABET)}
#: 3^(i-1) mod 31 for positions 1..17.
USCC_WEIGHTS: Final = tuple(pow(3, i, 31) for i in range(17))

#: 2^(18-i) mod 11 for positions 1..17 (ISO 7064 MOD 11-2).
RESIDENT_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_CHECK: Final = "10X98765432"

_FIELD = "subject.id"
#: Only ASCII white space is trimmed: other Unicode spaces are characters of the input.
_ASCII_SPACE: Final = " \t\r\n\x0b\x0c"


def uscc_check_char(body: str) -> str:
    """The check character for the first 17 characters of a USCC.

    Raises :class:`IdentifierError` if ``body`` is not 17 alphabet characters.
    """
    if len(body) != 17:
        raise IdentifierError(_FIELD, f"expected 17 characters before the check, got {len(body)}")
    total = 0
    for pos, (ch, weight) in enumerate(zip(body, USCC_WEIGHTS, strict=True), start=1):
        value = _USCC_VALUE.get(ch)
        if value is None:
            raise IdentifierError(
                _FIELD,
                f"bad character at position {pos}: {_describe(ch)} is not in the GB 32100 alphabet",
            )
        total += value * weight
    return USCC_ALPHABET[(31 - total % 31) % 31]


def validate_uscc(code: str) -> str:
    """Return ``code`` in upper case if it is a valid unified social credit code.

    GB 32100-2015 section 4 gives every position a character class, checked here on the raw
    input, position by position, before any case mapping:

    * 1: registration authority code (登记管理部门代码): the 31-character code alphabet;
    * 2: organisation category code (机构类别代码): the code alphabet;
    * 3-8: administrative division code (GB/T 2260): decimal digits ``0-9`` only;
    * 9-17: organisation identity code (GB 11714): the code alphabet;
    * 18: check character (mod 31): the code alphabet.

    Positions 1 and 2 are held to the alphabet, not to today's code tables: the tables grow
    (``N`` for agriculture came after 2015) and a code issued under a newer table must pass.

    **Case.** The standard writes the code in capital letters and its alphabet has no two
    characters that differ only by case, so an ASCII lower-case letter is read as its capital
    (``91350200ma2yj1xr9g`` is ``91350200MA2YJ1XR9G``; the upper-case form is returned). Only
    ASCII ``a-z`` are mapped, one character at a time after its class is checked: a Unicode
    case mapping could turn a non-code character into a code one (``U+017F`` long s -> ``S``,
    ``U+FB00`` ligature ff -> ``FF``), so any non-ASCII character is refused at its position.
    Leading and trailing ASCII white space is ignored.

    Raises:
        IdentifierError: wrong length, a character of the wrong class (the message
            names the position and the class), or a wrong check character.
    """
    code = code.strip(_ASCII_SPACE)
    if len(code) != 18:
        raise IdentifierError(
            _FIELD, f"wrong length: a unified social credit code has 18 characters, got {len(code)}"
        )
    upper: list[str] = []
    for pos, ch in enumerate(code, start=1):
        mapped = chr(ord(ch) - 32) if "a" <= ch <= "z" else ch
        if 3 <= pos <= 8:
            if not ("0" <= ch <= "9"):
                raise IdentifierError(
                    _FIELD,
                    f"bad character at position {pos}: {_describe(ch)} is not a digit (positions"
                    " 3-8 are the numeric administrative division code)",
                )
        elif mapped not in _USCC_VALUE:
            raise IdentifierError(
                _FIELD,
                f"bad character at position {pos}: {_describe(ch)} is not in the GB 32100 alphabet",
            )
        upper.append(mapped)
    code = "".join(upper)
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        raise IdentifierError(
            _FIELD, f"wrong check character at position 18: expected {expected}, got {code[17]}"
        )
    return code


def resident_id_check_char(body: str) -> str:
    """The check character for the first 17 digits of a resident identity number.

    Raises :class:`IdentifierError` if ``body`` is not 17 ASCII digits.
    """
    if len(body) != 17:
        raise IdentifierError(_FIELD, f"expected 17 digits before the check, got {len(body)}")
    total = 0
    for pos, (ch, weight) in enumerate(zip(body, RESIDENT_ID_WEIGHTS, strict=True), start=1):
        if not ("0" <= ch <= "9"):
            raise IdentifierError(
                _FIELD, f"bad character at position {pos}: {_describe(ch)} is not a digit"
            )
        total += (ord(ch) - 48) * weight
    return _RESIDENT_CHECK[total % 11]


def validate_resident_id(number: str) -> str:
    """Return ``number`` (with a lower-case x upper-cased) if it is a valid
    GB 11643 resident identity number with a real birth date.

    Raises :class:`IdentifierError` naming the problem.
    """
    number = number.strip().upper()
    if len(number) != 18:
        raise IdentifierError(
            _FIELD, f"wrong length: a resident identity number has 18 characters, got {len(number)}"
        )
    expected = resident_id_check_char(number[:17])
    if number[17] not in _RESIDENT_CHECK:
        raise IdentifierError(
            _FIELD, f"bad character at position 18: {_describe(number[17])} is not a digit or X"
        )
    birth = number[6:14]
    try:
        born = _dt.date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
    except ValueError:
        raise IdentifierError(
            _FIELD, "impossible birth date in positions 7-14: not a calendar date"
        ) from None
    if born.year < 1900 or born > _dt.date.today():
        raise IdentifierError(
            _FIELD, "impossible birth date in positions 7-14: before 1900 or in the future"
        )
    if number[17] != expected:
        raise IdentifierError(
            _FIELD, f"wrong check character at position 18: expected {expected}, got {number[17]}"
        )
    return number


def validate_subject(subject_type: str, subject_id: str) -> str:
    """Validate ``subject_id`` for ``subject_type`` ("enterprise" or "person")."""
    if subject_type == "enterprise":
        return validate_uscc(subject_id)
    if subject_type == "person":
        return validate_resident_id(subject_id)
    raise IdentifierError("subject.type", "must be enterprise or person")


def _describe(ch: str) -> str:
    # Printable ASCII is shown; anything else by code point, so a message
    # never carries control characters into a terminal or a log.
    return repr(ch) if ch.isascii() and ch.isprintable() else f"U+{ord(ch):04X}"
