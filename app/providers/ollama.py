"""Ollama's native API: POST /api/chat with NDJSON streaming, POST /api/embed.

Wire reference: the ollama SDK, _types.py (ChatRequest, Message, Options, ChatResponse, EmbedRequest,
EmbedResponse) and _client.py (paths; a stream is one JSON object per line, the last with done: true).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from app.errors import ProviderError
from app.providers._chat_shapes import requested_max_tokens
from app.providers.aggregate import collect_completion
from app.providers.base import HttpRequest, ProviderAdapter, UnsupportedFeature
from app.providers.error_mapping import decode_json_body, kind_for_status, retry_after_seconds, short_message

logger = logging.getLogger(__name__)

# Our sampling fields and their Options names.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def _images(content: Any, provider: str) -> list[str]:
    """Ollama takes images as bare base64; only data: URLs carry the bytes without a fetch."""
    images = []
    for part in content if isinstance(content, list) else []:
        if part.get("type") != "image_url":
            continue
        url = part["image_url"]["url"]
        header, comma, data = url.partition(",")
        if not (url.startswith("data:") and comma and header.endswith(";base64")):
            raise UnsupportedFeature(f"{provider} takes images only as base64 data: URLs", provider=provider)
        images.append(data)
    return images


def to_ollama_messages(messages: Iterable[Mapping[str, Any]], provider: str) -> list[dict[str, Any]]:
    """OpenAI messages as Ollama's Message list (developer -> system, tool_call_id -> tool_name)."""
    names: dict[str, str] = {}  # tool_call_id -> function name, for the tool messages that answer them
    out = []
    for message in messages:
        role = "system" if message["role"] == "developer" else message["role"]
        converted: dict[str, Any] = {"role": role, "content": _text(message.get("content"))}
        images = _images(message.get("content"), provider)
        if images:
            converted["images"] = images
        calls = []
        for call in message.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
            try:
                arguments = json.loads(call["function"]["arguments"] or "{}")
            except ValueError:
                raise ProviderError(
                    "tool call arguments must be JSON", kind="invalid_request", provider=provider
                ) from None
            calls.append({"function": {"name": call["function"]["name"], "arguments": arguments}})
        if calls:
            converted["tool_calls"] = calls
        if role == "tool" and message.get("tool_call_id") in names:
            converted["tool_name"] = names[message["tool_call_id"]]
        out.append(converted)
    return out


def to_ollama_body(chat: Mapping[str, Any], model: str, *, stream: bool, provider: str) -> dict[str, Any]:
    """The /api/chat body for `chat`."""
    if (chat.get("n") or 1) > 1:
        raise UnsupportedFeature(f"{provider} answers one choice per request (n=1)", provider=provider)
    # stream is sent either way: Ollama streams unless told false.
    body: dict[str, Any] = {
        "model": model,
        "messages": to_ollama_messages(chat["messages"], provider),
        "stream": stream,
    }
    options = {name: chat[field] for field, name in _OPTIONS.items() if chat.get(field) is not None}
    max_tokens = requested_max_tokens(chat)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    if chat.get("stop") is not None:
        options["stop"] = [chat["stop"]] if isinstance(chat["stop"], str) else list(chat["stop"])
    if options:
        body["options"] = options
    response_format = chat.get("response_format") or {}
    if response_format.get("type") == "json_object":
        body["format"] = "json"
    elif response_format.get("type") == "json_schema":
        body["format"] = response_format["json_schema"].get("schema") or {"type": "object"}
    tool_choice = chat.get("tool_choice")
    if chat.get("tools") and tool_choice != "none":
        if tool_choice not in (None, "auto"):
            # Ollama has no tool_choice: it cannot be made to call a tool, so we refuse rather than pretend.
            raise UnsupportedFeature(f"{provider} cannot force a tool call (tool_choice)", provider=provider)
        body["tools"] = [
            {"type": "function", "function": {k: v for k, v in t["function"].items() if k != "strict"}}
            for t in chat["tools"]
        ]
    return body


