"""Builders for the OpenAI answer shapes and small helpers the non-OpenAI adapters share."""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from app.errors import ProviderError
from app.providers.error_mapping import kind_for_status, retry_after_seconds

# One classification for every adapter: status -> kind, Retry-After (seconds, ms or HTTP date) -> seconds.
retry_after = retry_after_seconds


def new_id(prefix: str) -> str:
    """A fresh id such as chatcmpl-... or call_..., for providers that send none."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage_dict(prompt_tokens: int, completion_tokens: int, total_tokens: int | None = None) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens if total_tokens is None else total_tokens,
    }


def assistant_message(content: str | None, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(
    completion_id: str,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, int] | None,
    created: int | None = None,
) -> dict[str, Any]:
    """A chat.completion dict; `choices` are {"index", "message", "finish_reason"} dicts."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created if created is not None else now(),
        "model": model,
        "choices": [{"logprobs": None, **choice} for choice in choices],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class ChunkMaker:
    """Stamps chat.completion.chunk dicts of one stream with its id, model and creation time."""

    def __init__(self, model: str, completion_id: str | None = None) -> None:
        self.id = completion_id or new_id("chatcmpl-")
        self.model = model
        self.created = now()

    def _base(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def delta(
        self, delta: dict[str, Any], *, index: int = 0, finish_reason: str | None = None
    ) -> dict[str, Any]:
        return self._base(
            [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        )

    def role(self, index: int = 0) -> dict[str, Any]:
        return self.delta({"role": "assistant", "content": ""}, index=index)

    def content(self, text: str, index: int = 0) -> dict[str, Any]:
        return self.delta({"content": text}, index=index)

    def tool_call_start(
        self, tool_index: int, call_id: str, name: str, arguments: str = "", *, index: int = 0
    ) -> dict[str, Any]:
        call = {"index": tool_index, **tool_call(call_id, name, arguments)}
        return self.delta({"tool_calls": [call]}, index=index)

    def tool_call_arguments(self, tool_index: int, arguments: str, *, index: int = 0) -> dict[str, Any]:
        return self.delta(
            {"tool_calls": [{"index": tool_index, "function": {"arguments": arguments}}]}, index=index
        )

    def finish(self, finish_reason: str, index: int = 0) -> dict[str, Any]:
        return self.delta({}, index=index, finish_reason=finish_reason)

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._base([]), "usage": usage}


def message_text(content: Any) -> str:
    """The text of an OpenAI message content: a string, or the text parts of a list joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") in ("text", "refusal"))


def parse_data_url(url: str) -> tuple[str, str] | None:
    """Split data:<mime>;base64,<data> into (mime, data); None when `url` is not a base64 data URL."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    mime = header[: -len(";base64")] or "application/octet-stream"
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return mime, data


def parse_arguments(arguments: str | None, provider: str) -> dict[str, Any]:
    """Tool call arguments (a JSON string) as the object providers want."""
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise ProviderError(
            "tool call arguments are not valid JSON", kind="invalid_request", provider=provider
        ) from None
    if not isinstance(value, dict):
        raise ProviderError(
            "tool call arguments must be a JSON object", kind="invalid_request", provider=provider
        )
    return value


def load_json(body: bytes | str) -> Any:
    """Decoded JSON, or None when the body is not JSON (an HTML error page from a proxy, say)."""
    try:
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def status_only_error(label: str, provider: str, status: int, headers: Mapping[str, str]) -> ProviderError:
    """The error for a response whose body names none (a proxy's HTML page, say): classified by status."""
    return ProviderError(
        f"{label} answered HTTP {status}",
        kind=kind_for_status(status),
        provider=provider,
        upstream_status=status,
        retry_after=retry_after(headers),
    )


def requested_max_tokens(chat: Mapping[str, Any]) -> int | None:
    """The caller's completion budget: max_completion_tokens, OpenAI's newer name, wins over max_tokens."""
    return chat.get("max_completion_tokens") or chat.get("max_tokens")


def stop_sequences(chat: Mapping[str, Any]) -> list[str] | None:
    """`stop` as a list (OpenAI takes a string or a list), or None when the caller gave none."""
    stop = chat.get("stop")
    if not stop:
        return None
    return [stop] if isinstance(stop, str) else list(stop)
