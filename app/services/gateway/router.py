"""Which target serves a request, and what each failure gets: retry, wait, move on, or give up.

A request walks a plan: its model's targets in the strategy's order, skipping those whose breaker is
open. The caller iterates the plan, tries each attempt it yields and reports the outcome on it; the
plan decides the next step. When nothing is left, iterating raises the failure the caller should see.

What each failure kind gets (ProviderError.kind):
- rate_limit with Retry-After: wait as told when it fits the budget, else the next target;
- rate_limit without it, overloaded, server, stream_interrupted (a reset before any byte): retries with
  exponential backoff and full jitter, at least MIN_RETRY_GAP apart, then the next target;
- timeout: the next target at once (a silent target only multiplies the wait);
- invalid_request, not_found, authentication, permission: never the same target again, the next one;
- context_length: the next target with a larger context window, if any is configured;
- content_policy: straight to the caller, with the provider's reason and code.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from app.errors import ProviderError
from app.services.gateway.breaker import Breaker, BreakerSettings, MemoryBreaker
from app.services.gateway.catalog import Catalog, ModelEntry, Provider, RetryBounds, Target
from app.services.gateway.strategies import TargetStats, order_targets
from app.utils.retry_policy import backoff_delay

_T = TypeVar("_T")

MIN_RETRY_GAP = 0.2  # seconds: at most five attempts a second on one target, whatever the jitter draws

_RETRYABLE = frozenset({"rate_limit", "overloaded", "server", "stream_interrupted"})
# Failures that say something about the target's health, not the request's: they feed its breaker.
_TARGET_FAULTS = frozenset(
    {"rate_limit", "overloaded", "server", "stream_interrupted", "timeout", "authentication", "permission"}
)


@dataclass(frozen=True)
class RetrySettings:
    """Resolved retry bounds for one model."""

    max_per_target: int
    backoff_base: float
    backoff_cap: float
    max_retry_after: float

    def merged(self, bounds: RetryBounds) -> RetrySettings:
        """These defaults overridden by a model's own bounds."""
        return RetrySettings(
            max_per_target=_pick(bounds.max_per_target, self.max_per_target),
            backoff_base=_pick(bounds.backoff_base, self.backoff_base),
            backoff_cap=_pick(bounds.backoff_cap, self.backoff_cap),
            max_retry_after=_pick(bounds.max_retry_after, self.max_retry_after),
        )


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


@dataclass
class AttemptRecord:
    """One try of one target, as the caller's usage and metrics see it."""

    provider: str
    model: str
    error: str | None = None  # the failure kind; None while running or after a success
    latency: float | None = None
    continuation: bool = False  # it continued a stream another target broke off


@dataclass
class RouteInfo:
    """What happened to one request: who served it and what was tried first."""

    model: str  # the public model name
    provider: str | None = None  # the target that served (or is serving) the answer
    upstream_model: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # target keys passed over by an open breaker
    primary: str | None = None  # the key of the target the strategy put first

    @property
    def fallback(self) -> bool:
        """Whether a target other than the strategy's first choice served the answer."""
        if self.provider is None:
            return False
        return f"{self.provider}/{self.upstream_model}" != self.primary

    def headers(self) -> dict[str, str]:
        """The x-multillm-* response headers."""
        if self.provider is None:
            return {}
        headers = {
            "x-multillm-provider": self.provider,
            "x-multillm-model": self.upstream_model or "",
            "x-multillm-attempts": str(len(self.attempts)),
        }
        if self.fallback:
            headers["x-multillm-fallback"] = "true"
        return headers


class Attempt:
    """One try the plan hands out; the caller reports exactly one outcome on it."""

    def __init__(self, plan: RoutePlan, target: Target, provider: Provider, record: AttemptRecord) -> None:
        self.plan = plan
        self.target = target
        self.provider = provider
        self.record = record
        self.error: ProviderError | None = None
        self._started = plan.clock()
        self._done = False

    def timeout(self, limit: float) -> float:
        """`limit` cut to what is left of the request's budget."""
        if self.plan.continuing:
            return limit  # a long stream may outlive the budget; its continuation still gets a fair wait
        return max(0.05, min(limit, self.plan.remaining()))

    def succeeded(self) -> None:
        if self._done:
            return
        self._done = True
        latency = self.plan.clock() - self._started
        self.record.latency = latency
        self.plan.router.stats.finished(self.target.key, latency)
        self.plan.router.breaker.success(self.target.key)
        self.plan.info.provider, self.plan.info.upstream_model = self.target.provider, self.target.model

    def failed(self, error: ProviderError) -> None:
        if self._done:
            return
        self._done = True
        self.error = error
        self.record.error = error.kind
        self.record.latency = self.plan.clock() - self._started
        self.plan.router.stats.finished(self.target.key, None)
        if error.kind in _TARGET_FAULTS:
            self.plan.router.breaker.failure(self.target.key)

    def abandoned(self) -> None:
        """The caller stopped (the client left, or an error not the provider's): count nothing against it."""
        if not self._done:
            self._done = True
            self.plan.router.stats.finished(self.target.key, None)

    def serving(self) -> None:
        """The stream's first chunk arrived: this target is the one the response headers name."""
        self.plan.info.provider, self.plan.info.upstream_model = self.target.provider, self.target.model


