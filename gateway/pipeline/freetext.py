"""Caller-supplied free text: what of it may be recorded, logged or echoed.

A caller writes free text into a query (``officer_id``, ``case_reference``,
``represented_party``, an unknown ``purpose``) and into admin calls (a policy
officer's ``reason``, a top-up ``reference`` or ``note``). The audit log is
signed and append-only, so what enters it can never be removed; personal
identifiers must never enter it, nor a log line, a metric label or an error
detail. This module owns that rule, in three parts:

* :func:`scan` finds identifier-like text: GB 11643 resident identity numbers
  of both generations (18 characters, and the 15-digit first generation) and
  GB 32100 unified social credit codes, after normalising the text (NFKC, so
  full-width digits count; every Unicode decimal digit read as its value; all
  spaces, punctuation, symbols and format characters such as zero-width spaces
  removed, so ``110105 1949-1231.002X`` is one run). It errs on the side of
  catching: outside a hex token, any run of 15 or more digits and any 18
  characters shaped like a credit code (GB 32100 alphabet, positions 3-8
  digits; check character not required, since codes failing it are issued in
  practice) are findings. Inside a hex token (a UUID, hyphenated or not, or 32
  or more hex digits) only what also passes the identifier's own checks is a
  finding: a real birth date in a digit run, a valid check character in a
  credit code. A letter of another script (a Chinese character, say) ends a run.
* :func:`holds_identifier` is the refusal rule: a finding outside a hex token.
  A request holding one is refused (naming the field, never echoing it), so a
  hex UUID in a case reference is never refused for the digits it happens to
  hold.
* :func:`recordable` turns free text into what may be recorded: the text if
  :func:`scan` finds nothing (and it is at most ``limit`` characters), else a
  keyed pseudonym ``"hmac:<hex>"`` (:func:`text_pseudonym`), so an auditor
  holding the pseudonym key can still match a text they are shown.
  :func:`echo` is the same for error messages (the text, or nothing), and
  :func:`redact` masks what :func:`holds_identifier` refuses inside a log line.

A request id is not free text: validation accepts only a UUID and records its
canonical form, which agencies, the ledger and reconciliation find requests
by. A careless caller cannot write an identity number there; 128 bits could
carry one only by design, and screening them would refuse a few in a hundred
random UUIDs.

>>> holds_identifier("case 110105 491231 002")
True
>>> holds_identifier("550e8400e29b41d4a716446655440000")
False
>>> recordable(b"k" * 32, "ticket 4711")
'ticket 4711'
>>> recordable(b"k" * 32, "１１０１０５１９４９１２３１００２Ｘ")[:5]
'hmac:'
>>> redact("警员 11010519491231002X 查询")
'警员 [redacted] 查询'
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.domain.identifiers import (
    USCC_ALPHABET,
    USCC_WEIGHTS,
    IdentifierError,
    validate_resident_id,
)

__all__ = [
    "DEFAULT_LIMIT",
    "PSEUDONYM_PREFIX",
    "REDACTED",
    "WITHHELD",
    "Finding",
    "echo",
    "holds_identifier",
    "joined_identifier",
    "recordable",
    "redact",
    "scan",
    "text_pseudonym",
]

#: Marks a recorded pseudonym; text starting with it is itself pseudonymised,
#: so a caller cannot write something that reads as one.
PSEUDONYM_PREFIX: Final = "hmac:"
#: The longest free text recorded as written (the query fields' limit).
DEFAULT_LIMIT: Final = 256
#: Replaces a finding in a log line.
REDACTED: Final = "[redacted]"
#: What :func:`echo` shows instead of text it will not repeat.
WITHHELD: Final = "(not shown: it holds what looks like a personal identifier)"

_BREAK: Final = "|"  # stands for a letter of another script: ends every run
#: Chinese numerals as digits: an identity number read out or written in words
#: (三五〇二〇三...; 壹贰叁 in the financial forms; 幺 for one when numbers are
#: spoken). Unicode gives none of them a decimal value (〇 is a letter number,
#: the rest letters), so NFKC and unicodedata.decimal leave them alone. 十, 百 and
#: the like are not digits of a number read digit by digit, and are not mapped.
_CJK_DIGITS: Final = {
    ch: str(value)
    for value, chars in enumerate(
        ("〇零", "一壹幺", "二贰貳", "三叁參", "四肆", "五伍", "六陆陸", "七柒", "八捌", "九玖")
    )
    for ch in chars
}
_USCC_VALUE: Final = {c: i for i, c in enumerate(USCC_ALPHABET)}
_ASCII_DIGIT = re.compile(r"[0-9]")
_DIGIT_RUN = re.compile(r"[0-9]{15,}")
_USCC_RUN = re.compile(f"[{USCC_ALPHABET}]{{18,}}")
_HEX_TOKEN = re.compile(
    r"(?<![0-9A-Za-z])"
    r"(?:[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{32,})"
    r"(?![0-9A-Za-z])"
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One identifier-like stretch of a text.

    ``kind`` is ``"resident_id"`` (GB 11643, either generation) or
    ``"credit_code"`` (GB 32100); ``start``/``end`` index the original text
    (end exclusive; separators inside included); ``in_hex`` says it lies within
    a hex token (a UUID or a digest).
    """

    kind: str
    start: int
    end: int
    in_hex: bool


