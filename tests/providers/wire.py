"""Send an adapter's HttpRequest with httpx and parse the real response, as the gateway will."""

from __future__ import annotations

from typing import Any

import httpx

from app.providers.base import ProviderAdapter
from tests.providers.helpers import send as _send


def chat(adapter: ProviderAdapter, body: dict[str, Any], model: str) -> dict[str, Any]:
    response = _send(adapter.chat_request(body, model, stream=False))
    if response.status_code >= 400:
        raise adapter.parse_error(response.status_code, response.content, response.headers)
    return adapter.parse_chat(response.json(), model)


def stream(adapter: ProviderAdapter, body: dict[str, Any], model: str) -> list[dict[str, Any]]:
    request = adapter.chat_request(body, model, stream=True)
    with httpx.stream(
        request.method, request.url, headers=request.headers, json=request.json, timeout=5
    ) as r:
        if r.status_code >= 400:
            r.read()
            raise adapter.parse_error(r.status_code, r.content, r.headers)
        return list(adapter.parse_stream(r.iter_lines(), model))


def embeddings(adapter: ProviderAdapter, inputs: list[str], model: str, dimensions: int | None = None) -> Any:
    response = _send(adapter.embeddings_request(inputs, model, dimensions=dimensions))
    if response.status_code >= 400:
        raise adapter.parse_error(response.status_code, response.content, response.headers)
    return adapter.parse_embeddings(response.json(), model)