def _retryable(error: ProviderError) -> bool:
    # An HTTP 504 is a proxy in front of the provider giving up: an answer, unlike our own read timeout.
    return error.kind in _RETRYABLE or (error.kind == "timeout" and error.upstream_status == 504)


class Router:
    """One per process: strategies, breakers and statistics shared by every request."""

    def __init__(
        self,
        catalog: Catalog,
        breaker: Breaker,
        retry: RetrySettings,
        *,
        budget: float,
        stats: TargetStats | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.breaker = breaker
        self.retry = retry
        self.budget = budget
        self.stats = stats or TargetStats()
        self.rng = rng or random.Random()  # noqa: S311 - load spreading, not a secret
        self.sleep = sleep
        self.clock = clock

    def plan(self, entry: ModelEntry, public_model: str | None = None) -> RoutePlan:
        return RoutePlan(self, entry, public_model or entry.name)


class RoutePlan:
    """The attempts of one request; iterate it, try each attempt, report on it."""

    def __init__(self, router: Router, entry: ModelEntry, public_model: str) -> None:
        self.router = router
        self.entry = entry
        self.clock = router.clock
        self.deadline = router.clock() + router.budget
        self.retry = router.retry.merged(entry.retries)
        self.info = RouteInfo(model=public_model)
        self.targets = order_targets(entry.strategy, entry.targets, router.stats, router.rng)
        self.info.primary = self.targets[0].key if self.targets else None
        self.continuing = False  # set once a stream has sent chunks: only continuations from here on
        self.original_error: ProviderError | None = None  # what broke the stream, reported if none continues
        self._position = 0
        self._last_error: ProviderError | None = None

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def continue_stream(self, error: ProviderError) -> None:
        """A stream broke after chunks reached the client: the rest are tried once each to continue it."""
        if self.original_error is None:
            self.original_error = error
        self.continuing = True

    def __iter__(self) -> Iterator[Attempt]:
        while self._position < len(self.targets):
            target = self.targets[self._position]
            self._position += 1
            if not self.router.breaker.allow(target.key):
                self.info.skipped.append(target.key)
                continue
            yield from self._attempts_on(target)
        raise self.failing_with(self._final_error())

    def _attempts_on(self, target: Target) -> Iterator[Attempt]:
        provider = self.router.catalog.provider(target.provider)
        retries = 0
        while True:
            record = AttemptRecord(target.provider, target.model, continuation=self.continuing)
            self.info.attempts.append(record)
            self.router.stats.started(target.key)
            attempt = Attempt(self, target, provider, record)
            yield attempt
            error = attempt.error
            if error is None:
                return  # the caller is done with this plan; nothing to decide
            self._last_error = error
            if self.continuing:
                return  # a continuation gets one try per target, without waiting
            wait = self._wait_before_retry(error, retries)
            if wait is None:
                self._after_leaving(target, error)
                return
            retries += 1
            self.router.sleep(wait)

    def _wait_before_retry(self, error: ProviderError, retries: int) -> float | None:
        """Seconds to wait before trying the same target again, or None to leave it."""
        if not _retryable(error) or retries >= self.retry.max_per_target:
            return None
        if error.kind == "rate_limit" and error.retry_after is not None:
            wait = max(error.retry_after, MIN_RETRY_GAP)
            if wait > self.retry.max_retry_after:
                return None
        else:
            wait = max(
                MIN_RETRY_GAP,
                backoff_delay(retries + 1, base=self.retry.backoff_base, cap=self.retry.backoff_cap),
            )
        # A wait that would outlast the request's budget is no use; the next target may answer now.
        return wait if wait < self.remaining() else None

    def _after_leaving(self, target: Target, error: ProviderError) -> None:
        if error.kind == "content_policy":
            # The provider's verdict on the content; another provider is no way around it.
            raise self.failing_with(error)
        if error.kind == "context_length":
            self._keep_larger_contexts(target, error)

    def _keep_larger_contexts(self, target: Target, error: ProviderError) -> None:
        """Only targets with a larger configured context window are left; with none, this error ends it."""
        floor = target.context_window or 0
        rest = [
            t
            for t in self.targets[self._position :]
            if t.context_window is not None and t.context_window > floor
        ]
        if not rest:
            raise self.failing_with(error)
        self.targets = self.targets[: self._position] + rest

    def failing_with(self, error: ProviderError) -> ProviderError:
        """The error the caller sees, carrying this request's attempts as `route` for usage and metrics."""
        error.route = self.info  # type: ignore[attr-defined]
        return error

    def _final_error(self) -> ProviderError:
        if self.original_error is not None:
            return self.original_error
        if self._last_error is not None:
            return self._last_error
        soonest = self.router.breaker.settings.cooldown
        return ProviderError(
            f"every target of '{self.info.model}' is failing; retry in a moment",
            kind="overloaded",
            retry_after=soonest,
        )


def default_router(catalog: Catalog, *, budget: float) -> Router:
    """A router with in-process breakers and the documented default bounds."""
    retry = RetrySettings(max_per_target=2, backoff_base=0.5, backoff_cap=8.0, max_retry_after=30.0)
    return Router(catalog, MemoryBreaker(BreakerSettings(failures=5, cooldown=30.0)), retry, budget=budget)
