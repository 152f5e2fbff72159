"""MODELS_CONFIG routing fields: targets with weights, prefill and context windows, strategy, retry bounds."""

from __future__ import annotations

import pytest

from app.config import ConfigError
from app.services.gateway.catalog import RetryBounds, Target, load_catalog

PROVIDERS = """
providers:
  a: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: k}
  b: {type: anthropic, base_url: "http://127.0.0.1:9", api_key: k}
"""


def write(tmp_path, models: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(PROVIDERS + "models:\n" + models)
    return str(path)


def test_targets_strategy_and_retries_are_read(tmp_path):
    path = write(
        tmp_path,
        """
  smart:
    strategy: weighted
    retries: {max_per_target: 1, backoff_base: 0.1, backoff_cap: 2, max_retry_after: 5}
    targets:
      - {provider: a, model: gpt-4o, weight: 3, context_window: 128000}
      - {provider: b, model: claude-sonnet, accepts_prefill: true}
""",
    )
    entry = load_catalog(path, {}).resolve("smart")
    assert entry.strategy == "weighted"
    assert entry.retries == RetryBounds(max_per_target=1, backoff_base=0.1, backoff_cap=2, max_retry_after=5)
    assert entry.targets == (
        Target("a", "gpt-4o", weight=3, context_window=128000),
        Target("b", "claude-sonnet", accepts_prefill=True),
    )


def test_defaults_are_fallback_without_overrides(tmp_path):
    entry = load_catalog(
        write(tmp_path, "  plain: {provider: a, model: m, context_window: 8000}\n"), {}
    ).resolve("plain")
    assert entry.strategy == "fallback" and entry.retries == RetryBounds()
    assert entry.targets == (Target("a", "m", context_window=8000),)


@pytest.mark.parametrize(
    ("models", "place", "reason"),
    [
        ("  x: {strategy: random, targets: [{provider: a, model: m}]}\n", "models.x.strategy", "fallback"),
        (
            "  x: {targets: [{provider: a, model: m, weight: 0}]}\n",
            "models.x.targets.0.weight",
            "greater than 0",
        ),
        ("  x: {targets: [{provider: a, model: m, prefill: true}]}\n", "models.x.targets.0.prefill", "Extra"),
        (
            "  x: {targets: [{provider: a, model: m}], retries: {max_per_target: 50}}\n",
            "models.x.retries.max_per_target",
            "less than or equal to 10",
        ),
        (
            "  x: {targets: [{provider: a, model: m}, {provider: a, model: m}]}\n",
            "models.x.targets",
            "listed twice",
        ),
        ("  x: {targets: [{provider: nowhere, model: m}]}\n", "models.x", "'nowhere' is not configured"),
    ],
)
def test_invalid_routing_fields_name_file_place_and_reason(tmp_path, models, place, reason):
    path = write(tmp_path, models)
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, {})
    message = str(caught.value)
    assert path in message and place in message and reason in message
