"""Checks of the two subject identifiers, for the auditors' tool (stdlib only).

``credit-audit history`` turns the identifier an auditor types into the
pseudonym the gateway recorded; a mistyped identifier gives a pseudonym that
matches nothing, and "0 queries" would then be a false answer. So the tool
checks the identifier first, with the same rules as the gateway's
:mod:`gateway.identifiers` (which cannot be imported here: it depends on
:mod:`gateway.errors`, hence gRPC):

* unified social credit code (GB 32100-2015): 18 characters of the 31-symbol
  alphabet, positions 3-8 the numeric administrative division code, position
  18 the mod-31 check character;
* resident identity number (GB 11643-1999): 17 digits, a real birth date in
  positions 7-14, and the ISO 7064 MOD 11-2 check character (digit or X).

>>> check_subject("enterprise", "91110000600037341l")
'91110000600037341L'
>>> check_subject("person", "11010519491231002Y")
Traceback (most recent call last):
ValueError: not a resident identity number: bad character at position 18 (a digit or X)

Messages never repeat the identifier: it is personal data.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["check_subject"]

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(_USCC_ALPHABET)}
_RESIDENT_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_CHECK = "10X98765432"
_DIGITS = "0123456789"


def _uscc(code: str) -> str:
    what = "not a unified social credit code"
    if len(code) != 18:
        raise ValueError(f"{what}: it has 18 characters, this has {len(code)}")
    for pos, ch in enumerate(code, start=1):
        if ch not in _USCC_VALUE:
            raise ValueError(f"{what}: bad character at position {pos} (GB 32100 alphabet)")
        if 3 <= pos <= 8 and ch not in _DIGITS:
            raise ValueError(f"{what}: position {pos} is part of the division code (a digit)")
    total = sum(_USCC_VALUE[c] * pow(3, i, 31) for i, c in enumerate(code[:17]))
    if code[17] != _USCC_ALPHABET[(31 - total % 31) % 31]:
        raise ValueError(f"{what}: wrong check character at position 18 (a typing error?)")
    return code


def _resident(number: str) -> str:
    what = "not a resident identity number"
    if len(number) != 18:
        raise ValueError(f"{what}: it has 18 characters, this has {len(number)}")
    for pos, ch in enumerate(number[:17], start=1):
        if ch not in _DIGITS:
            raise ValueError(f"{what}: bad character at position {pos} (a digit)")
    if number[17] not in _RESIDENT_CHECK:
        raise ValueError(f"{what}: bad character at position 18 (a digit or X)")
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise ValueError(f"{what}: positions 7-14 are not a birth date") from None
    if born.year < 1900 or born > dt.date.today():
        raise ValueError(f"{what}: the birth date is before 1900 or in the future")
    total = sum(int(c) * w for c, w in zip(number[:17], _RESIDENT_WEIGHTS, strict=True))
    if number[17] != _RESIDENT_CHECK[total % 11]:
        raise ValueError(f"{what}: wrong check character at position 18 (a typing error?)")
    return number


def check_subject(subject_type: str, subject_id: str) -> str:
    """The identifier, normalised as the gateway does (spaces around it removed,
    letters upper-cased), if it is a valid one of ``subject_type``
    ("enterprise" or "person").

    Raises ValueError naming the problem (never the identifier).
    """
    normalised = subject_id.strip().upper()
    if subject_type == "enterprise":
        return _uscc(normalised)
    if subject_type == "person":
        return _resident(normalised)
    raise ValueError(f"subject type must be enterprise or person, not {subject_type!r}")
