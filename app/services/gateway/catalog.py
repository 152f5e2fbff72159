"""Which providers are configured and which public model names reach them.

Two sources: environment shortcuts (OPENAI_API_KEY, ANTHROPIC_API_KEY, ... and <PROVIDER>_BASE_URL)
and the YAML file named by MODELS_CONFIG. A configured provider makes "provider/model" usable; the
file can also name aliases with prices, context sizes and capabilities. The built-in "mock" provider
is always present so the API can be tried without any key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.config import ConfigError
from app.errors import NotFound
from app.providers.base import ProviderAdapter, ProviderSettings
from app.providers.registry import ADAPTERS, adapter_for

MOCK_PROVIDER = "mock"
MOCK_MODELS = ("mock/echo-1",)

# type -> (key variable, base URL variable, default base URL); a provider is configured from the
# environment when its key is set (Ollama, which needs none, when its base URL is set).
ENV_PROVIDERS: dict[str, tuple[str | None, str, str | None]] = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
    "gemini": ("GEMINI_API_KEY", "GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
    "mistral": ("MISTRAL_API_KEY", "MISTRAL_BASE_URL", "https://api.mistral.ai/v1"),
    "cohere": ("COHERE_API_KEY", "COHERE_BASE_URL", "https://api.cohere.com"),
    "azure": ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", None),
    "ollama": (None, "OLLAMA_BASE_URL", None),
}

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Provider:
    name: str
    type: str
    adapter: ProviderAdapter


STRATEGIES = ("fallback", "weighted", "least-latency", "least-busy")


@dataclass(frozen=True)
class Target:
    """One place a public model name can be served: a provider and the model name it knows."""

    provider: str
    model: str
    weight: float = 1.0  # share of traffic under the weighted strategy
    accepts_prefill: bool = False  # may continue a broken stream from an assistant prefill
    context_window: int | None = None  # tokens; a context-length failure moves to a larger one

    @property
    def key(self) -> str:
        """The name its breaker and statistics are kept under."""
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class RetryBounds:
    """How hard one request tries each target; a None field falls back to the environment's default."""

    max_per_target: int | None = None  # retries after the first attempt, for retryable failures
    backoff_base: float | None = None  # seconds; full jitter over base * 2^n, capped
    backoff_cap: float | None = None
    max_retry_after: float | None = None  # the longest Retry-After honoured on the same target


@dataclass(frozen=True)
class ModelEntry:
    name: str
    targets: tuple[Target, ...]
    input_price: float | None = None  # USD per million tokens
    output_price: float | None = None
    context_window: int | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)
    strategy: str = "fallback"
    retries: RetryBounds = field(default_factory=RetryBounds)


@dataclass(frozen=True)
class Catalog:
    providers: Mapping[str, Provider]
    models: Mapping[str, ModelEntry]  # aliases from the file, plus the mock's models

    def resolve(self, name: str) -> ModelEntry:
        """The entry for a public name: an alias, or "provider/model" for any configured provider."""
        if name in self.models:
            return self.models[name]
        provider, _, model = name.partition("/")
        if model and provider in self.providers:
            return ModelEntry(name=name, targets=(Target(provider, model),))
        raise NotFound(f"The model '{name}' does not exist or is not configured.", code="model_not_found")

    def provider(self, name: str) -> Provider:
        return self.providers[name]

    def listed(self) -> list[ModelEntry]:
        return sorted(self.models.values(), key=lambda entry: entry.name)


class _ProviderFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list, description="Upstream models to list in /v1/models.")


class _TargetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str
    model: str
    weight: float = Field(default=1.0, gt=0)
    accepts_prefill: bool = False
    context_window: int | None = Field(default=None, gt=0)


class _RetryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_per_target: int | None = Field(default=None, ge=0, le=10)
    backoff_base: float | None = Field(default=None, gt=0, le=60)
    backoff_cap: float | None = Field(default=None, gt=0, le=300)
    max_retry_after: float | None = Field(default=None, ge=0, le=3600)


class _ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str | None = None
    model: str | None = None
    targets: list[_TargetFile] = Field(default_factory=list)
    input_price: float | None = Field(default=None, ge=0)
    output_price: float | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, gt=0)
    capabilities: list[str] = Field(default_factory=list)
    strategy: Literal["fallback", "weighted", "least-latency", "least-busy"] = "fallback"
    retries: _RetryFile = Field(default_factory=_RetryFile)


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: dict[str, _ProviderFile] = Field(default_factory=dict)
    models: dict[str, _ModelFile] = Field(default_factory=dict)


