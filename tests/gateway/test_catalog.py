from __future__ import annotations

import pytest

from app.config import ConfigError
from app.errors import NotFound
from app.services import prices
from app.services.gateway.catalog import load_catalog


def write(tmp_path, text: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return str(path)


def test_environment_shortcuts_make_provider_model_names_usable():
    catalog = load_catalog(
        None,
        {
            "OPENAI_API_KEY": "k",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "ANTHROPIC_API_KEY": "a",
            "OLLAMA_BASE_URL": "http://127.0.0.1:11434",
        },
    )
    entry = catalog.resolve("openai/gpt-4o-mini")
    assert entry.targets[0].provider == "openai" and entry.targets[0].model == "gpt-4o-mini"
    assert catalog.provider("openai").adapter.settings.base_url == "http://127.0.0.1:9/v1"
    assert catalog.provider("anthropic").adapter.settings.base_url == "https://api.anthropic.com"
    assert catalog.resolve("ollama/llama3.2").targets[0].model == "llama3.2"
    with pytest.raises(NotFound):
        catalog.resolve("gemini/gemini-2.5-flash")  # no GEMINI_API_KEY
    assert "mock/echo-1" in catalog.models


def test_azure_needs_its_endpoint():
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        load_catalog(None, {"AZURE_OPENAI_API_KEY": "k"})


def test_file_with_interpolation_aliases_and_prices(tmp_path):
    path = write(
        tmp_path,
        """
providers:
  vllm:
    type: openai_compatible
    base_url: http://127.0.0.1:8000/v1
    api_key: ${VLLM_KEY}
    headers: {X-Team: research}
models:
  fast:
    provider: vllm
    model: llama-3.1-8b
    input_price: 0.1
    output_price: 0.2
    context_window: 8192
    capabilities: [tools]
""",
    )
    catalog = load_catalog(path, {"VLLM_KEY": "secret"})
    adapter = catalog.provider("vllm").adapter
    assert adapter.settings.api_key == "secret" and adapter.settings.headers == {"X-Team": "research"}
    fast = catalog.resolve("fast")
    assert fast.targets[0].model == "llama-3.1-8b"
    assert prices.cost(prices.configured_prices(fast), 1_000_000, 500_000) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("providers: [1, 2", {}, "line"),
        ("providers:\n  p: {type: openai, base_url: http://x, bogus: 1}\n", {}, "providers.p.bogus"),
        ("providers:\n  p: {type: nonsense, base_url: http://x}\n", {}, "unknown type 'nonsense'"),
        ("providers:\n  p: {type: openai, api_key: '${MISSING}'}\n", {}, "MISSING"),
        ("providers:\n  p: {type: openai_compatible}\n", {}, "providers.p.base_url"),
        ("models:\n  a: {provider: ghost, model: m}\n", {}, "provider 'ghost' is not configured"),
        ("models:\n  a: {provider: mock}\n", {}, "models.a"),
        ("models:\n  a: {provider: mock, model: m, input_price: -1}\n", {}, "models.a.input_price"),
    ],
)
def test_invalid_files_name_the_file_the_place_and_the_reason(tmp_path, text, environ, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_catalog(path, environ)
    assert path in str(caught.value)
    assert message in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_catalog(str(tmp_path / "absent.yaml"), {})


def test_the_shipped_example_file_loads():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "models.example.yaml"
    catalog = load_catalog(
        str(example),
        {
            "OPENAI_API_KEY": "k",
            "ANTHROPIC_API_KEY": "a",
            "AZURE_OPENAI_API_KEY": "z",
            "AZURE_OPENAI_ENDPOINT": "https://r.example",
        },
    )
    assert prices.configured_prices(catalog.resolve("fast")) == (0.15, 0.6)
    assert catalog.resolve("smart").targets[0].provider == "claude"
    assert "openai/gpt-4o-mini" in catalog.models
