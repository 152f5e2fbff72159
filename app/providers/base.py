"""The interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from app.errors import ProviderError


@dataclass(frozen=True)
class ProviderSettings:
    """One configured provider: what an adapter needs to address it."""

    name: str  # the configured name, e.g. "openai" or "my-vllm"; used in errors and owned_by
    base_url: str
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # extra headers sent on every request
    options: Mapping[str, Any] = field(default_factory=dict)  # type-specific, e.g. Azure's api_version


@dataclass(frozen=True)
class HttpRequest:
    """A request for the shared HTTP client to send; the adapter never sends it itself."""

    method: str
    url: str
    headers: dict[str, str]
    json: Any = None


class UnsupportedFeature(ProviderError):
    """The provider cannot do what the request asks (embeddings, n > 1, ...)."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, kind="invalid_request", provider=provider)


class ProviderAdapter(ABC):
    """Translate one chat request to a provider and its answers back.

    Streams are the primary shape: `parse_stream` turns the provider's body lines into
    OpenAI `chat.completion.chunk` dicts. It must raise ProviderError(kind="stream_interrupted")
    when the body ends before the provider's terminal event, so a cut stream is never taken for
    a whole answer. Whenever the provider reports token usage, the last chunk yielded carries it
    in "usage" (with "choices": []), whatever the caller asked; the gateway decides what to forward.
    """

    type: ClassVar[str]
    supports_embeddings: ClassVar[bool] = False
    is_local: ClassVar[bool] = False  # True for adapters that answer without HTTP (the mock)

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    @abstractmethod
    def chat_request(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> HttpRequest:
        """Build the upstream request for `chat` (our validated body) addressed to upstream `model`."""

    @abstractmethod
    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        """Turn a successful non-streaming response body (decoded JSON) into a chat.completion dict."""

    @abstractmethod
    def parse_stream(self, lines: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
        """Turn the lines of a successful streaming body into chat.completion.chunk dicts."""

    @abstractmethod
    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Classify an error response (status >= 400) into a ProviderError."""

    def embeddings_request(
        self, inputs: list[str], model: str, *, dimensions: int | None = None
    ) -> HttpRequest:
        raise UnsupportedFeature(
            f"{self.settings.name} does not offer embeddings", provider=self.settings.name
        )

    def parse_embeddings(self, body: Any, model: str) -> dict[str, Any]:
        raise UnsupportedFeature(
            f"{self.settings.name} does not offer embeddings", provider=self.settings.name
        )

    def local_stream(self, chat: Mapping[str, Any], model: str) -> Iterator[dict[str, Any]]:
        """Answer without HTTP; only adapters with is_local = True implement it."""
        raise NotImplementedError
