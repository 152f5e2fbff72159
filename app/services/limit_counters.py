"""Counters behind the usage limits: reserve a worst case and settle the real figure, each atomically.

Every subject (a user "u:1" or an API key "k:7") has four counters: requests and tokens in the current
minute, and spend in micro-USD today and this month (UTC). `reserve` checks every counter of every
subject against its limit and, only when all fit, adds to all of them, in one step: a Lua script in
Redis (shared by every worker and instance), or under one lock in memory (one process only).
`settle` adds the difference between the real figure and the reservation, also in one step (and
takes the request back when a call is released without running).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Counter kinds, in the order the scripts see them.
KINDS = ("rpm", "tpm", "day", "month")
_TTL = {"rpm": 120, "tpm": 120, "day": 2 * 86400, "month": 32 * 86400}


@dataclass(frozen=True)
class Bucket:
    """Where one reservation was counted: the windows it fell in, so settling hits the same keys."""

    minute: int
    day: str
    month: str

    def start(self, kind: str) -> datetime:
        """When the day or month of this bucket began (UTC)."""
        text = self.day if kind == "day" else self.month + "01"
        return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC)

    @classmethod
    def at(cls, now: float) -> Bucket:
        return _bucket_of_minute(int(now // 60))

    def key(self, subject: str, kind: str) -> str:
        window = {"rpm": self.minute, "tpm": self.minute, "day": self.day, "month": self.month}[kind]
        return f"mla:usage:{subject}:{kind}:{window}"


@functools.lru_cache(maxsize=4)
def _bucket_of_minute(minute: int) -> Bucket:
    # Every call of a minute falls in the same windows (a UTC day and month start on a minute), so the
    # bucket is built once a minute instead of once per call (date formatting and a frozen dataclass).
    moment = datetime.fromtimestamp(minute * 60, UTC)
    return Bucket(minute, moment.strftime("%Y%m%d"), moment.strftime("%Y%m"))


@dataclass(frozen=True)
class Refusal:
    subject: str
    kind: str  # one of KINDS


_RESERVE = """
local amounts = {1, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[2])}
local ttls = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local subjects = #KEYS / 4
for s = 0, subjects - 1 do
  for j = 1, 4 do
    local limit = tonumber(ARGV[6 + s * 4 + j])
    if limit > 0 then
      local current = tonumber(redis.call('GET', KEYS[s * 4 + j]) or '0')
      if current + amounts[j] > limit then
        return {s + 1, j}
      end
    end
  end
end
for s = 0, subjects - 1 do
  for j = 1, 4 do
    redis.call('INCRBY', KEYS[s * 4 + j], amounts[j])
    redis.call('EXPIRE', KEYS[s * 4 + j], ttls[j])
  end
end
return {0, 0}
"""

_SETTLE = """
local amounts = {tonumber(ARGV[3]), tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[2])}
for i = 1, #KEYS do
  local j = ((i - 1) % 4) + 1
  if amounts[j] ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], amounts[j])
  end
end
return 0
"""


class RedisCounters:
    """Counters in Redis; the Lua scripts make check-and-add one step across every instance."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def reserve(
        self, bucket: Bucket, limits: Sequence[tuple[str, Sequence[int]]], tokens: int, micros: int
    ) -> Refusal | None:
        keys = [bucket.key(subject, kind) for subject, _ in limits for kind in KINDS]
        args = [tokens, micros, *(_TTL[kind] for kind in KINDS)]
        args += [int(value) for _, values in limits for value in values]
        subject_index, kind_index = self._reserve(keys=keys, args=args)
        if subject_index == 0:
            return None
        return Refusal(limits[subject_index - 1][0], KINDS[kind_index - 1])

    def settle(
        self, bucket: Bucket, subjects: Sequence[str], tokens: int, micros: int, requests: int = 0
    ) -> None:
        if tokens == 0 and micros == 0 and requests == 0:
            return
        keys = [bucket.key(subject, kind) for subject in subjects for kind in KINDS]
        self._settle(keys=keys, args=[tokens, micros, requests])

    def value(self, bucket: Bucket, subject: str, kind: str) -> int:
        return int(self.client.get(bucket.key(subject, kind)) or 0)

    def add(self, bucket: Bucket, subject: str, kind: str, amount: int) -> None:
        """Add without a check."""
        key = bucket.key(subject, kind)
        self.client.incrby(key, amount)
        self.client.expire(key, _TTL[kind])

    def seed(self, bucket: Bucket, subject: str, kind: str, amount: int) -> None:
        """Start a counter at `amount` unless another instance has started it already."""
        self.client.set(bucket.key(subject, kind), amount, nx=True, ex=_TTL[kind])


class MemoryCounters:
    """Counters in this process, under one lock: exact within a process, not shared between processes."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def reserve(
        self, bucket: Bucket, limits: Sequence[tuple[str, Sequence[int]]], tokens: int, micros: int
    ) -> Refusal | None:
        amounts = (1, tokens, micros, micros)
        with self._lock:
            self._prune()
            for subject, values in limits:
                for kind, amount, limit in zip(KINDS, amounts, values, strict=True):
                    if limit > 0 and self._values.get(bucket.key(subject, kind), 0) + amount > limit:
                        return Refusal(subject, kind)
            now = time.time()
            for subject, _ in limits:
                for kind, amount in zip(KINDS, amounts, strict=True):
                    key = bucket.key(subject, kind)
                    self._values[key] = self._values.get(key, 0) + amount
                    self._expires[key] = now + _TTL[kind]
        return None

    def settle(
        self, bucket: Bucket, subjects: Sequence[str], tokens: int, micros: int, requests: int = 0
    ) -> None:
        with self._lock:
            for subject in subjects:
                for kind, amount in zip(KINDS, (requests, tokens, micros, micros), strict=True):
                    key = bucket.key(subject, kind)
                    if amount and key in self._values:
                        self._values[key] += amount

    def value(self, bucket: Bucket, subject: str, kind: str) -> int:
        with self._lock:
            return self._values.get(bucket.key(subject, kind), 0)

    def add(self, bucket: Bucket, subject: str, kind: str, amount: int) -> None:
        with self._lock:
            key = bucket.key(subject, kind)
            self._values[key] = self._values.get(key, 0) + amount
            self._expires[key] = time.time() + _TTL[kind]

    def seed(self, bucket: Bucket, subject: str, kind: str, amount: int) -> None:
        with self._lock:
            key = bucket.key(subject, kind)
            if key not in self._values:
                self._values[key] = amount
                self._expires[key] = time.time() + _TTL[kind]

    def _prune(self) -> None:
        # Old windows are dropped now and then, so the dictionary does not grow for ever.
        now = time.time()
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        for key in [key for key, expires in self._expires.items() if expires < now]:
            self._values.pop(key, None)
            self._expires.pop(key, None)
