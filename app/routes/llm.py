"""The OpenAI-compatible surface: /v1/chat/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Response, current_app, stream_with_context
from flask_openapi3 import APIBlueprint, Tag

from app.errors import ApiError, ProviderError
from app.middleware.auth_middleware import current_identity, login_required
from app.middleware.validation import validated
from app.routes.docs import BEARER
from app.schemas.llm import ChatCompletionRequest, EmbeddingsRequest
from app.services import usage_service
from app.services.gateway.chat import Gateway
from app.services.gateway.streaming import HEARTBEAT

logger = logging.getLogger(__name__)

bp = APIBlueprint("llm", __name__, url_prefix="/v1", abp_tags=[Tag(name="llm")])


def gateway() -> Gateway:
    return current_app.extensions["gateway"]


def allowed_models() -> tuple[str, ...] | None:
    return getattr(current_identity(), "allowed_models", None)


@bp.post("/chat/completions", security=BEARER)
@login_required
@validated
def chat_completions(body: ChatCompletionRequest):
    """Create a chat completion, or stream it as server-sent events."""
    chat = body.to_chat()
    meter = usage_service.begin(
        "stream" if body.stream else "chat",
        body.model,
        prompt_payload=[chat.get("messages"), chat.get("tools")],
        max_tokens=body.max_completion_tokens or body.max_tokens,
        choices=body.n or 1,
    )
    if not body.stream:
        try:
            completion, route = gateway().complete_routed(chat, allowed_models())
        except BaseException as error:
            meter.finish("error", error=error)
            raise
        meter.served_by(route)
        usage_service.finish_completion(meter, completion)
        return completion, 200, route.headers()
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    try:
        routed = gateway().stream(chat, allowed_models())
        events = usage_service.metered_stream(routed, meter)
    except BaseException as error:
        meter.finish("error", error=error)
        raise
    # Wait for the first chunk before answering: a provider that fails early gets a real HTTP error.
    first = next(_without_heartbeats(events), None)
    return Response(
        stream_with_context(_sse(first, events, include_usage)),
        mimetype="text/event-stream",
        # The route names the target that sent the first chunk; a mid-stream continuation comes later.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **routed.route.headers()},
    )


def _without_heartbeats(events: Iterator[Any]) -> Iterator[Any]:
    for event in events:
        if event is not HEARTBEAT:
            yield event
            return


def _sse(first: dict[str, Any] | None, events: Iterator[Any], include_usage: bool) -> Iterator[bytes]:
    try:
        if first is not None:
            yield from _encode(first, include_usage)
        for event in events:
            if event is HEARTBEAT:
                yield b": keep-alive\n\n"
                continue
            yield from _encode(event, include_usage)
    except ApiError as error:
        # Headers are gone: the failure travels as an error event, and no [DONE] follows, so no client
        # mistakes a truncated answer for a whole one.
        logger.warning("stream ended with an error: %s", error.code, extra={"error_code": error.code})
        yield _error_event(error)
        return
    finally:
        close = getattr(events, "close", None)
        if close:
            close()
    yield b"data: [DONE]\n\n"


def _encode(chunk: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    if not chunk.get("choices") and chunk.get("usage"):
        if include_usage:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        return
    if not include_usage:
        chunk = {key: value for key, value in chunk.items() if key != "usage"}
    yield b"data: " + orjson.dumps(chunk) + b"\n\n"


def _error_event(error: ApiError) -> bytes:
    body = {
        "error": {
            "message": error.message,
            "type": getattr(error, "openai_type", "api_error"),
            "param": None,
            "code": getattr(error, "kind", None) if isinstance(error, ProviderError) else error.code,
        }
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


@bp.post("/embeddings", security=BEARER)
@login_required
@validated
def embeddings(body: EmbeddingsRequest):
    """Embed a string or a list of strings."""
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    meter = usage_service.begin("embeddings", body.model, prompt_payload=inputs)
    try:
        result = gateway().embed(
            body.model,
            inputs,
            dimensions=body.dimensions,
            encoding_format=body.encoding_format,
            allowed_models=allowed_models(),
        )
    except BaseException as error:
        meter.finish("error", error=error)
        raise
    usage_service.finish_completion(meter, result)
    return result


@bp.get("/models", security=BEARER)
@login_required
def models():
    """The models this caller may use; owned_by names the provider."""
    allowed = allowed_models()
    catalog = gateway().catalog
    created = int(current_app.config.get("STARTED_AT", time.time()))
    data = [
        {
            "id": entry.name,
            "object": "model",
            "created": created,
            "owned_by": _owner(catalog, entry.targets[0].provider),
        }
        for entry in catalog.listed()
        if allowed is None or entry.name in allowed
    ]
    return {"object": "list", "data": data}


def _owner(catalog: Any, provider: str) -> str:
    if provider == "mock":
        return "mock (built-in test provider: deterministic replies, no model behind it)"
    return provider
