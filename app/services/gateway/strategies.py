"""The order in which a request tries a model's targets, by the model's strategy.

Every strategy returns all targets, best first, so the rest serve as fallbacks. Latency and in-flight
counts are this process's own view (each worker balances its own traffic), which is what least-busy
needs and close enough for a moving average of latencies.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

from app.services.gateway.catalog import Target

LATENCY_WEIGHT = 0.3  # weight of the newest sample in the exponential moving average


class TargetStats:
    """Requests in flight and a moving average of latency, per target key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._latency: dict[str, float] = {}

    def started(self, key: str) -> None:
        with self._lock:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def finished(self, key: str, latency: float | None) -> None:
        """One request ended; `latency` (seconds) is given for successes only."""
        with self._lock:
            self._in_flight[key] = max(0, self._in_flight.get(key, 0) - 1)
            if latency is not None:
                previous = self._latency.get(key)
                self._latency[key] = (
                    latency if previous is None else previous + LATENCY_WEIGHT * (latency - previous)
                )

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._in_flight.get(key, 0)

    def latency(self, key: str) -> float | None:
        with self._lock:
            return self._latency.get(key)


def order_targets(
    strategy: str, targets: Sequence[Target], stats: TargetStats, rng: random.Random
) -> list[Target]:
    """`targets` in the order to try them."""
    if strategy == "weighted":
        return _weighted_order(targets, rng)
    if strategy == "least-latency":
        # A target never measured sorts first, so every target gets measured once.
        return sorted(targets, key=lambda target: stats.latency(target.key) or 0.0)
    if strategy == "least-busy":
        return sorted(targets, key=lambda target: stats.in_flight(target.key))
    return list(targets)


def _weighted_order(targets: Sequence[Target], rng: random.Random) -> list[Target]:
    """A weighted draw without replacement: the first is picked by weight, then the next among the rest."""
    left = list(targets)
    ordered: list[Target] = []
    while left:
        point = rng.uniform(0, sum(target.weight for target in left))
        for index, target in enumerate(left):
            point -= target.weight
            if point <= 0 or index == len(left) - 1:
                ordered.append(left.pop(index))
                break
    return ordered
