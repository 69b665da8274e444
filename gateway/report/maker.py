"""Sign a report's content and make its two forms, JSON and PDF.

The signing key is the audit log's own (the ``Signer`` that signs checkpoints), used with
domain separation (:mod:`gateway.audit.reportcheck`): whoever checks a report needs the
log's verifier key anyway, to check the checkpoint its receipt is proved against, so one
trusted key covers both; a prefix holding a NUL keeps report signatures and note signatures
apart. A key of its own would add a second key to distribute, rotate and trust for no gain
in what a report proves.

>>> maker = ReportMaker(signer, font)                                  # doctest: +SKIP
>>> made = maker.make(content, proof_text)                             # doctest: +SKIP
>>> made.pdf[:5], made.code                                            # doctest: +SKIP
(b'%PDF-', 'ABCD-EFGH-IJKL-MNOP')

A server gets its maker through :class:`MakerLoader`: loading a CJK font parses a file of
tens of megabytes (about a second on a loaded machine), which must not stall the event loop
that serves every other call, so the first report loads it in a thread, once.

>>> loader = MakerLoader(signer, configured_font)                      # doctest: +SKIP
>>> maker = await loader.get()                                         # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.note import Signer
from gateway.audit.reportcheck import (
    PDF_FILLER,
    code_of,
    content_message,
    envelope_bytes,
    pdf_message,
)
from gateway.errors import ConfigError
from gateway.report.fonts import find_font
from gateway.report.pdf import register_font, render_pdf

__all__ = ["MadeReport", "MakerLoader", "ReportMaker", "qr_payload"]

log = logging.getLogger("credit_gateway.report")


@dataclass(frozen=True)
class MadeReport:
    """A signed report: the PDF, the JSON envelope and the verification code."""

    pdf: bytes
    json: bytes
    code: str


def qr_payload(content: Mapping[str, Any], code: str) -> str:
    """What the QR code holds: ``CGR1 <code> <origin> <log index>``, enough to find the
    report's record in the log and to compare the code (plain text: any reader shows it)."""
    receipt = content["receipt"]
    return f"CGR1 {code} {receipt['origin']} {receipt['log_index']}"


class ReportMaker:
    """Signs report content with ``signer`` and renders it with the CJK ``font``.

    The font is loaded here, so a file that is not a usable TrueType font fails at once
    (reportlab's TTFError, or OSError), before any query is run for a report.
    """

    def __init__(self, signer: Signer, font: Path) -> None:
        self._signer = signer
        self._font = font
        register_font(font)
        # reportlab keeps per-font subsetting state across documents: one render at a time.
        self._lock = threading.Lock()
        # "name+keyid": the verifier key string without the key itself.
        self._key = "+".join(signer.verifier_key().split("+")[:2])

    def make(self, content: Mapping[str, Any], proof: str) -> MadeReport:
        """Sign ``content`` and make both forms; ``proof`` is the tlog-proof of the
        content's receipt. Blocking (rendering takes tens of milliseconds): run it in a
        thread. Raises OSError or reportlab's TTFError if the font cannot be read."""
        code = code_of(content)
        envelope: dict[str, Any] = {
            "content": content,
            "signature": {
                "key": self._key,
                "content": base64.b64encode(self._signer.sign(content_message(content))).decode(),
            },
            "verification_code": code,
            "proof": proof,
        }
        as_json = envelope_bytes(envelope)
        slot = b'"pdf_signature":"' + PDF_FILLER.encode() + b'"'
        attached = envelope_bytes({**envelope, "pdf_signature": PDF_FILLER})
        with self._lock:
            pdf = render_pdf(
                content,
                code=code,
                qr_payload=qr_payload(content, code),
                envelope=attached,
                font=self._font,
            )
        at = pdf.find(slot)
        if at < 0 or pdf.find(slot, at + 1) >= 0:
            raise RuntimeError("the PDF's signature slot is not found exactly once")
        at += len(b'"pdf_signature":"')
        signature = base64.b64encode(self._signer.sign(pdf_message(pdf))).decode().encode()
        assert len(signature) == len(PDF_FILLER)
        pdf = pdf[:at] + signature + pdf[at + len(signature) :]
        return MadeReport(pdf=pdf, json=as_json + b"\n", code=code)


class MakerLoader:
    """The server's one :class:`ReportMaker`, made on first use in a worker thread (the
    font is parsed off the event loop) and kept; concurrent first callers wait for the same
    load. A failed load is not kept: the next call tries again (a font installed meanwhile
    is found without a restart).

    ``font``: the configured font file (``[gateway] report_font``; None: the first of
    :data:`gateway.report.fonts.FONT_PATHS` present).
    """

    def __init__(self, signer: Signer, font: Path | None = None) -> None:
        self._signer = signer
        self._font = font
        self._maker: ReportMaker | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> ReportMaker:
        """The maker. Raises ConfigError (key ``gateway.report_font``) when no usable
        TrueType CJK font is found: before any query is run for a report."""
        if self._maker is None:
            async with self._lock:
                if self._maker is None:
                    self._maker = await asyncio.to_thread(self._load)
        return self._maker

    def _load(self) -> ReportMaker:
        font = find_font(self._font)
        try:
            return ReportMaker(self._signer, font)
        except Exception as exc:  # reportlab's TTFError, OSError: the file, not the call
            log.warning("report font unusable", extra={"error": type(exc).__name__})
            raise ConfigError(
                "gateway.report_font", f"{font} is not a usable TrueType font: {exc}"
            ) from None
