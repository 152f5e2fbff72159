"""A circuit breaker per target: closed, open for a cool-down after N consecutive failures, then half-open.

Half-open lets exactly one trial request through; its success closes the breaker, its failure opens it
again for another cool-down. A trial that never reports back (its worker died) is replaced by a new one
after a cool-down, so a breaker cannot stay stuck half-open.

Two stores with one interface: in-process (one worker's view) and Redis (every worker and instance
shares it; each transition is one Lua script, so concurrent workers never race on it). Redis's clock is
used there, so instances with skewed clocks agree on when a cool-down ends.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    failures: int  # consecutive failures that open the breaker
    cooldown: float  # seconds it stays open before a trial


class Breaker(Protocol):
    settings: BreakerSettings

    def allow(self, key: str) -> bool:
        """Whether a request may go to `key` now; in half-open, True for the one trial only."""

    def success(self, key: str) -> None:
        """A request to `key` succeeded: close the breaker."""

    def failure(self, key: str) -> None:
        """A request to `key` failed in a way that speaks of the target's health."""

    def state(self, key: str) -> str:
        """closed, open or half_open (an open breaker past its cool-down reads half_open)."""


@dataclass
class _Entry:
    failures: int = 0
    state: str = CLOSED
    until: float = 0.0  # open: end of the cool-down; half-open: when a lost trial is replaced


class MemoryBreaker:
    """The breakers of this process only."""

    def __init__(self, settings: BreakerSettings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.state == CLOSED:
                return True
            now = self._clock()
            if now < entry.until:
                return False
            entry.state, entry.until = HALF_OPEN, now + self.settings.cooldown
            return True

    def success(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def failure(self, key: str) -> None:
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            entry.failures += 1
            if entry.state == HALF_OPEN or entry.failures >= self.settings.failures:
                entry.state, entry.until = OPEN, self._clock() + self.settings.cooldown

    def state(self, key: str) -> str:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return CLOSED
            if entry.state == OPEN and self._clock() >= entry.until:
                return HALF_OPEN
            return entry.state


# KEYS[1] the breaker's hash; ARGV: failures threshold, cool-down seconds. Times are Redis's own clock.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
_ALLOW = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return 1 end
local until_ = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now < until_ then return 0 end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', tostring(now + tonumber(ARGV[2])))
return 1
"""
)
_FAILURE = (
    _NOW
    + """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'half_open' or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', tostring(now + tonumber(ARGV[2])))
end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 10 + 3600))
return failures
"""
)
_STATE = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'closed' end
if state == 'open' and now >= tonumber(redis.call('HGET', KEYS[1], 'until') or '0') then
  return 'half_open'
end
return state
"""
)


class RedisBreaker:
    """Breakers shared by every worker and instance on one Redis; a Redis outage lets traffic through."""

    def __init__(self, client: redis.Redis, settings: BreakerSettings, prefix: str = "mla:breaker:") -> None:
        self.settings = settings
        self._client = client
        self._prefix = prefix
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_FAILURE)
        self._state = client.register_script(_STATE)

    def _args(self) -> list[Any]:
        return [self.settings.failures, self.settings.cooldown]

    def allow(self, key: str) -> bool:
        try:
            return bool(self._allow(keys=[self._prefix + key], args=self._args()))
        except redis.RedisError as error:
            # Failing open: without the shared state the gateway still serves, as without a breaker.
            logger.warning("breaker store unavailable, letting %s through: %s", key, error)
            return True

    def success(self, key: str) -> None:
        try:
            self._client.delete(self._prefix + key)
        except redis.RedisError as error:
            logger.warning("breaker store unavailable for %s: %s", key, error)

    def failure(self, key: str) -> None:
        try:
            self._failure(keys=[self._prefix + key], args=self._args())
        except redis.RedisError as error:
            logger.warning("breaker store unavailable for %s: %s", key, error)

    def state(self, key: str) -> str:
        try:
            value = self._state(keys=[self._prefix + key], args=self._args())
        except redis.RedisError:
            return CLOSED
        return value.decode() if isinstance(value, bytes) else str(value)
