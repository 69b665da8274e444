"""What a visitor typed into the lookup box: an enterprise's code, a mistake, or a person.

The page looks up organisations by unified social credit code (统一社会信用代码, GB 32100-2015)
and nothing else. :func:`check_code` returns the code to look up, or a refusal whose message
is in Chinese and says what to fix::

    >>> check_code(" 91350200ma2yj1xr9g ").code
    '91350200MA2YJ1XR9G'
    >>> check_code("11010519491231002X").personal
    True

The verdict on a code is :func:`gateway.domain.identifiers.validate_uscc`'s, so the page
accepts exactly what the gateway accepts, once full-width digits and letters (as Chinese
input methods type them) are read as ASCII; this module only explains a refusal in Chinese.

**Personal data.** Input that is, or looks like, a resident identity number (GB 11643: 15 or
18 characters with a real birth date, whether or not its check character is right, written
with or without spaces) is refused as personal: the page never looks up persons, and such a
refusal never repeats the input, not even in the form field (``echo`` is empty). A string
valid under both standards at once (about one valid identity number in 31 also passes the
GB 32100 check) is a code: the page asks the gateway about an *enterprise* with it, so no
person's record can come back, and the enterprise whose code it is can still be found.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final

from gateway.domain.identifiers import USCC_ALPHABET, IdentifierError, validate_uscc

__all__ = ["FULL_WIDTH", "MAX_INPUT", "CodeCheck", "check_code", "looks_personal"]

#: Longer input is refused without being examined (a form field, not a document).
MAX_INPUT: Final = 64
_ASCII_SPACE: Final = " \t\r\n\x0b\x0c"
#: Separators a person may type inside a number: spaces (ASCII, ideographic) and hyphens.
_SEPARATORS: Final = re.compile(r"[\s\u3000\-_.·]+")
_ID18: Final = re.compile(r"[0-9]{17}[0-9Xx]")
_ID15: Final = re.compile(r"[0-9]{15}")
_NOT_IN_ALPHABET: Final = "I、O、S、V、Z"

PERSONAL_MESSAGE: Final = (
    "本页面只提供企业等组织的公开信用信息查询，不查询个人信息。"
    "您输入的内容像是居民身份证号码，请勿在此输入个人身份证号码。"
)
EMPTY_MESSAGE: Final = "请输入18位统一社会信用代码。"


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The verdict on one input: ``code`` (upper case) when it is a valid unified social
    credit code, otherwise ``message`` (Chinese, never holding the input), ``personal``
    when the input looks like a resident identity number, and ``echo``: what the form field
    may show again (the input for a mistyped code, empty for personal data)."""

    code: str | None
    message: str = ""
    personal: bool = False
    echo: str = ""

    @property
    def ok(self) -> bool:
        """Whether the input is a valid code to look up."""
        return self.code is not None


def _real_date(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def looks_personal(text: str) -> bool:
    """Whether ``text`` (separators removed) has the shape of a resident identity number
    with a real birth date: 18 characters (17 digits and a digit or X, born 1800-2099) or
    the first generation's 15 digits (born 19YY). Never raises."""
    compact = _SEPARATORS.sub("", text.translate(FULL_WIDTH))
    if _ID18.fullmatch(compact):
        year = int(compact[6:10])
        return 1800 <= year <= 2099 and _real_date(year, int(compact[10:12]), int(compact[12:14]))
    if _ID15.fullmatch(compact):
        return _real_date(1900 + int(compact[6:8]), int(compact[8:10]), int(compact[10:12]))
    return False


#: Full-width digits and letters (０-９, Ａ-Ｚ, ａ-ｚ, and the few signs between them) as
#: ASCII: how Chinese input methods often type them.
FULL_WIDTH: Final = {cp: cp - 0xFEE0 for cp in range(0xFF10, 0xFF5B)}


def _position_problem(code: str) -> str:
    """The Chinese explanation of the first character of ``code`` (18 long) that breaks
    GB 32100 section 4, or "" if every character is of its class."""
    for pos, ch in enumerate(code, start=1):
        mapped = ch.upper() if "a" <= ch <= "z" else ch
        if 3 <= pos <= 8:
            if not ("0" <= ch <= "9"):
                return f"第{pos}位应为数字（第3至8位是登记管理机关行政区划码）。"
        elif mapped not in USCC_ALPHABET:
            return (
                f"第{pos}位不是统一社会信用代码使用的字符"
                f"（代码只使用数字和大写英文字母，不使用{_NOT_IN_ALPHABET}）。"
            )
    return ""


def check_code(text: str) -> CodeCheck:
    """The verdict on ``text``, what a visitor typed (see the module docstring). Never
    raises."""
    # Chinese input methods often type full-width digits and letters (９１３５...): read
    # each as its ASCII twin, one character for one. No other mapping: a Unicode case or
    # compatibility mapping could turn a non-code character into a code one.
    stripped = text.translate(FULL_WIDTH).strip(_ASCII_SPACE + "\u3000")
    if not stripped:
        return CodeCheck(None, EMPTY_MESSAGE)
    if len(stripped) > MAX_INPUT:
        return CodeCheck(None, "输入过长：统一社会信用代码为18位。")
    try:
        return CodeCheck(validate_uscc(stripped))
    except IdentifierError:
        pass
    if looks_personal(stripped):
        return CodeCheck(None, PERSONAL_MESSAGE, personal=True)
    if len(stripped) != 18:
        return CodeCheck(
            None,
            f"统一社会信用代码为18位，您输入了{len(stripped)}位，请核对后重新输入。",
            echo=stripped,
        )
    problem = _position_problem(stripped)
    if problem:
        return CodeCheck(None, f"统一社会信用代码有误：{problem}", echo=stripped)
    return CodeCheck(
        None,
        "统一社会信用代码有误：校验码（第18位）与前17位不符，可能有字符输错，请核对后重新输入。",
        echo=stripped,
    )
