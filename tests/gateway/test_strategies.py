"""Strategies: weighted split, least latency, least busy, and the order fallbacks are tried in."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from app.services.gateway.breaker import BreakerSettings, MemoryBreaker
from app.services.gateway.catalog import load_catalog
from app.services.gateway.chat import Gateway, Timeouts
from app.services.gateway.router import RetrySettings, Router
from app.services.gateway.strategies import TargetStats, order_targets
from app.services.gateway.upstream import build_provider_client

HI = [{"role": "user", "content": "Hi"}]


def mock_gateway(tmp_path, strategy: str, weights: dict[str, float]) -> Gateway:
    """A gateway whose model "smart" has built-in mock providers as targets: no HTTP, fast."""
    providers = "\n".join(f"  {name}: {{type: mock, base_url: 'local'}}" for name in weights)
    targets = "\n".join(
        f"      - {{provider: {name}, model: echo-{name}, weight: {weight}}}"
        for name, weight in weights.items()
    )
    path = tmp_path / "models.yaml"
    path.write_text(
        f"providers:\n{providers}\nmodels:\n  smart:\n    strategy: {strategy}\n    targets:\n{targets}\n"
    )
    catalog = load_catalog(str(path), {})
    router = Router(
        catalog,
        MemoryBreaker(BreakerSettings(failures=5, cooldown=30)),
        RetrySettings(max_per_target=0, backoff_base=0.1, backoff_cap=0.1, max_retry_after=0),
        budget=10,
        rng=random.Random(20261125),
    )
    return Gateway(catalog, build_provider_client(1.0), Timeouts(10, 10, 10, 1), router)


def test_weighted_split_over_a_thousand_calls_is_within_tolerance(tmp_path):
    gateway = mock_gateway(tmp_path, "weighted", {"a": 6, "b": 3, "c": 1})
    served = Counter()
    for _ in range(1000):
        completion, route = gateway.complete_routed({"model": "smart", "messages": HI})
        assert completion["model"] == route.upstream_model
        served[route.provider] += 1
    # Expected 600/300/100; five standard deviations of a binomial at n=1000 is at most 78.
    assert abs(served["a"] - 600) < 78 and abs(served["b"] - 300) < 73 and abs(served["c"] - 100) < 48
    assert sum(served.values()) == 1000


def test_weighted_order_keeps_every_target_as_a_fallback():
    from app.services.gateway.catalog import Target

    targets = [Target("a", "m", weight=1), Target("b", "m", weight=1), Target("c", "m", weight=1)]
    rng = random.Random(1)
    for _ in range(50):
        ordered = order_targets("weighted", targets, TargetStats(), rng)
        assert sorted(t.provider for t in ordered) == ["a", "b", "c"]


def test_least_latency_prefers_the_fastest_moving_average(tmp_path):
    from app.services.gateway.catalog import Target

    targets = [Target("slow", "m"), Target("fast", "m"), Target("new", "m")]
    stats = TargetStats()
    for _ in range(5):
        stats.started("slow/m")
        stats.finished("slow/m", 0.9)
        stats.started("fast/m")
        stats.finished("fast/m", 0.1)
    # A never-measured target is tried first, so it gets measured.
    assert [t.provider for t in order_targets("least-latency", targets, stats, random.Random())] == [
        "new",
        "fast",
        "slow",
    ]
    stats.started("new/m")
    stats.finished("new/m", 0.5)
    stats.started("fast/m")
    stats.finished("fast/m", 3.0)  # one slow answer moves the average: 0.1 + 0.3 * 2.9 = 0.97
    order = [t.provider for t in order_targets("least-latency", targets, stats, random.Random())]
    assert order == ["new", "slow", "fast"]


def test_least_busy_prefers_the_target_with_fewest_requests_in_flight():
    from app.services.gateway.catalog import Target

    targets = [Target("a", "m"), Target("b", "m"), Target("c", "m")]
    stats = TargetStats()
    for key, count in (("a/m", 3), ("b/m", 1), ("c/m", 2)):
        for _ in range(count):
            stats.started(key)
    assert [t.provider for t in order_targets("least-busy", targets, stats, random.Random())] == [
        "b",
        "c",
        "a",
    ]
    stats.finished("a/m", None)
    stats.finished("a/m", None)
    stats.finished("a/m", None)
    assert order_targets("least-busy", targets, stats, random.Random())[0].provider == "a"


@pytest.mark.parametrize("strategy", ["least-latency", "least-busy"])
def test_latency_and_busy_strategies_serve_through_the_gateway(tmp_path, strategy):
    gateway = mock_gateway(tmp_path, strategy, {"a": 1, "b": 1})
    completion, route = gateway.complete_routed({"model": "smart", "messages": HI})
    assert completion["choices"][0]["message"]["content"] == "Mock reply to: Hi"
    assert route.provider in {"a", "b"} and route.attempts[0].latency is not None
    # Nothing is left counted in flight once the call returned.
    assert gateway.router.stats.in_flight("a/echo-a") == gateway.router.stats.in_flight("b/echo-b") == 0
