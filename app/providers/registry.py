"""Provider types by name: adding a provider is one module and one line here."""

from __future__ import annotations

from app.errors import ApiError
from app.providers.anthropic import AnthropicAdapter
from app.providers.azure import AzureOpenAIAdapter
from app.providers.base import ProviderAdapter, ProviderSettings
from app.providers.cohere import CohereAdapter
from app.providers.gemini import GeminiAdapter
from app.providers.mistral import MistralAdapter
from app.providers.mock import MockAdapter
from app.providers.ollama import OllamaAdapter
from app.providers.openai import OpenAIAdapter
from app.providers.openai_compatible import OpenAICompatibleAdapter

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    "anthropic": AnthropicAdapter,
    "azure": AzureOpenAIAdapter,
    "cohere": CohereAdapter,
    "gemini": GeminiAdapter,
    "mistral": MistralAdapter,
    "mock": MockAdapter,
    "ollama": OllamaAdapter,
    "openai": OpenAIAdapter,
    "openai_compatible": OpenAICompatibleAdapter,
}


def adapter_for(settings_type: str, settings: ProviderSettings) -> ProviderAdapter:
    """The adapter for a configured provider of type `settings_type`."""
    try:
        cls = ADAPTERS[settings_type]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ApiError(
            f"unknown provider type {settings_type!r} for {settings.name!r}; known: {known}",
            code="unknown_provider_type",
        ) from None
    return cls(settings)
