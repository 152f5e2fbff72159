"""Servers that imitate OpenAI's chat completions (vLLM, llama.cpp, LM Studio, ...): only their quirks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.providers.openai import OpenAIAdapter


class OpenAICompatibleAdapter(OpenAIAdapter):
    type = "openai_compatible"

    def _auth_headers(self) -> dict[str, str]:
        # Local servers usually run without a key; send one only when configured.
        return {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}

    def _chat_body(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        body = super()._chat_body(chat, model, stream=stream)
        # The "developer" role and max_completion_tokens are newer than most imitations: many chat
        # templates reject an unknown role, older servers ignore the unknown limit. Old names, same meaning.
        body["messages"] = [
            {**m, "role": "system"} if m.get("role") == "developer" else m for m in body["messages"]
        ]
        if "max_completion_tokens" in body:
            body["max_tokens"] = body.pop("max_completion_tokens")
        return body

    def _stream_complete_without_done(self, seen: set[int], finished: set[int]) -> bool:
        # llama.cpp's server sent no [DONE] until ggml-org/llama.cpp#9459 (Sept 2024) and forks such as
        # ik_llama.cpp still omit it (ikawrakow/ik_llama.cpp#467); there the finish_reason chunk is the end.
        # A body cut before every choice has finished is still an interrupted stream.
        return bool(seen) and seen <= finished
