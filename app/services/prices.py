"""What a model costs: prices from MODELS_CONFIG first, else a built-in table of well-known models.

USD per million tokens (input, output), list prices of the providers' standard tiers as published in
2025; they change, so a deployment that bills on them should set `input_price` and `output_price` in
MODELS_CONFIG, which always win. A model in neither place has no cost (None), never a guessed one.
"""

from __future__ import annotations

import functools

from app.services.gateway.catalog import ModelEntry

Prices = tuple[float, float]

# Keys are upstream model names or their dated families: the longest key a name starts with applies,
# so "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini", not "gpt-4o".
BUILTIN_PRICES: dict[str, Prices] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
}


@functools.lru_cache(maxsize=1024)  # asked twice per call (reserve, then record); the table never changes
def builtin_prices(upstream_model: str | None) -> Prices | None:
    if not upstream_model:
        return None
    name = upstream_model.rpartition("/")[2].lower()  # "models/gemini-2.5-flash" as Gemini spells it
    matches = [key for key in BUILTIN_PRICES if name == key or name.startswith(key + "-")]
    return BUILTIN_PRICES[max(matches, key=len)] if matches else None


def configured_prices(entry: ModelEntry) -> Prices | None:
    if entry.input_price is None or entry.output_price is None:
        return None
    return (entry.input_price, entry.output_price)


def prices_for(entry: ModelEntry, upstream_model: str | None) -> Prices | None:
    """The prices of a call served by `upstream_model` under the public `entry`."""
    return configured_prices(entry) or builtin_prices(upstream_model)


def worst_prices(entry: ModelEntry) -> Prices | None:
    """The dearest prices any target of the entry may charge: what a reservation assumes."""
    found = [p for p in (prices_for(entry, t.model) for t in entry.targets) if p is not None]
    if not found:
        return None
    return (max(p[0] for p in found), max(p[1] for p in found))


def cost(prices: Prices | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    if prices is None:
        return None
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000
