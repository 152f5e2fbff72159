"""A circuit breaker per target: closed, open for a cool-down after N consecutive failures, then half-open.

Half-open lets exactly one trial request through; its success closes the breaker, its failure opens it
again for another cool-down. A trial that never reports back (its worker died) is replaced by a new one
after a cool-down, so a breaker cannot stay stuck half-open.

Two stores with one interface: in-process (one worker's view; here) and Redis (every worker and
instance shares it: app/services/gateway/redis_breaker.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

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
