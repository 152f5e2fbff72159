"""Prices: MODELS_CONFIG wins; otherwise the built-in table by the longest matching model family."""

from __future__ import annotations

import pytest

from app.services.gateway.catalog import ModelEntry, Target
from app.services.prices import builtin_prices, cost, prices_for, worst_prices


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o", (2.50, 10.00)),
        ("gpt-4o-mini", (0.15, 0.60)),
        ("gpt-4o-mini-2024-07-18", (0.15, 0.60)),  # dated: its family, not the shorter "gpt-4o"
        ("gpt-4o-2024-08-06", (2.50, 10.00)),
        ("claude-3-5-sonnet-20241022", (3.00, 15.00)),
        ("models/gemini-2.5-flash", (0.30, 2.50)),
        ("GPT-4o-mini", (0.15, 0.60)),
        ("gpt-4", None),
        ("gpt-4omega", None),
        ("echo-1", None),
        (None, None),
    ],
)
def test_builtin_table(name, expected):
    assert builtin_prices(name) == expected


def test_configured_prices_win_and_reservations_assume_the_dearest_target():
    entry = ModelEntry("smart", (Target("a", "gpt-4o-mini"), Target("b", "claude-opus-4-1")))
    assert prices_for(entry, "gpt-4o-mini") == (0.15, 0.60)
    assert worst_prices(entry) == (15.00, 75.00)
    priced = ModelEntry("smart", entry.targets, input_price=1.0, output_price=2.0)
    assert prices_for(priced, "gpt-4o-mini") == (1.0, 2.0) == worst_prices(priced)
    assert worst_prices(ModelEntry("m", (Target("mock", "echo-1"),))) is None
    assert cost((1.0, 2.0), 3, 4) == pytest.approx(11e-6)
    assert cost(None, 3, 4) is None
