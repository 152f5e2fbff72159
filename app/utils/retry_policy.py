"""Retry timing: exponential backoff with full jitter, and the Retry-After header."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_jitter = random.Random()  # noqa: S311 - backoff jitter, not a secret
_DELTA_SECONDS = re.compile(r"[0-9]+")  # RFC 9110 delay-seconds: ASCII digits only


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): uniform in [0, min(cap, base*2^(n-1))].

    Full jitter, as in AWS's "Exponential Backoff and Jitter": retries of many clients spread out.
    """
    return _jitter.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):  # not str.isdigit(): it passes "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
