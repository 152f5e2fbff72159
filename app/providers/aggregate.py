"""Fold a stream of chat.completion.chunk dicts into one chat.completion, so non-streaming reuses streams."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


class _Choice:
    def __init__(self, index: int) -> None:
        self.index = index
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.arguments: dict[int, list[str]] = {}
        self.finish_reason: str | None = None
        self.logprobs: list[Any] | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            self.content.append(delta["content"])
        if delta.get("refusal"):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            # Fragments of one call share its index; id, type and name come once, arguments in pieces.
            position = call.get("index", 0)
            entry = self.tool_calls.setdefault(
                position, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                entry["id"] = call["id"]
            function = call.get("function") or {}
            if function.get("name"):
                entry["function"]["name"] = function["name"]
            self.arguments.setdefault(position, []).append(function.get("arguments") or "")
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        logprobs = (choice.get("logprobs") or {}).get("content")
        if logprobs:
            self.logprobs = (self.logprobs or []) + logprobs

    def build(self) -> dict[str, Any]:
        calls = []
        for position in sorted(self.tool_calls):
            call = self.tool_calls[position]
            call["function"]["arguments"] = "".join(self.arguments.get(position, []))
            calls.append(call)
        message: dict[str, Any] = {
            "role": "assistant",
            # OpenAI answers content null beside tool calls, "" for an empty reply.
            "content": "".join(self.content) if self.content or not calls else None,
            "refusal": "".join(self.refusal) if self.refusal else None,
        }
        if calls:
            message["tool_calls"] = calls
        return {
            "index": self.index,
            "message": message,
            "finish_reason": self.finish_reason or ("tool_calls" if calls else "stop"),
            "logprobs": {"content": self.logprobs, "refusal": None} if self.logprobs is not None else None,
        }


def collect_completion(chunks: Iterable[dict[str, Any]], model: str) -> dict[str, Any]:
    """One chat.completion from a whole stream of chunks (content joined per choice, tool calls by index)."""
    choices: dict[int, _Choice] = {}
    head: dict[str, Any] = {}
    usage: dict[str, Any] | None = None
    for chunk in chunks:
        if not head and chunk.get("id"):
            head = chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            choices.setdefault(index, _Choice(index)).add(choice)
    completion: dict[str, Any] = {
        "id": head.get("id") or "chatcmpl-stream",
        "object": "chat.completion",
        "created": head.get("created") or int(time.time()),
        "model": head.get("model") or model,
        "choices": [choices[index].build() for index in sorted(choices)],
        "usage": usage,
    }
    if head.get("system_fingerprint"):
        completion["system_fingerprint"] = head["system_fingerprint"]
    return completion
