"""Structured JSON logs, one object a line, carrying the request id of the request being served."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson
from flask import g, has_request_context

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context() and "request_id" in g:
            entry["request_id"] = g.request_id
        # Fields passed with extra={...} become top-level keys.
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The lines carry no thread name. Looking it up gives every greenlet that logs (each request, for its
    # access line) a dummy Thread object under gevent: ~9 us of CPU and a few KB held per request in flight.
    logging.logThreads = False
    # werkzeug's access log duplicates ours and is not JSON.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; a URL can carry a query secret, so only warnings get through.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
