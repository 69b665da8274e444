"""Structured JSON logs: one object per line.

Callers pass context with ``extra={...}``; only keys listed in
:data:`ALLOWED_FIELDS` are written, so a subject identifier or a token handed
to a log call by mistake never reaches the log. And whatever a line carries
(the message with its arguments, every field, a traceback), identifier-like
text in it is masked by :func:`gateway.pipeline.freetext.redact`: a caller's free text
formatted into a message cannot carry an identity number into the log either.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from gateway.pipeline.freetext import REDACTED, redact

__all__ = ["ALLOWED_FIELDS", "JsonFormatter", "configure_logging"]

ALLOWED_FIELDS = frozenset(
    {
        "request_id", "agency", "outcome", "latency_ms", "department", "fields_dropped",
        "address", "kid", "policy_version", "status", "count", "index", "size", "reason",
    }
)  # fmt: skip


#: Integers this long could be an identity number written as a number.
_LONG_INT = 10**14


def _screened(value: Any) -> Any:
    if isinstance(value, bool | float) or value is None:
        return value
    if isinstance(value, int):
        return REDACTED if abs(value) >= _LONG_INT else value
    return redact(value if isinstance(value, str) else str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the allowed fields
    and ``exc``; every value screened by :func:`gateway.pipeline.freetext.redact`."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object per line: UTC time, level, logger, message and extra fields."""
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ALLOWED_FIELDS:
            if key in record.__dict__:
                out[key] = _screened(record.__dict__[key])
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as one JSON line, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pycasbin logs the whole model at INFO whenever a policy loads.
    logging.getLogger("casbin").setLevel(max(logging.WARNING, root.level))
