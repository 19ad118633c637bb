"""Shared by every process: structured JSON log lines carrying the request id and the process.

Secrets never reach a log line through here: callers log names and sizes, never keys, tokens,
passwords or bundles; `redact` exists for the rare message that may embed one.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

import msgspec

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_json = msgspec.json.Encoder()
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{4,}|pt-[A-Za-z0-9_\-]{4,}|rt-[A-Za-z0-9_\-]{4,}"
    r"|(?i:bearer)\s+\S+|(?i:password|token|secret)=\S+)"
)
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    return _SECRET_PATTERNS.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "proc": self.process_name,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return _json.encode(entry).decode()


def configure_logging(process_name: str, level: str = "info") -> None:
    """Replace the root handlers with one JSON line per record on stderr (journald reads it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.Formatter.converter = time.gmtime
