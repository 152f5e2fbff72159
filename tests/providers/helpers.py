"""Shared test helpers: send an adapter's HttpRequest over loopback, and check OpenAI shapes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from app.providers.base import HttpRequest


def send(request: HttpRequest) -> httpx.Response:
    """Send a non-streaming request as the gateway would."""
    return httpx.request(request.method, request.url, headers=request.headers, json=request.json, timeout=5)


def stream_lines(request: HttpRequest) -> tuple[int, list[str]]:
    """Send a streaming request and read its body line by line, as the gateway hands it to parse_stream."""
    with httpx.stream(
        request.method, request.url, headers=request.headers, json=request.json, timeout=5
    ) as response:
        return response.status_code, list(response.iter_lines())


def sse_lines(*payloads: str, event: str | None = None) -> list[str]:
    """Lines of an SSE body with one data line per payload."""
    lines: list[str] = []
    for payload in payloads:
        if event:
            lines.append(f"event: {event}")
        lines += [f"data: {payload}", ""]
    return lines


def valid_completion(body: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(body)


def valid_chunks(chunks: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    chunks = list(chunks)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    return chunks


def valid_embeddings(body: dict[str, Any]) -> CreateEmbeddingResponse:
    return CreateEmbeddingResponse.model_validate(body)


def text_of(chunks: Iterable[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def tool_arguments(chunks: Iterable[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """Tool calls put back together from stream deltas, by index."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] = delta.get("id") or call["id"]
                call["name"] = delta.get("function", {}).get("name") or call["name"]
                call["arguments"] += delta.get("function", {}).get("arguments") or ""
    return calls
