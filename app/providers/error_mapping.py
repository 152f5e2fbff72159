"""Shared pieces for classifying a provider's error response: status -> kind, Retry-After -> seconds."""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any

_MAX_MESSAGE = 500  # upstream messages reach the caller; keep a runaway body out of our answer


def kind_for_status(status: int) -> str:
    """The ProviderError kind an HTTP status means when the body says nothing more precise."""
    if status == 401:
        return "authentication"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status in (408, 504):
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status in (503, 529):  # 529 is Anthropic's (and some proxies') "overloaded"
        return "overloaded"
    if status >= 500:
        return "server"
    return "invalid_request"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from retry-after-ms or Retry-After (seconds or HTTP date), as OpenAI's SDK."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            delay = float(value)
        except ValueError:
            continue
        if math.isfinite(delay) and delay >= 0:
            return delay / divisor
    value = lowered.get("retry-after")
    if value:
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def decode_json_body(body: bytes) -> Any:
    """The error body as JSON, or None when it is not JSON (an HTML page from a proxy, say)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def short_message(message: Any, fallback: str) -> str:
    """A bounded, printable message for the caller."""
    if not isinstance(message, str) or not message.strip():
        return fallback
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"
