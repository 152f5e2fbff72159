"""Mistral's chat API: OpenAI's shape with its own field names, roles and finish reasons.

Wire reference: the mistralai SDK, client/models/chatcompletionrequest.py, chatcompletionresponse.py,
completionchunk.py, deltamessage.py, toolcall.py, embeddingrequest.py. Streams are SSE ending in data: [DONE].
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from typing import Any

from app.errors import ProviderError
from app.providers._chat_shapes import requested_max_tokens
from app.providers.base import HttpRequest
from app.providers.error_mapping import decode_json_body, short_message
from app.providers.openai import OpenAIAdapter, error_from_body, normalize_completion

DEFAULT_BASE_URL = "https://api.mistral.ai/v1"

# Fields Mistral's ChatCompletionRequest takes under the same name and meaning as OpenAI's.
_SAME_FIELDS = (
    "temperature",
    "top_p",
    "stop",
    "n",
    "tools",
    "tool_choice",  # "auto" | "none" | "required" | {"type": "function", "function": {"name"}} all accepted
    "parallel_tool_calls",
    "response_format",  # text / json_object / json_schema {name, schema, strict}: the same keys
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
)
# The keys each Mistral message model declares; OpenAI's extras (name on user, refusal, audio) are dropped.
_MESSAGE_KEYS = {
    "system": ("role", "content"),
    "user": ("role", "content"),
    "assistant": ("role", "content", "tool_calls", "prefix"),
    "tool": ("role", "content", "tool_call_id", "name"),
}
_FINISH_REASONS = {"stop": "stop", "length": "length", "model_length": "length", "tool_calls": "tool_calls"}


# Mistral answers 400 "Tool call id was call_... but must be a-z, A-Z, 0-9, with a length of 9." (code 3280)
# for any other id, so ids made elsewhere (OpenAI's call_..., Anthropic's toolu_..., the gateway's own for
# Gemini and Ollama) cannot be replayed as they are. Mistral's own ids already fit and pass unchanged.
_TOOL_CALL_ID = re.compile(r"[A-Za-z0-9]{9}")
_ALPHANUMERIC = string.ascii_letters + string.digits


def to_mistral_tool_call_id(call_id: str) -> str:
    """`call_id` if Mistral accepts it, else 9 alphanumerics derived from it (the same for the call and its result)."""
    if _TOOL_CALL_ID.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode()).digest(), "big")
    chars = []
    for _ in range(9):
        number, digit = divmod(number, len(_ALPHANUMERIC))
        chars.append(_ALPHANUMERIC[digit])
    return "".join(chars)


def to_mistral_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """One OpenAI message as Mistral's; it has no developer role, whose meaning is the system role's."""
    role = "system" if message["role"] == "developer" else message["role"]
    out = {key: message[key] for key in _MESSAGE_KEYS[role] if message.get(key) is not None}
    out["role"] = role
    if out.get("tool_calls"):
        out["tool_calls"] = [
            {**call, "id": to_mistral_tool_call_id(call["id"])} for call in out["tool_calls"]
        ]
    if out.get("tool_call_id"):
        out["tool_call_id"] = to_mistral_tool_call_id(out["tool_call_id"])
    return out


def to_mistral_body(
    chat: Mapping[str, Any], model: str, *, stream: bool, safe_prompt: bool
) -> dict[str, Any]:
    """The Mistral request body for `chat`."""
    body: dict[str, Any] = {"model": model, "messages": [to_mistral_message(m) for m in chat["messages"]]}
    for name in _SAME_FIELDS:
        if chat.get(name) is not None:
            body[name] = chat[name]
    if chat.get("tools"):
        body["tools"] = [_with_parameters(tool) for tool in chat["tools"]]
    max_tokens = requested_max_tokens(chat)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if chat.get("seed") is not None:
        body["random_seed"] = chat["seed"]
    if safe_prompt:
        body["safe_prompt"] = True
    if stream:
        body["stream"] = True  # Mistral reports usage on its last chunk unasked, and has no stream_options
    return body


def _with_parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    # OpenAI lets a function omit its parameters; Mistral's Function model requires them.
    function = tool.get("function") or {}
    if "parameters" in function:
        return dict(tool)
    return {**tool, "function": {**function, "parameters": {"type": "object", "properties": {}}}}


def _text_of(content: Any) -> str | None:
    """Content as text: magistral models answer a list of chunks; "thinking" chunks have no OpenAI slot."""
    if content is None or isinstance(content, str):
        return content
    return "".join(
        part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
    )


def _tool_calls(calls: Any, *, with_index: bool) -> list[dict[str, Any]]:
    out = []
    for position, call in enumerate(calls or []):
        function = call.get("function") or {}
        arguments = function.get("arguments", "")
        entry: dict[str, Any] = {
            "id": call.get("id") or f"call_{position}",
            "type": "function",
            "function": {
                "name": function.get("name", ""),
                # FunctionCall.arguments is Dict | str on Mistral; OpenAI's is always a JSON string.
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        if with_index:
            entry["index"] = call.get("index", position)
        out.append(entry)
    return out


class MistralAdapter(OpenAIAdapter):
    """api.mistral.ai; Bearer key, /chat/completions and /embeddings as OpenAI, the body translated."""

    type = "mistral"

    def _url(self, path: str, model: str) -> str:
        return f"{(self.settings.base_url or DEFAULT_BASE_URL).rstrip('/')}/{path}"

    def _chat_body(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        safe_prompt = bool(self.settings.options.get("safe_prompt", False))
        return to_mistral_body(chat, model, stream=stream, safe_prompt=safe_prompt)

    def _finish_reason(self, reason: str | None) -> str | None:
        if reason is None:
            return None
        if reason == "error":
            raise ProviderError(
                f"{self.settings.name} stopped generating with an error", provider=self.settings.name
            )
        return _FINISH_REASONS.get(reason, "stop")

    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        completion = normalize_completion(body, model, self.settings.name)
        choices = []
        for choice in completion["choices"]:
            message = choice.get("message") or {}
            calls = _tool_calls(message.get("tool_calls"), with_index=False)
            out_message: dict[str, Any] = {
                "role": "assistant",
                "content": _text_of(message.get("content")),
                "refusal": None,
            }
            if calls:
                out_message["tool_calls"] = calls
            choices.append(
                {
                    "index": choice.get("index", 0),
                    "message": out_message,
                    "finish_reason": self._finish_reason(choice.get("finish_reason")) or "stop",
                    "logprobs": None,
                }
            )
        completion["choices"] = choices
        completion["usage"] = _usage(completion.get("usage"))
        return completion

    def _normalize_chunk(self, data: dict[str, Any], model: str) -> dict[str, Any]:
        chunk = super()._normalize_chunk(data, model)
        choices = []
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            out_delta: dict[str, Any] = {}
            if delta.get("role"):
                out_delta["role"] = delta["role"]
            if delta.get("content") is not None:
                out_delta["content"] = _text_of(delta["content"])
            if delta.get("tool_calls"):
                out_delta["tool_calls"] = _tool_calls(delta["tool_calls"], with_index=True)
            choices.append(
                {
                    "index": choice.get("index", 0),
                    "delta": out_delta,
                    "finish_reason": self._finish_reason(choice.get("finish_reason")),
                    "logprobs": None,
                }
            )
        chunk["choices"] = choices
        if chunk.get("usage"):
            chunk["usage"] = _usage(chunk["usage"])
        return chunk

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        payload = decode_json_body(body)
        # Mistral puts {object: "error", message, type, code} at the top level, and a 422's message may be
        # the validation detail object rather than text.
        if isinstance(payload, dict) and not isinstance(payload.get("message", ""), str):
            payload = {**payload, "message": short_message(json.dumps(payload["message"]), "invalid request")}
        return error_from_body(status, payload, headers, self.settings.name)

    def embeddings_request(
        self, inputs: list[str], model: str, *, dimensions: int | None = None
    ) -> HttpRequest:
        body: dict[str, Any] = {"model": model, "input": inputs}
        if dimensions is not None:
            body["output_dimension"] = dimensions
        return HttpRequest("POST", self._url("embeddings", model), self._headers(), body)


def _usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }
