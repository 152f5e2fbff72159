from __future__ import annotations

import pytest

from app.errors import ApiError
from app.providers.base import ProviderAdapter, ProviderSettings
from app.providers.mistral import MistralAdapter
from app.providers.registry import ADAPTERS, adapter_for


def test_every_type_maps_to_an_adapter_declaring_it():
    for name, cls in ADAPTERS.items():
        assert issubclass(cls, ProviderAdapter)
        assert cls.type == name


def test_adapter_for_builds_with_settings():
    settings = ProviderSettings(name="m", base_url="https://api.mistral.ai/v1", api_key="k")
    adapter = adapter_for("mistral", settings)
    assert isinstance(adapter, MistralAdapter) and adapter.settings is settings


def test_unknown_type():
    with pytest.raises(ApiError) as info:
        adapter_for("nope", ProviderSettings(name="x", base_url=""))
    assert "nope" in info.value.message and info.value.code == "unknown_provider_type"