class _ChunkBuilder:
    """Turns Ollama ChatResponse objects of one answer into OpenAI chunks."""

    def __init__(self, model: str) -> None:
        self.base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.role_sent = False
        self.tool_calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self.role_sent:
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self.base, "choices": [choice], "usage": None}

    def chunks(self, part: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        if part.get("model"):
            self.base["model"] = part["model"]
        message = part.get("message") or {}
        if message.get("content"):
            yield self._chunk({"content": message["content"]})
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            calls.append(
                {
                    "index": self.tool_calls,
                    # Ollama gives no call ids; OpenAI clients need one to answer the call.
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {
                        "name": function.get("name", ""),
                        "arguments": json.dumps(function.get("arguments") or {}),
                    },
                }
            )
            self.tool_calls += 1
        if calls:
            yield self._chunk({"tool_calls": calls})
        if part.get("done"):
            finish = (
                "length"
                if part.get("done_reason") == "length"
                else "tool_calls"
                if self.tool_calls
                else "stop"
            )
            yield self._chunk({}, finish)
            prompt, completion = int(part.get("prompt_eval_count") or 0), int(part.get("eval_count") or 0)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield {**self.base, "choices": [], "usage": usage}


class OllamaAdapter(ProviderAdapter):
    """A local or remote Ollama server; a configured key goes as a Bearer token (Ollama's cloud, proxies)."""

    type = "ollama"
    supports_embeddings = True

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        headers.update(self.settings.headers)
        return headers

    def _url(self, path: str) -> str:
        return f"{self.settings.base_url.rstrip('/')}/{path}"

    def chat_request(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> HttpRequest:
        body = to_ollama_body(chat, model, stream=stream, provider=self.settings.name)
        return HttpRequest("POST", self._url("api/chat"), self._headers(), body)

    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise self._error_in_body(body)
        # The non-streaming answer is one ChatResponse; fold it through the stream path.
        builder = _ChunkBuilder(model)
        return collect_completion(builder.chunks({**body, "done": True}), model)

    def parse_stream(self, lines: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
        builder = _ChunkBuilder(model)
        for line in lines:
            if not line.strip():
                continue
            try:
                part = orjson.loads(line)
            except ValueError:
                logger.warning("dropped a non-JSON stream line from %s", self.settings.name)
                continue
            if not isinstance(part, dict) or part.get("error"):
                raise self._error_in_body(part)
            yield from builder.chunks(part)
            if part.get("done"):
                return
        raise ProviderError(
            f"the stream from {self.settings.name} ended before done",
            kind="stream_interrupted",
            provider=self.settings.name,
        )

    def _error_in_body(self, body: Any) -> ProviderError:
        message = body.get("error") if isinstance(body, dict) else None
        return ProviderError(
            short_message(message, f"{self.settings.name} sent a malformed response"),
            kind="server",
            provider=self.settings.name,
        )

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        payload = decode_json_body(body)
        message = payload.get("error") if isinstance(payload, dict) else None
        return ProviderError(
            short_message(message, f"{self.settings.name} answered HTTP {status}"),
            kind=kind_for_status(status),
            provider=self.settings.name,
            upstream_status=status,
            retry_after=retry_after_seconds(headers),
        )

    def embeddings_request(
        self, inputs: list[str], model: str, *, dimensions: int | None = None
    ) -> HttpRequest:
        body: dict[str, Any] = {"model": model, "input": inputs}
        if dimensions is not None:
            body["dimensions"] = dimensions
        return HttpRequest("POST", self._url("api/embed"), self._headers(), body)

    def parse_embeddings(self, body: Any, model: str) -> dict[str, Any]:
        vectors = body.get("embeddings") if isinstance(body, dict) else None
        if not isinstance(vectors, list):
            raise self._error_in_body(body)
        tokens = int(body.get("prompt_eval_count") or 0)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": list(v)} for i, v in enumerate(vectors)
            ],
            "model": body.get("model") or model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
