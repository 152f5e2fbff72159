"""OpenAI's chat completions API: our format is its format, so this adapter mostly forwards.

Wire reference: the openai SDK (types/chat/completion_create_params.py, _streaming.py, _base_client.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from app.errors import ProviderError
from app.providers.base import HttpRequest, ProviderAdapter
from app.providers.error_mapping import decode_json_body, kind_for_status, retry_after_seconds, short_message
from app.utils.sse import iter_sse_events

logger = logging.getLogger(__name__)

# Request fields forwarded as they are: the ones our /v1/chat/completions schema accepts, plus a few OpenAI
# fields the schema may grow into. Anything else in `chat` (nothing, once validated) is not sent.
PASSTHROUGH_FIELDS = (
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
)

_CONTENT_POLICY_CODES = frozenset({"content_filter", "content_policy_violation"})


def build_chat_body(chat: Mapping[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """The OpenAI request body for `chat` sent to `model`."""
    body: dict[str, Any] = {"model": model}
    for name in PASSTHROUGH_FIELDS:
        if chat.get(name) is not None:
            body[name] = chat[name]
    if stream:
        body["stream"] = True
        # Usage is reported in a last chunk only when asked; the gateway accounts tokens on every stream.
        body["stream_options"] = {**(chat.get("stream_options") or {}), "include_usage": True}
    return body


def normalize_completion(body: Any, model: str, provider: str) -> dict[str, Any]:
    """Check a chat.completion body and fill the top-level fields some servers leave out."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise ProviderError(
            f"{provider} returned a response without choices", kind="server", provider=provider
        )
    completion = dict(body)
    if "id" not in completion:  # (setdefault would make an id for every call)
        completion["id"] = f"chatcmpl-{uuid.uuid4().hex}"
    completion["object"] = "chat.completion"
    completion.setdefault("created", int(time.time()))
    if not completion.get("model"):
        completion["model"] = model
    return completion


