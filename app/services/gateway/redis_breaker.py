"""Circuit breakers shared by every worker and instance through Redis (the interface: breaker.py).

Each transition is one Lua script, so concurrent workers never race on it. Redis's clock is used, so
instances with skewed clocks agree on when a cool-down ends. Its own module, so that a single-machine
setup never loads redis-py.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from app.services.gateway.breaker import CLOSED, BreakerSettings

logger = logging.getLogger(__name__)

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
