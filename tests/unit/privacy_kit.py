"""Test helpers for the privacy property tests: hypothesis strategies that make
valid identifiers (GB 11643 both generations, GB 32100) and hide them in free
text every way a caller might, and a leak check that looks for an identifier
in any form (separators, full-width, case) in decoded JSON."""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from typing import Any

from hypothesis import strategies as st

from gateway.domain.identifiers import USCC_ALPHABET, resident_id_check_char, uscc_check_char

#: What a person types between the parts of a number.
SEPARATORS = (
    " ", "-", ".", "_", "/", "\t", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",
    "\u3000", "\uff0d", "\uff0e", "\uff3f", "\uff0f", "\u00b7", "\u2010", "\u2014", ", ",
)  # fmt: skip

_DIGITS = "0123456789"


@st.composite
def resident_id_18(draw: st.DrawFn) -> str:
    """A valid second-generation GB 11643 number (real birth date, check character)."""
    province = draw(st.sampled_from("12345678"))
    rest = draw(st.text(_DIGITS, min_size=5, max_size=5))
    born = draw(st.dates(dt.date(1900, 1, 1), dt.date.today()))
    seq = draw(st.text(_DIGITS, min_size=3, max_size=3))
    body = f"{province}{rest}{born:%Y%m%d}{seq}"
    return body + resident_id_check_char(body)


@st.composite
def resident_id_15(draw: st.DrawFn) -> str:
    """A first-generation GB 11643 number: address, YYMMDD, sequence (no check)."""
    province = draw(st.sampled_from("12345678"))
    rest = draw(st.text(_DIGITS, min_size=5, max_size=5))
    born = draw(st.dates(dt.date(1900, 1, 1), dt.date(1999, 12, 31)))
    seq = draw(st.text(_DIGITS, min_size=3, max_size=3))
    return f"{province}{rest}{born:%y%m%d}{seq}"


@st.composite
def credit_code(draw: st.DrawFn) -> str:
    """A GB 32100 code: authority and kind, numeric division code, organisation
    code, check character."""
    head = draw(st.text(USCC_ALPHABET, min_size=2, max_size=2))
    division = draw(st.text(_DIGITS, min_size=6, max_size=6))
    org = draw(st.text(USCC_ALPHABET, min_size=9, max_size=9))
    body = head + division + org
    return body + uscc_check_char(body)


identifiers = st.one_of(resident_id_18(), resident_id_15(), credit_code())

_FULL_WIDTH = {
    c: chr(ord(c) + 0xFEE0)
    for c in _DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
}
_MATH_BOLD = {c: chr(0x1D7CE + int(c)) for c in _DIGITS}  # 𝟎..𝟗, NFKC-equivalent to 0..9
_ARABIC_INDIC = {c: chr(0x0660 + int(c)) for c in _DIGITS}  # ٠..٩, decimal digits


#: Digits written as Chinese numerals (三五〇二...), as a number read out is written.
CHINESE_DIGITS = dict(zip("0123456789", "〇一二三四五六七八九", strict=True))
_FROM_CHINESE = {v: k for k, v in CHINESE_DIGITS.items()}


@st.composite
def disguised(draw: st.DrawFn, identifier: str) -> str:
    """``identifier`` as a careless or evasive caller might write it: case
    changed, characters in full-width or other digit forms, separators between
    any of them."""
    out: list[str] = []
    for i, ch in enumerate(identifier):
        form = draw(
            st.sampled_from(("plain", "plain", "lower", "full", "math", "arabic", "chinese"))
        )
        if form == "lower":
            ch = ch.lower()
        elif form == "full":
            ch = _FULL_WIDTH.get(ch, ch)
        elif form == "math":
            ch = _MATH_BOLD.get(ch, ch)
        elif form == "arabic":
            ch = _ARABIC_INDIC.get(ch, ch)
        elif form == "chinese":
            ch = CHINESE_DIGITS.get(ch, ch)
        if i and draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from(SEPARATORS)) * draw(st.integers(1, 2)))
        out.append(ch)
    return "".join(out)


#: Text around a hidden identifier: words of several scripts, punctuation.
surrounding = st.text(
    st.sampled_from(list("abcxyz ABCQRT 案号第号京民初：:()[]#=-_/.,;'\"0123456789")),
    max_size=20,
)


@st.composite
def hidden(draw: st.DrawFn) -> tuple[str, str]:
    """``(identifier, text)``: a valid identifier hidden in free text."""
    identifier = draw(identifiers)
    text = draw(surrounding) + draw(disguised(identifier)) + draw(surrounding)
    return identifier, text


def compact(text: str) -> str:
    """``text`` as the leak check reads it: NFKC, decimal digits and Chinese
    numerals as ASCII digits, upper case, everything but ASCII letters and
    digits removed."""
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if ch.isascii() and ch.isalnum():
            out.append(ch.upper())
        elif unicodedata.category(ch) == "Nd":
            out.append(str(unicodedata.decimal(ch)))
        elif ch in _FROM_CHINESE:
            out.append(_FROM_CHINESE[ch])
    return "".join(out)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [str(value)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def leaks(identifier: str, blob: bytes | str) -> bool:
    """Whether JSON ``blob`` (an audit leaf, a log line) carries ``identifier``
    in any form: in any one decoded string, or in the raw text, once both are
    compacted (:func:`compact`)."""
    needle = compact(identifier)
    text = blob.decode("utf-8") if isinstance(blob, bytes) else blob
    if needle in compact(text):
        return True
    return any(needle in compact(s) for s in _strings(json.loads(text)))


_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-")


def near_hex_token(text: str) -> bool:
    """Whether ``text`` holds something shaped like a UUID or digest, where the
    screen records a pseudonym but does not refuse (see gateway.pipeline.freetext)."""
    return bool(_HEX_TOKEN.search(unicodedata.normalize("NFKC", text)))
