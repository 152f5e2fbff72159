"""Cohere Chat v2 and Embed v2 adapter: https://docs.cohere.com/reference/chat."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from app.errors import ProviderError
from app.providers import _chat_shapes as shapes
from app.providers.base import HttpRequest, ProviderAdapter, UnsupportedFeature
from app.utils.sse import iter_sse_events

DEFAULT_BASE_URL = "https://api.cohere.com"

_FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}

_STATUS_KINDS = {
    498: "authentication",  # Cohere's "invalid token"
    499: "server",  # request cancelled upstream
    501: "invalid_request",  # the model does not implement the feature asked for
}


class CohereAdapter(ProviderAdapter):
    """Command models through Chat v2; embeddings through Embed v2."""

    type: ClassVar[str] = "cohere"
    supports_embeddings: ClassVar[bool] = True

    @property
    def _provider(self) -> str:
        return self.settings.name

    def _request(self, path: str, body: dict[str, Any]) -> HttpRequest:
        headers = {"content-type": "application/json", **self.settings.headers}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        base = (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        return HttpRequest("POST", f"{base}{path}", headers, body)

    def chat_request(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> HttpRequest:
        """Build POST /v2/chat."""
        if (chat.get("n") or 1) > 1:
            raise UnsupportedFeature("Cohere returns one choice per request (n > 1)", provider=self._provider)
        body: dict[str, Any] = {
            "model": model,
            "messages": [self._convert_message(m) for m in chat["messages"]],
        }
        for ours, theirs in (("temperature", "temperature"), ("seed", "seed")):
            if chat.get(ours) is not None:
                body[theirs] = chat[ours]
        # Cohere refuses values outside narrower ranges than OpenAI's (the SDK's chat docstring: p in
        # [0.01, 0.99], penalties in [0, 1]); top_p=1, a common client default, would be a 400. Clamp to the
        # nearest value Cohere takes.
        for ours, theirs, low, high in (
            ("top_p", "p", 0.01, 0.99),
            ("presence_penalty", "presence_penalty", 0.0, 1.0),
            ("frequency_penalty", "frequency_penalty", 0.0, 1.0),
        ):
            if chat.get(ours) is not None:
                body[theirs] = min(max(chat[ours], low), high)
        max_tokens = shapes.requested_max_tokens(chat)
        if max_tokens:
            body["max_tokens"] = max_tokens
        stop = shapes.stop_sequences(chat)
        if stop:
            body["stop_sequences"] = stop
        tools = list(chat.get("tools") or [])
        choice = chat.get("tool_choice")
        if isinstance(choice, Mapping):
            # v2 has no "this function" choice: offer only that tool and require a call.
            tools = [tool for tool in tools if tool["function"]["name"] == choice["function"]["name"]]
            choice = "required"
        if tools:
            body["tools"] = [self._convert_tool(tool) for tool in tools]
            if any(tool["function"].get("strict") for tool in tools):
                body["strict_tools"] = True
        if tools and choice == "required":
            body["tool_choice"] = "REQUIRED"
        elif tools and choice == "none":
            body["tool_choice"] = "NONE"
        response_format = self._convert_response_format(chat.get("response_format"))
        if response_format is not None:
            body["response_format"] = response_format
        # parallel_tool_calls and user have no v2 equivalent and are dropped.
        body["stream"] = stream
        return self._request("/v2/chat", body)

    def _convert_message(self, message: Mapping[str, Any]) -> dict[str, Any]:
        role = message["role"]
        content = message.get("content")
        if role in ("system", "developer"):
            return {"role": "system", "content": shapes.message_text(content)}
        if role == "tool":
            return {
                "role": "tool",
                "tool_call_id": message["tool_call_id"],
                "content": shapes.message_text(content),
            }
        if role == "assistant":
            converted: dict[str, Any] = {"role": "assistant"}
            text = shapes.message_text(content)
            if text:
                converted["content"] = text
            if message.get("tool_calls"):
                converted["tool_calls"] = [
                    shapes.tool_call(
                        call["id"], call["function"]["name"], call["function"].get("arguments") or "{}"
                    )
                    for call in message["tool_calls"]
                ]
            return converted
        return {"role": "user", "content": self._user_content(content)}

    def _user_content(self, content: Any) -> str | list[dict[str, Any]]:
        if isinstance(content, str):
            return content
        parts: list[dict[str, Any]] = []
        for part in content or []:
            if part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif part.get("type") == "image_url":
                # v2 takes OpenAI's image_url part as is: a data URL or an http(s) URL it fetches.
                image = {"url": part["image_url"]["url"]}
                if part["image_url"].get("detail"):
                    image["detail"] = part["image_url"]["detail"]
                parts.append({"type": "image_url", "image_url": image})
            else:
                raise UnsupportedFeature(
                    f"content part {part.get('type')!r} is not supported by Cohere", provider=self._provider
                )
        return parts

    @staticmethod
    def _convert_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
        function = tool["function"]
        converted: dict[str, Any] = {
            "name": function["name"],
            "parameters": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        return {"type": "function", "function": converted}

    @staticmethod
    def _convert_response_format(response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if not response_format or response_format.get("type") == "text":
            return None
        converted: dict[str, Any] = {"type": "json_object"}
        if response_format.get("type") == "json_schema":
            schema = response_format["json_schema"].get("schema")
            if schema:
                converted["json_schema"] = schema
        return converted

    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        """Turn a V2ChatResponse into a chat.completion."""
        finish = self._finish(body.get("finish_reason"), None)
        message = body.get("message") or {}
        texts = [item["text"] for item in message.get("content") or [] if item.get("type") == "text"]
        tool_calls = [
            shapes.tool_call(call["id"], call["function"]["name"], call["function"].get("arguments") or "{}")
            for call in message.get("tool_calls") or []
        ]
        content = "".join(texts) if texts or not tool_calls else None
        return shapes.completion(
            body.get("id") or shapes.new_id("chatcmpl-"),
            model,
            [{"index": 0, "message": shapes.assistant_message(content, tool_calls), "finish_reason": finish}],
            _usage(body.get("usage")),
        )

    def parse_stream(self, lines: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
        """Turn v2 stream events into chunks; message-end is the terminal event."""
        chunks = shapes.ChunkMaker(model)
        tool_indexes: dict[int, int] = {}  # Cohere's tool-call index -> OpenAI tool_calls index
        started = False
        for event in iter_sse_events(lines):
            data = shapes.load_json(event.data)
            if not isinstance(data, dict):
                continue  # malformed lines, and the SDK-documented "[DONE]", are dropped
            kind = data.get("type") or event.event
            delta = data.get("delta") or {}
            message = delta.get("message") or {}
            if kind == "message-start":
                chunks.id = data.get("id") or chunks.id
                started = True
                yield chunks.role()
                continue
            if not started:
                started = True
                yield chunks.role()
            if kind in ("content-start", "content-delta"):
                text = (message.get("content") or {}).get("text")
                if text:  # thinking content carries "thinking" instead and is not forwarded
                    yield chunks.content(text)
            elif kind == "tool-call-start":
                call = message.get("tool_calls") or {}
                tool_index = len(tool_indexes)
                tool_indexes[data.get("index", tool_index)] = tool_index
                function = call.get("function") or {}
                yield chunks.tool_call_start(
                    tool_index,
                    call.get("id") or shapes.new_id("call_"),
                    function.get("name") or "",
                    function.get("arguments") or "",
                )
            elif kind == "tool-call-delta" and data.get("index") in tool_indexes:
                arguments = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
                if arguments:
                    yield chunks.tool_call_arguments(tool_indexes[data["index"]], arguments)
            elif kind == "message-end":
                yield chunks.finish(self._finish(delta.get("finish_reason"), delta.get("error")))
                usage = _usage(delta.get("usage"))
                if usage is not None:
                    yield chunks.usage(usage)
                return
            # tool-plan-delta, citations and debug events have no OpenAI counterpart
        raise ProviderError(
            "Cohere stream ended before message-end", kind="stream_interrupted", provider=self._provider
        )

    def _finish(self, reason: str | None, error: str | None) -> str:
        if reason == "ERROR":
            raise ProviderError(
                error or "Cohere failed while generating", kind="server", provider=self._provider
            )
        if reason == "TIMEOUT":
            raise ProviderError(
                error or "Cohere timed out while generating", kind="timeout", provider=self._provider
            )
        return _FINISH_REASONS.get(reason or "COMPLETE", "stop")

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Classify {"message": ...} by status; the body carries no error type."""
        data = shapes.load_json(body)
        message = data.get("message") if isinstance(data, dict) else None
        kind = _STATUS_KINDS.get(status) or shapes.kind_for_status(status)
        if kind == "invalid_request" and message and "too many tokens" in message.lower():
            kind = "context_length"
        return ProviderError(
            message or f"Cohere answered HTTP {status}",
            kind=kind,
            provider=self._provider,
            upstream_status=status,
            retry_after=shapes.retry_after(headers),
        )

    def embeddings_request(
        self, inputs: list[str], model: str, *, dimensions: int | None = None
    ) -> HttpRequest:
        """Build POST /v2/embed for float embeddings of documents."""
        body: dict[str, Any] = {
            "model": model,
            "texts": inputs,
            "input_type": "search_document",
            "embedding_types": ["float"],
        }
        if dimensions:
            body["output_dimension"] = dimensions
        return self._request("/v2/embed", body)

    def parse_embeddings(self, body: Any, model: str) -> dict[str, Any]:
        """Turn embeddings.float into OpenAI's embedding list."""
        vectors = (body.get("embeddings") or {}).get("float") or []
        prompt = int(((body.get("meta") or {}).get("billed_units") or {}).get("input_tokens") or 0)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int] | None:
    if not usage:
        return None
    # billed_units is what the account pays for; tokens also counts Cohere's own prompt template.
    # Prefer what is billed, fall back to tokens when billing is absent.
    counts = usage.get("billed_units") or usage.get("tokens") or {}
    if not counts:
        return None
    return shapes.usage_dict(int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0))