def error_from_body(status: int, payload: Any, headers: Mapping[str, str], provider: str) -> ProviderError:
    """Classify an OpenAI-style error payload {"error": {message, type, param, code}}."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):  # some compatible servers send {"error": "text"}
        error = {"message": error}
    if not isinstance(error, dict):
        error = payload if isinstance(payload, dict) else {}
    code = error.get("code")
    code = str(code) if code is not None else None
    message = short_message(error.get("message"), f"{provider} answered HTTP {status}")
    kind = kind_for_status(status)
    if code == "context_length_exceeded" or (
        # vLLM and other compatible servers send OpenAI's wording without the code.
        status == 400 and "maximum context length" in message
    ):
        kind = "context_length"
    elif code in _CONTENT_POLICY_CODES or error.get("type") in _CONTENT_POLICY_CODES:
        kind = "content_policy"
    return ProviderError(
        message,
        kind=kind,
        provider=provider,
        upstream_status=status,
        retry_after=retry_after_seconds(headers),
        provider_code=code or error.get("type"),
    )


def _usage_chunk(chunk: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": chunk.get("id", ""),
        "object": "chat.completion.chunk",
        "created": chunk.get("created", 0),
        "model": chunk.get("model", ""),
        "choices": [],
        "usage": usage,
    }


class OpenAIAdapter(ProviderAdapter):
    """api.openai.com and anything that speaks exactly its chat completions dialect."""

    type = "openai"
    supports_embeddings = True

    def _url(self, path: str, model: str) -> str:
        """Where `path` (chat/completions, embeddings) lives for `model`; Azure addresses by deployment."""
        return f"{self.settings.base_url.rstrip('/')}/{path}"

    def _auth_headers(self) -> dict[str, str]:
        if not self.settings.api_key:
            raise ProviderError(
                f"{self.settings.name} has no API key configured",
                kind="authentication",
                provider=self.settings.name,
            )
        return {"Authorization": f"Bearer {self.settings.api_key}"}

    def _headers(self, *, stream: bool = False) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        headers.update(self._auth_headers())
        headers.update(self.settings.headers)
        return headers

    def chat_request(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> HttpRequest:
        return HttpRequest(
            "POST",
            self._url("chat/completions", model),
            self._headers(stream=stream),
            self._chat_body(chat, model, stream=stream),
        )

    def _chat_body(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        return build_chat_body(chat, model, stream=stream)

    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        if isinstance(body, dict) and "error" in body and "choices" not in body:
            raise error_from_body(500, body, {}, self.settings.name)
        return normalize_completion(body, model, self.settings.name)

    def parse_stream(self, lines: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
        last: dict[str, Any] = {"model": model}
        usage: dict[str, Any] | None = None
        seen: set[int] = set()
        finished: set[int] = set()
        for event in iter_sse_events(lines):
            if event.data.strip() == "[DONE]":
                if usage is not None:
                    yield _usage_chunk(last, usage)
                return
            try:
                data = orjson.loads(event.data)
            except ValueError:
                logger.warning("dropped a non-JSON stream event from %s", self.settings.name)
                continue
            if not isinstance(data, dict):
                logger.warning("dropped a non-object stream event from %s", self.settings.name)
                continue
            if data.get("error") or data.get("object") == "error" or event.event == "error":
                raise error_from_body(500, data, {}, self.settings.name)
            chunk = self._normalize_chunk(data, model)
            last = chunk
            # Usage is held back and sent once, last, whichever chunk carried it (OpenAI: a choiceless chunk
            # before [DONE]; Mistral and vLLM: on a chunk with choices).
            if chunk.get("usage"):
                usage = chunk["usage"]
            chunk["usage"] = None
            if not chunk["choices"]:
                continue  # a usage-only chunk, or Azure's prompt_filter_results preamble
            for choice in chunk["choices"]:
                seen.add(choice.get("index", 0))
                if choice.get("finish_reason"):
                    finished.add(choice.get("index", 0))
            yield chunk
        if self._stream_complete_without_done(seen, finished):
            if usage is not None:
                yield _usage_chunk(last, usage)
            return
        if usage is not None and seen and seen <= finished:
            # Every choice finished and the usage came: only [DONE] was lost, so the usage still counts
            # (the gateway takes an interrupted stream whose answer finished as whole).
            yield _usage_chunk(last, usage)
        raise ProviderError(
            f"the stream from {self.settings.name} ended before [DONE]",
            kind="stream_interrupted",
            provider=self.settings.name,
        )

    def _stream_complete_without_done(self, seen: set[int], finished: set[int]) -> bool:
        """Whether a body that ended without [DONE] still holds a whole answer; OpenAI always sends [DONE]."""
        return False

    def _normalize_chunk(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        chunk = dict(data)
        chunk.setdefault("id", "")
        chunk["object"] = "chat.completion.chunk"
        chunk.setdefault("created", 0)
        if not chunk.get("model"):
            chunk["model"] = model
        if not isinstance(chunk.get("choices"), list):
            chunk["choices"] = []
        return chunk

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        return error_from_body(status, decode_json_body(body), headers, self.settings.name)

    def embeddings_request(
        self, inputs: list[str], model: str, *, dimensions: int | None = None
    ) -> HttpRequest:
        body: dict[str, Any] = {"model": model, "input": inputs, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        return HttpRequest("POST", self._url("embeddings", model), self._headers(), body)

    def parse_embeddings(self, body: Any, model: str) -> dict[str, Any]:
        return normalize_embeddings(body, model, self.settings.name)


def normalize_embeddings(body: Any, model: str, provider: str) -> dict[str, Any]:
    """OpenAI's embeddings list response, from any body with data[].embedding (and maybe usage)."""
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(
        isinstance(item, dict) and isinstance(item.get("embedding"), list) for item in items
    ):
        raise ProviderError(f"{provider} returned a malformed embeddings response", provider=provider)
    usage = body.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": item.get("index", i), "embedding": item["embedding"]}
            for i, item in enumerate(items)
        ],
        "model": body.get("model") or model,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": int(usage.get("total_tokens") or prompt_tokens),
        },
    }
