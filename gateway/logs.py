"""Structured JSON logs: one object per line.

Callers pass context with ``extra={...}``; only keys listed in
:data:`ALLOWED_FIELDS` are written, so a subject identifier or a token handed
to a log call by mistake never reaches the log.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["ALLOWED_FIELDS", "JsonFormatter", "configure_logging"]

ALLOWED_FIELDS = frozenset(
    {
        "request_id", "agency", "outcome", "latency_ms", "department", "fields_dropped",
        "address", "kid", "policy_version", "status", "count", "index", "size", "reason",
    }
)  # fmt: skip


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ALLOWED_FIELDS:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pycasbin logs the whole model at INFO whenever a policy loads.
    logging.getLogger("casbin").setLevel(max(logging.WARNING, root.level))
