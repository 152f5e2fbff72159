"""Anthropic Messages API adapter: https://docs.anthropic.com/en/api/messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from app.errors import ProviderError
from app.providers import _chat_shapes as shapes
from app.providers.base import HttpRequest, ProviderAdapter, UnsupportedFeature
from app.utils.sse import iter_sse_events

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# Anthropic requires max_tokens, OpenAI callers often omit it; options["default_max_tokens"] overrides.
DEFAULT_MAX_TOKENS = 4096

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool paused the turn; the text so far is a whole answer
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ERROR_KINDS = {
    "invalid_request_error": "invalid_request",
    "request_too_large": "invalid_request",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "billing_error": "permission",  # our account cannot pay: not the caller's fault
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limit",
    "timeout_error": "timeout",
    "api_error": "server",
    "overloaded_error": "overloaded",
}


class AnthropicAdapter(ProviderAdapter):
    """Claude through the Messages API."""

    type: ClassVar[str] = "anthropic"

    @property
    def _provider(self) -> str:
        return self.settings.name

    def chat_request(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> HttpRequest:
        """Build POST /v1/messages."""
        if (chat.get("n") or 1) > 1:
            raise UnsupportedFeature(
                "Anthropic returns one choice per request (n > 1)", provider=self._provider
            )
        system, messages = self._convert_messages(chat.get("messages") or [])
        default_max = int(self.settings.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        max_tokens = shapes.requested_max_tokens(chat) or default_max
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
        if system:
            body["system"] = system
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
            if chat.get(ours) is not None:
                body[theirs] = chat[ours]
        stop = shapes.stop_sequences(chat)
        if stop:
            body["stop_sequences"] = stop
        if chat.get("user"):
            body["metadata"] = {"user_id": chat["user"]}
        # seed has no Anthropic equivalent; OpenAI documents it as best effort, so it is dropped.
        tools = chat.get("tools")
        if tools:
            body["tools"] = [self._convert_tool(tool) for tool in tools]
        tool_choice = self._convert_tool_choice(
            chat.get("tool_choice"), chat.get("parallel_tool_calls"), tools
        )
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        output_format = self._convert_response_format(chat.get("response_format"))
        if output_format is not None:
            body["output_config"] = {"format": output_format}
        if stream:
            body["stream"] = True
        headers = {
            "content-type": "application/json",
            "anthropic-version": API_VERSION,
            **self.settings.headers,
        }
        if self.settings.api_key:
            headers["x-api-key"] = self.settings.api_key
        base = (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        return HttpRequest("POST", f"{base}/v1/messages", headers, body)

    def _convert_messages(self, messages: Iterable[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
        """System blocks, and turns with same-role neighbours merged: Anthropic wants them alternating."""
        system: list[dict[str, Any]] = []
        turns: list[dict[str, Any]] = []
        for message in messages:
            role = message["role"]
            if role in ("system", "developer"):
                text = shapes.message_text(message.get("content"))
                if text:
                    system.append({"type": "text", "text": text})
                continue
            if role == "tool":
                blocks = [
                    {
                        "type": "tool_result",
                        "tool_use_id": message["tool_call_id"],
                        "content": shapes.message_text(message.get("content")),
                    }
                ]
                role = "user"
            elif role == "assistant":
                blocks = self._assistant_blocks(message)
            else:
                blocks = self._user_blocks(message.get("content"))
            if not blocks:
                continue  # an empty assistant turn would be refused, and says nothing
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"].extend(blocks)
            else:
                turns.append({"role": role, "content": blocks})
        return system, turns

    def _user_blocks(self, content: Any) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        blocks: list[dict[str, Any]] = []
        for part in content or []:
            if part.get("type") == "text":
                blocks.append({"type": "text", "text": part["text"]})
            elif part.get("type") == "image_url":
                blocks.append(self._image_block(part["image_url"]["url"]))
            else:
                raise UnsupportedFeature(
                    f"content part {part.get('type')!r} is not supported by Anthropic",
                    provider=self._provider,
                )
        return blocks

    def _image_block(self, url: str) -> dict[str, Any]:
        data_url = shapes.parse_data_url(url)
        if data_url is not None:
            media_type, data = data_url
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        if url.startswith(("https://", "http://")):
            # Anthropic fetches the URL itself, so no gateway egress happens here.
            return {"type": "image", "source": {"type": "url", "url": url}}
        raise UnsupportedFeature(
            "image_url must be an http(s) URL or a base64 data URL", provider=self._provider
        )

    def _assistant_blocks(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        text = shapes.message_text(message.get("content"))
        if text:  # Anthropic rejects empty text blocks
            blocks.append({"type": "text", "text": text})
        for call in message.get("tool_calls") or []:
            function = call["function"]
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": function["name"],
                    "input": shapes.parse_arguments(function.get("arguments"), self._provider),
                }
            )
        return blocks

    @staticmethod
    def _convert_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
        function = tool["function"]
        converted: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        if function.get("strict"):
            converted["strict"] = True
        return converted

    def _convert_tool_choice(self, choice: Any, parallel: bool | None, tools: Any) -> dict[str, Any] | None:
        if not tools or (choice is None and parallel is not False):
            return None  # Anthropic refuses a tool_choice sent without tools
        if choice == "none":
            return {"type": "none"}
        if choice == "required":
            converted: dict[str, Any] = {"type": "any"}
        elif isinstance(choice, Mapping):
            converted = {"type": "tool", "name": choice["function"]["name"]}
        else:  # "auto", or absent with parallel_tool_calls=false
            converted = {"type": "auto"}
        if parallel is False:
            converted["disable_parallel_tool_use"] = True
        return converted

    def _convert_response_format(self, response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """json_schema maps to the native structured outputs (output_config.format).

        json_object has no schema-free equivalent in the Messages API; faking it with a prompt would not
        guarantee JSON, so it is refused by name rather than silently ignored.
        """
        if not response_format or response_format.get("type") == "text":
            return None
        if response_format.get("type") == "json_schema":
            return {"type": "json_schema", "schema": response_format["json_schema"].get("schema") or {}}
        raise UnsupportedFeature(
            "Anthropic has no JSON mode without a schema; use response_format json_schema",
            provider=self._provider,
        )

    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        """Turn a Message into a chat.completion."""
        if body.get("type") == "error":
            raise self._error_from_object(body.get("error") or {}, None)
        text_parts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for block in body.get("content") or []:
            if block.get("type") == "text":
                text_parts.append(block["text"])
            elif block.get("type") == "tool_use":
                tool_calls.append(
                    shapes.tool_call(block["id"], block["name"], json.dumps(block.get("input") or {}))
                )
            # thinking and server-tool blocks have no place in a chat.completion message
        finish = _FINISH_REASONS.get(body.get("stop_reason") or "end_turn", "stop")
        content = "".join(text_parts) if text_parts or not tool_calls else None
        return shapes.completion(
            body.get("id") or shapes.new_id("chatcmpl-"),
            model,
            [{"index": 0, "message": shapes.assistant_message(content, tool_calls), "finish_reason": finish}],
            _usage(body.get("usage") or {}),
        )

    def parse_stream(self, lines: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
        """Turn Messages stream events into chunks; message_stop is the terminal event."""
        chunks = shapes.ChunkMaker(model)
        tool_indexes: dict[int, int] = {}  # content block index -> OpenAI tool_calls index
        usage: dict[str, Any] = {}
        stopped = False
        for event in iter_sse_events(lines):
            data = shapes.load_json(event.data) if event.data else None
            if not isinstance(data, dict):
                continue  # a malformed data line is dropped; the terminal check still guards the end
            kind = data.get("type") or event.event
            if kind == "message_start":
                message = data.get("message") or {}
                chunks.id = message.get("id") or chunks.id
                usage.update(message.get("usage") or {})
                yield chunks.role()
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "text" and block.get("text"):
                    yield chunks.content(block["text"])
                elif block.get("type") == "tool_use":
                    tool_index = len(tool_indexes)
                    tool_indexes[data.get("index", tool_index)] = tool_index
                    yield chunks.tool_call_start(tool_index, block["id"], block["name"])
            elif kind == "content_block_delta":
                delta = data.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield chunks.content(delta["text"])
                elif delta.get("partial_json") and data.get("index") in tool_indexes:  # input_json_delta
                    yield chunks.tool_call_arguments(tool_indexes[data["index"]], delta["partial_json"])
            elif kind == "message_delta":
                # message_delta usage counts are cumulative, so they replace the start's numbers
                usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
                stop_reason = (data.get("delta") or {}).get("stop_reason")
                if stop_reason:
                    stopped = True
                    yield chunks.finish(_FINISH_REASONS.get(stop_reason, "stop"))
            elif kind == "message_stop":
                if usage:
                    yield chunks.usage(_usage(usage))
                return
            elif kind == "error":
                raise self._error_from_object(data.get("error") or {}, None)
            # ping and unknown future events are ignored
        if stopped and usage:
            # message_delta carried the stop reason and the final counts: only message_stop was lost, so
            # the usage still counts (the gateway takes an interrupted stream whose answer finished as whole).
            yield chunks.usage(_usage(usage))
        raise ProviderError(
            "Anthropic stream ended before message_stop", kind="stream_interrupted", provider=self._provider
        )

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Classify {"type": "error", "error": {"type", "message"}}."""
        data = shapes.load_json(body)
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return shapes.status_only_error("Anthropic", self._provider, status, headers)
        return self._error_from_object(error, status, shapes.retry_after(headers))

    def _error_from_object(
        self, error: Mapping[str, Any], status: int | None, retry_after: float | None = None
    ) -> ProviderError:
        error_type = error.get("type") or ""
        message = error.get("message") or "Anthropic failed"
        kind = _ERROR_KINDS.get(error_type) or (shapes.kind_for_status(status) if status else "server")
        if kind == "invalid_request" and "prompt is too long" in message.lower():
            kind = "context_length"
        return ProviderError(
            message,
            kind=kind,
            provider=self._provider,
            upstream_status=status,
            retry_after=retry_after,
            provider_code=error_type or None,
        )


def _usage(usage: Mapping[str, Any]) -> dict[str, int]:
    # Cached input is still input the model read: Anthropic counts it apart from input_tokens,
    # OpenAI's prompt_tokens includes it.
    prompt = sum(
        int(usage.get(key) or 0)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return shapes.usage_dict(prompt, int(usage.get("output_tokens") or 0))