def _compact(text: str) -> tuple[str, list[int], list[int]]:
    """Returns ``(compact, origin, token)``: ``compact`` holds ASCII digits,
    upper-case ASCII letters and :data:`_BREAK`; ``origin[k]`` is the index in
    ``text`` its character came from; ``token[k]`` the hex token it belongs to
    (-1: none)."""
    src: Sequence[int]
    if text.isascii():
        nfkc, src = text, range(len(text))
    else:
        # Per character, so that each result character knows its origin; NFKC
        # maps full-width forms, circled and super-script digits to ASCII.
        parts: list[str] = []
        where: list[int] = []
        for i, ch in enumerate(text):
            n = unicodedata.normalize("NFKC", ch)
            parts.append(n)
            where.extend([i] * len(n))
        nfkc, src = "".join(parts), where
    in_token = [-1] * len(nfkc)
    for t, m in enumerate(_HEX_TOKEN.finditer(nfkc)):
        for j in range(m.start(), m.end()):
            in_token[j] = t
    out: list[str] = []
    origin: list[int] = []
    token: list[int] = []
    for j, ch in enumerate(nfkc):
        if token and in_token[j] != token[-1] and (in_token[j] >= 0 or token[-1] >= 0):
            # A hex token's edge ends every run: a word before a request id
            # ("by 3196...") must not join its first digits into a finding
            # judged as outside the token (a UUID would be masked about once
            # in twelve). Each token is judged on its own, by the hex rules.
            out.append(_BREAK)
            origin.append(src[j])
            token.append(-1)
        if ch.isascii():
            if ch.isalnum():
                out.append(ch.upper())
            else:
                continue  # space, punctuation, symbol, control: a separator
        elif ch in _CJK_DIGITS:
            out.append(_CJK_DIGITS[ch])
        else:
            cat = unicodedata.category(ch)
            if cat == "Nd":
                out.append(str(unicodedata.decimal(ch)))
            elif cat[0] in "LN":
                out.append(_BREAK)
            else:
                continue  # separators, punctuation, symbols, marks, format (zero-width)
        origin.append(src[j])
        token.append(in_token[j])
    return "".join(out), origin, token


def _inside(token: list[int], start: int, end: int) -> bool:
    t = token[start]
    return t >= 0 and all(x == t for x in token[start:end])


def _real_date(year: int, month: int, day: int) -> bool:
    try:
        born = _dt.date(year, month, day)
    except ValueError:
        return False
    return born <= _dt.date.today()


def _uscc_check_ok(code: str) -> bool:
    total = sum(_USCC_VALUE[c] * w for c, w in zip(code[:17], USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31] == code[17]


def scan(text: str) -> list[Finding]:
    """Every identifier-like stretch of ``text`` (see the module docstring for
    the rules), in order of position; overlapping findings are all listed.
    Never raises."""
    if text.isascii() and len(_ASCII_DIGIT.findall(text)) < 6:
        return []  # every finding holds at least six digits; most free text has fewer
    compact, origin, token = _compact(text)
    found: list[Finding] = []

    def add(kind: str, start: int, end: int, in_hex: bool) -> None:
        found.append(Finding(kind, origin[start], origin[end - 1] + 1, in_hex))

    for m in _DIGIT_RUN.finditer(compact):
        a, b = m.span()
        for i in range(a, b - 14):
            if not _inside(token, i, i + 15):
                add("resident_id", i, i + 15, False)
                continue
            # First generation: address, birth date YYMMDD (1900s), sequence.
            s = compact[i : i + 15]
            if _real_date(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12])):
                add("resident_id", i, i + 15, True)
            if i + 18 <= b and _inside(token, i, i + 18):
                s = compact[i : i + 18]
                if _real_date(int(s[6:10]), int(s[10:12]), int(s[12:14])):
                    add("resident_id", i, i + 18, True)
    for m in _USCC_RUN.finditer(compact):
        a, b = m.span()
        for i in range(a, b - 17):
            code = compact[i : i + 18]
            if not code[2:8].isdigit():
                continue  # positions 3-8 are the numeric division code
            if not _inside(token, i, i + 18):
                add("credit_code", i, i + 18, False)
            elif _uscc_check_ok(code):
                add("credit_code", i, i + 18, True)
    found.sort(key=lambda f: (f.start, f.end))
    return found


