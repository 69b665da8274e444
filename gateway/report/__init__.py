"""Signed credit reports: a query's answer as a PDF in Chinese and as JSON.

* :mod:`~gateway.report.content`: what a report says, built from a ``QueryResponse``;
* :mod:`~gateway.report.pdf`: the PDF (reportlab, an embedded CJK TrueType font, a QR code
  by segno), with the signed JSON attached uncompressed;
* :mod:`~gateway.report.maker`: signing (the audit log's key, domain-separated) and both
  forms; :class:`~gateway.report.maker.MakerLoader` loads the font off the event loop;
* :mod:`~gateway.report.fonts`: which font, from a documented list of Debian paths.

The file format and its offline check live in :mod:`gateway.audit.reportcheck` (standard
library and ``cryptography`` only, for ``credit-audit check-report``). The gRPC entry point
is :class:`gateway.api.report.ReportService`.
"""

from gateway.report.content import ReportFacts, build_content
from gateway.report.fonts import FONT_PATHS, find_font
from gateway.report.maker import MadeReport, MakerLoader, ReportMaker

__all__ = [
    "FONT_PATHS",
    "MadeReport",
    "MakerLoader",
    "ReportFacts",
    "ReportMaker",
    "build_content",
    "find_font",
]
