"""A provider that answers locally and deterministically, for development, demos and tests."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from app.errors import ProviderError
from app.providers._chat_shapes import requested_max_tokens
from app.providers.base import HttpRequest, ProviderAdapter, UnsupportedFeature


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


def _words(text: str) -> int:
    return len(text.split())


def _tool_to_call(chat: Mapping[str, Any]) -> str | None:
    """The function the mock calls: the named one, else the first, unless tool_choice is "none"."""
    tools, choice = chat.get("tools") or [], chat.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return choice["function"]["name"]
    return tools[0]["function"]["name"]


class MockAdapter(ProviderAdapter):
    """Replies "Mock reply to: <last user text>", one chunk per word; token counts are whitespace words."""

    type = "mock"
    is_local = True

    def local_stream(self, chat: Mapping[str, Any], model: str) -> Iterator[dict[str, Any]]:
        messages = chat.get("messages") or []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        prompt = _text(last_user.get("content")) if last_user else ""
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:24]
        base = {
            "id": f"chatcmpl-mock-{digest}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        n = chat.get("n") or 1

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**base, "choices": [choice], "usage": None}

        tool = _tool_to_call(chat)
        limit = requested_max_tokens(chat)
        if tool is not None:
            completion_tokens = 1
            for index in range(n):
                call = {"index": 0, "id": f"call_mock_{index}", "type": "function"}
                yield chunk(
                    index,
                    {
                        "role": "assistant",
                        "tool_calls": [{**call, "function": {"name": tool, "arguments": ""}}],
                    },
                )
                yield chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})
                yield chunk(index, {}, "tool_calls")
        else:
            words = f"Mock reply to: {prompt}".split()
            finish = "stop"
            if limit is not None and len(words) > limit:
                words, finish = words[:limit], "length"
            completion_tokens = len(words)
            for index in range(n):
                yield chunk(index, {"role": "assistant", "content": ""})
                for position, word in enumerate(words):
                    yield chunk(index, {"content": word if position == 0 else " " + word})
                yield chunk(index, {}, finish)
        prompt_tokens = sum(_words(_text(m.get("content"))) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * n,
            "total_tokens": prompt_tokens + completion_tokens * n,
        }
        yield {**base, "choices": [], "usage": usage}

    # The mock never goes over HTTP; the gateway calls local_stream because is_local is True.
    def _no_http(self) -> ProviderError:
        return UnsupportedFeature("the mock provider answers locally", provider=self.settings.name)

    def chat_request(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> HttpRequest:
        raise self._no_http()

    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        raise self._no_http()

    def parse_stream(self, lines: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
        raise self._no_http()

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        return self._no_http()