def holds_identifier(text: str) -> bool:
    """Whether a request carrying ``text`` must be refused: a finding outside
    any hex token. Never raises."""
    return any(not f.in_hex for f in scan(text))


def _valid(compact: str) -> bool:
    """Whether a finding's compact form (digits and capitals) is a real
    identifier: check character and birth date, not only the shape."""
    if len(compact) == 15:  # first generation: YYMMDD of the 1900s at 7-12
        return compact.isdigit() and _real_date(
            1900 + int(compact[6:8]), int(compact[8:10]), int(compact[10:12])
        )
    try:
        validate_resident_id(compact)
    except IdentifierError:
        pass
    else:
        return True
    return all(c in _USCC_VALUE for c in compact) and _uscc_check_ok(compact)


def joined_identifier(texts: Sequence[str]) -> bool:
    """Whether the free texts of one request, read one after another in any
    order, make a real identifier that none holds alone: ``officer_id`` ending
    in ``110105194912`` and ``case_reference`` starting ``31002X`` put the
    number on the record as surely as one field would.

    Only a real identifier counts here (check character, and a birth date for
    resident numbers), not the bare shape each field is screened for: the end
    of one field and the start of another are often both numbers (an officer's
    number, a case number), and their chance junction must not refuse a query.
    Each ordered pair and ordered triple of non-empty texts is screened (up to
    12 scans for three fields; none when they hold fewer than six digits
    together, as every finding needs). Never raises."""
    parts = [t for t in texts if t]
    if len(parts) < 2:
        return False
    joined = "".join(parts)
    if joined.isascii() and len(_ASCII_DIGIT.findall(joined)) < 6:
        return False
    for n in range(2, len(parts) + 1):
        for order in itertools.permutations(parts, n):
            text = "".join(order)
            junctions = list(itertools.accumulate(len(p) for p in order[:-1]))
            for f in scan(text):
                # Only what spans a junction: a finding inside one field is that
                # field's rule's business (a hex token's edge, say, may move
                # when another field's text is set beside it). In a hex token
                # (two request-id-like texts run together) nothing is refused.
                if (
                    not f.in_hex
                    and any(f.start < j < f.end for j in junctions)
                    and _valid(_compact(text[f.start : f.end])[0])
                ):
                    return True
    return False


def text_pseudonym(key: bytes, text: str) -> str:
    """``"hmac:"`` and the lower-case hex HMAC-SHA256, under the audit
    pseudonym ``key``, of ``"freetext:"`` followed by the NFKC form of
    ``text`` (UTF-8). The prefix keeps it apart from subject pseudonyms
    (``person:...``, ``enterprise:...``); NFKC lets full-width and ASCII
    writings of a text match.

    Raises :class:`ValueError` for an empty key.
    """
    if not key:
        raise ValueError("pseudonym key is empty")
    message = b"freetext:" + unicodedata.normalize("NFKC", text).encode("utf-8", "surrogatepass")
    return PSEUDONYM_PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()


def recordable(key: bytes, text: str, *, limit: int = DEFAULT_LIMIT, scanned: bool = False) -> str:
    """What of the free text ``text`` may enter a record: ``text`` itself if
    :func:`scan` finds nothing in it, it is at most ``limit`` characters and
    does not start with :data:`PSEUDONYM_PREFIX`; else its
    :func:`text_pseudonym` (the whole text is screened, never a truncation of
    it that could cut an identifier in two). The empty text stays empty.
    ``scanned``: the caller's :func:`scan` of this very text found nothing (a
    validated query's ``plain_text``), so it is not scanned again; the other
    conditions still hold.

    Raises :class:`ValueError` for an empty key.
    """
    if not text:
        return ""
    if len(text) <= limit and not text.startswith(PSEUDONYM_PREFIX) and (scanned or not scan(text)):
        return text
    return text_pseudonym(key, text)


def echo(text: str, *, limit: int = 64) -> str:
    """``text`` (its first ``limit`` characters) quoted for an error message,
    or :data:`WITHHELD` if :func:`scan` finds anything in the whole text."""
    if scan(text):
        return WITHHELD
    return repr(text[:limit])


def redact(text: str) -> str:
    """``text`` with every finding of :func:`scan` outside a hex token (what
    :func:`holds_identifier` refuses) replaced by :data:`REDACTED`, overlapping
    findings merged. For log lines, where the rest of the text is worth
    keeping; a hex token is left whole, because operators follow a request id
    (a UUID) through the logs and a random one holds a check-valid credit code
    shape about once in thirty."""
    found = [f for f in scan(text) if not f.in_hex]
    if not found:
        return text
    out: list[str] = []
    pos = 0
    for f in found:
        if f.end <= pos:
            continue
        if f.start >= pos:
            out.append(text[pos : f.start])
            out.append(REDACTED)
        pos = f.end
    out.append(text[pos:])
    return "".join(out)