def load_catalog(models_config: str | None = None, environ: Mapping[str, str] | None = None) -> Catalog:
    """Build the catalog; an unusable file or variable raises ConfigError naming the place and reason."""
    environ = os.environ if environ is None else environ
    providers: dict[str, Provider] = {
        MOCK_PROVIDER: _provider(MOCK_PROVIDER, "mock", ProviderSettings("mock", ""))
    }
    providers.update(_providers_from_env(environ))
    models: dict[str, ModelEntry] = {
        name: ModelEntry(
            name=name, targets=(Target(MOCK_PROVIDER, name.partition("/")[2]),), capabilities=frozenset()
        )
        for name in MOCK_MODELS
    }
    if models_config:
        file_providers, file_models = _load_file(Path(models_config), environ)
        providers.update(file_providers)
        models.update(file_models)
        _check_targets(Path(models_config), models, providers)
    return Catalog(providers=providers, models=models)


def _provider(name: str, type_: str, settings: ProviderSettings) -> Provider:
    return Provider(name=name, type=type_, adapter=adapter_for(type_, settings))


def _providers_from_env(environ: Mapping[str, str]) -> dict[str, Provider]:
    found: dict[str, Provider] = {}
    for type_, (key_var, url_var, default_url) in ENV_PROVIDERS.items():
        key = environ.get(key_var, "").strip() if key_var else None
        base_url = environ.get(url_var, "").strip() or default_url
        if key_var and not key:
            continue
        if not base_url:
            if key_var:
                raise ConfigError(f"{key_var} is set but {url_var} is not; {type_} needs both")
            continue
        found[type_] = _provider(type_, type_, ProviderSettings(name=type_, base_url=base_url, api_key=key))
    return found


def _interpolate(value: Any, environ: Mapping[str, str], place: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{place.lstrip('.')}: ${{{name}}} is not set in the environment")
            return environ[name]

        return _INTERPOLATION.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, f"{place}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{place}[{i}]") for i, v in enumerate(value)]
    return value


def _load_file(path: Path, environ: Mapping[str, str]) -> tuple[dict[str, Provider], dict[str, ModelEntry]]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"MODELS_CONFIG {path}: cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"MODELS_CONFIG {path}:{where}: invalid YAML: {getattr(error, 'problem', error)}"
        ) from None
    try:
        raw = _interpolate(raw, environ, "")
    except ConfigError as error:
        raise ConfigError(f"MODELS_CONFIG {path}: {error}") from None
    try:
        parsed = _CatalogFile.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"MODELS_CONFIG {path}: {place}: {first['msg']}") from None

    providers: dict[str, Provider] = {}
    models: dict[str, ModelEntry] = {}
    for name, spec in parsed.providers.items():
        if spec.type not in ADAPTERS:
            known = ", ".join(sorted(ADAPTERS))
            raise ConfigError(
                f"MODELS_CONFIG {path}: providers.{name}.type: unknown type {spec.type!r}; known: {known}"
            )
        api_key = spec.api_key
        if spec.api_key_env:
            api_key = environ.get(spec.api_key_env) or None
            if api_key is None:
                raise ConfigError(
                    f"MODELS_CONFIG {path}: providers.{name}.api_key_env: {spec.api_key_env} is not set"
                )
        base_url = spec.base_url or _default_base_url(spec.type)
        if not base_url:
            raise ConfigError(
                f"MODELS_CONFIG {path}: providers.{name}.base_url: required for type {spec.type}"
            )
        settings = ProviderSettings(name, base_url, api_key, dict(spec.headers), dict(spec.options))
        providers[name] = _provider(name, spec.type, settings)
        for upstream in spec.models:
            models[f"{name}/{upstream}"] = ModelEntry(
                name=f"{name}/{upstream}", targets=(Target(name, upstream),)
            )
    for alias, spec in parsed.models.items():
        if spec.targets and (spec.provider or spec.model):
            raise ConfigError(
                f"MODELS_CONFIG {path}: models.{alias}: give either provider and model, or targets"
            )
        targets = [
            Target(t.provider, t.model, t.weight, t.accepts_prefill, t.context_window) for t in spec.targets
        ]
        if len({target.key for target in targets}) != len(targets):
            raise ConfigError(f"MODELS_CONFIG {path}: models.{alias}.targets: a target is listed twice")
        if not targets:
            if not (spec.provider and spec.model):
                raise ConfigError(f"MODELS_CONFIG {path}: models.{alias}: provider and model are required")
            targets = [Target(spec.provider, spec.model, context_window=spec.context_window)]
        models[alias] = ModelEntry(
            name=alias,
            targets=tuple(targets),
            input_price=spec.input_price,
            output_price=spec.output_price,
            context_window=spec.context_window,
            capabilities=frozenset(spec.capabilities),
            strategy=spec.strategy,
            retries=RetryBounds(**spec.retries.model_dump()),
        )
    return providers, models


def _default_base_url(type_: str) -> str | None:
    for env_type, (_, _, default_url) in ENV_PROVIDERS.items():
        if env_type == type_:
            return default_url
    return None


def _check_targets(path: Path, models: Mapping[str, ModelEntry], providers: Mapping[str, Provider]) -> None:
    for entry in models.values():
        for target in entry.targets:
            if target.provider not in providers:
                raise ConfigError(
                    f"MODELS_CONFIG {path}: models.{entry.name}: provider {target.provider!r} is not configured"
                )
