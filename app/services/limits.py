"""Usage limits per user and per API key: requests and tokens per minute, spend per day and per month.

A call reserves its worst case before the provider is called (one request, its input estimate plus
max_tokens as tokens, and that priced as spend) and settles the real figure when it ends. Both steps
are atomic (see limit_counters.py), so concurrent calls cannot all pass a check that only one fits.

Overshoot bound: admission keeps (settled spend + open reservations) within the limit, so the spend can
pass the limit only by what admitted calls used beyond their reservation: for each call, the positive
part of (real prompt tokens - reserved prompt tokens) x input price + (real completion tokens -
reserved completion tokens) x output price. That is zero when the call sent max_tokens (or stayed
within LLM_RESERVE_MAX_TOKENS) and its prompt tokenised to at most one token per two bytes of JSON,
which holds for the byte-pair tokenisers of the providers we know. Rates use fixed one-minute windows:
a burst across a window boundary can reach twice the per-minute figure.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from app.errors import ApiError, BudgetExceeded, RateLimited
from app.extensions import db
from app.models import UsageLimit, UsageRecord
from app.schemas.usage import MAX_BUDGET_USD
from app.services.limit_counters import Bucket, MemoryCounters, RedisCounters

MICROS = 1_000_000  # spend is counted in micro-USD, as integers, so no float drift accumulates


@dataclass(frozen=True)
class Limits:
    """0 means unlimited."""

    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    daily_budget_usd: float = 0.0
    monthly_budget_usd: float = 0.0

    def as_counters(self) -> tuple[int, int, int, int]:
        return (
            self.requests_per_minute,
            self.tokens_per_minute,
            usd_to_micros(self.daily_budget_usd),
            usd_to_micros(self.monthly_budget_usd),
        )

    def to_public(self) -> dict[str, Any]:
        return {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "daily_budget_usd": self.daily_budget_usd,
            "monthly_budget_usd": self.monthly_budget_usd,
        }


LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "daily_budget_usd", "monthly_budget_usd")


def usd_to_micros(usd: float | None) -> int:
    # Capped at the largest budget LimitsBody admits: a larger figure (a budget stored before that bound)
    # would overflow math.ceil or the counters' integers, and no budget can tell it from the cap.
    return math.ceil(round(min(usd or 0.0, MAX_BUDGET_USD) * MICROS, 6))


def budget_exceeded(message: str) -> BudgetExceeded:
    return BudgetExceeded(message)


@dataclass
class Reservation:
    bucket: Bucket
    subjects: tuple[str, ...]
    tokens: int
    micros: int
    settled: bool = False


class LimitService:
    """One per app: reads limits (cached a few seconds) and keeps the counters."""

    def __init__(self, redis_client: Any, defaults: Limits, cache_seconds: float) -> None:
        self.counters = RedisCounters(redis_client) if redis_client is not None else MemoryCounters()
        self.defaults = defaults
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, int], tuple[float, UsageLimit | None]] = {}
        self._lock = threading.Lock()
        self._seeded: set[tuple[str, str, str]] = set()
        self._seeded_day = ""
        self._seed_lock = threading.Lock()

    def limits_for(self, scope: str, subject_id: int) -> Limits:
        """The effective limits: a user's own over the defaults; a key's own, else none."""
        row = self._stored(scope, subject_id)
        base = self.defaults if scope == "user" else Limits()
        if row is None:
            return base
        return Limits(
            **{
                name: getattr(row, name) if getattr(row, name) is not None else getattr(base, name)
                for name in LIMIT_FIELDS
            }
        )

    def stored_limits(self, scope: str, subject_id: int) -> dict[str, Any]:
        row = self._stored(scope, subject_id, cached=False)
        return {name: getattr(row, name) if row else None for name in LIMIT_FIELDS}

    def set_limits(self, scope: str, subject_id: int, values: dict[str, Any]) -> None:
        """Store the given fields (None: back to the default); other fields keep their value."""
        row = db.session.scalar(
            select(UsageLimit).where(UsageLimit.scope == scope, UsageLimit.subject_id == subject_id)
        )
        if row is None:
            row = UsageLimit(scope=scope, subject_id=subject_id)
            db.session.add(row)
        for name, value in values.items():
            setattr(row, name, value)
        db.session.commit()
        with self._lock:
            self._cache.pop((scope, subject_id), None)

    def reserve(self, user_id: int, api_key_id: int | None, tokens: int, usd: float) -> Reservation:
        """Count one call's worst case against every limit, or raise 429 / 402 and count nothing."""
        now = time.time()
        bucket = Bucket.at(now)
        subjects = [(f"u:{user_id}", self.limits_for("user", user_id).as_counters())]
        if api_key_id is not None:
            subjects.append((f"k:{api_key_id}", self.limits_for("key", api_key_id).as_counters()))
        active = [(subject, values) for subject, values in subjects if any(values)]
        micros = usd_to_micros(usd)
        self._seed_budgets(bucket, active)
        refusal = self.counters.reserve(bucket, active, tokens, micros) if active else None
        if refusal is not None:
            raise _refusal_error(refusal.subject, refusal.kind, now)
        return Reservation(bucket, tuple(subject for subject, _ in active), tokens, micros)

    def settle(self, reservation: Reservation, tokens: int, usd: float) -> None:
        """Replace the reservation by the real figure; a second call does nothing."""
        if reservation.settled:
            return
        reservation.settled = True
        if reservation.subjects:
            self.counters.settle(
                reservation.bucket,
                reservation.subjects,
                tokens - reservation.tokens,
                usd_to_micros(usd) - reservation.micros,
            )

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose call never ran: its request, tokens and spend."""
        if reservation.settled:
            return
        reservation.settled = True
        if reservation.subjects:
            self.counters.settle(
                reservation.bucket,
                reservation.subjects,
                -reservation.tokens,
                -reservation.micros,
                requests=-1,
            )

    def _seed_budgets(self, bucket: Bucket, active: Sequence[tuple[str, Sequence[int]]]) -> None:
        """Start today's and this month's spend counters from the usage rows, once per process.

        So a restart (memory counters) or a lost Redis key does not hand out the budget again. Rows
        not yet written (in the usage stream, or queued in some process's memory) are not counted.
        Every active subject is seeded, budget or not: reserve() starts all four of its counters, and a
        budget set later reads those, so they must hold the spend from before they existed.
        """
        if bucket.day != self._seeded_day:
            # Markers of past days are not needed again; a month's are re-seeded as no-ops.
            self._seeded, self._seeded_day = set(), bucket.day
        for subject, _ in active:
            for kind in ("day", "month"):
                marker = (subject, kind, bucket.day if kind == "day" else bucket.month)
                if marker in self._seeded:
                    continue
                with self._seed_lock:
                    if marker in self._seeded:
                        continue
                    spent = _spent_since(subject, bucket.start(kind))
                    self.counters.seed(bucket, subject, kind, usd_to_micros(spent))
                    self._seeded.add(marker)

    def _stored(self, scope: str, subject_id: int, cached: bool = True) -> UsageLimit | None:
        # Limits change rarely: other instances see a change within LIMITS_CACHE_SECONDS.
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((scope, subject_id))
        if cached and hit and hit[0] > now:
            return hit[1]
        row = db.session.scalar(
            select(UsageLimit).where(UsageLimit.scope == scope, UsageLimit.subject_id == subject_id)
        )
        if row is not None:
            db.session.expunge(row)
        with self._lock:
            self._cache[(scope, subject_id)] = (now + self.cache_seconds, row)
        return row


def _refusal_error(subject: str, kind: str, now: float) -> ApiError:
    who = "this API key" if subject.startswith("k:") else "your account"
    if kind in ("rpm", "tpm"):
        what = "requests" if kind == "rpm" else "tokens"
        return RateLimited(
            f"The {what}-per-minute limit of {who} is reached.",
            code="rate_limit_exceeded",
            retry_after=max(1.0, math.ceil(60 - now % 60)),
        )
    period = "daily" if kind == "day" else "monthly"
    return budget_exceeded(f"The {period} spending limit of {who} is reached.")


def _spent_since(subject: str, start: datetime) -> float:
    scope, _, subject_id = subject.partition(":")
    column = UsageRecord.user_id if scope == "u" else UsageRecord.api_key_id
    spent = db.session.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost_usd), 0.0)).where(
            column == int(subject_id), UsageRecord.created_at >= start
        )
    )
    return float(spent or 0.0)


def limits_from_config(config: Any) -> Limits:
    return Limits(
        requests_per_minute=config.LLM_DEFAULT_RPM,
        tokens_per_minute=config.LLM_DEFAULT_TPM,
        daily_budget_usd=config.LLM_DEFAULT_DAILY_BUDGET_USD,
        monthly_budget_usd=config.LLM_DEFAULT_MONTHLY_BUDGET_USD,
    )


def limit_service() -> LimitService:
    return current_app.extensions["limits"]


def subjects_of(user_id: int, api_key_id: int | None) -> Sequence[str]:
    return (f"u:{user_id}",) if api_key_id is None else (f"u:{user_id}", f"k:{api_key_id}")
