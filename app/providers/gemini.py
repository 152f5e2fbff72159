"""Google Gemini API adapter (generativelanguage.googleapis.com, v1beta REST, camelCase JSON)."""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from app.errors import ProviderError
from app.providers import _chat_shapes as shapes
from app.providers.base import HttpRequest, ProviderAdapter, UnsupportedFeature
from app.utils.sse import iter_sse_events

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

# google.rpc status names (https://cloud.google.com/apis/design/errors#error_codes) to our kinds.
_ERROR_KINDS = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "UNAVAILABLE": "overloaded",
    "DEADLINE_EXCEEDED": "timeout",
    "INTERNAL": "server",
}

# Gemini 3 models reject a conversation whose functionCall parts lost the thoughtSignature they came with.
# OpenAI clients echo tool call ids verbatim, so the signature rides inside the id after this separator,
# re-encoded as unpadded URL-safe base64 so the id stays within [A-Za-z0-9_-] (what Anthropic accepts
# should a conversation move to another provider).
_SIGNATURE_SEP = "__thought__"


def _pack_signature(signature: str) -> str:
    # Protobuf JSON writes bytes in standard base64 but also accepts the URL-safe alphabet; take either.
    standard = signature.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    except (binascii.Error, ValueError):
        return ""  # not base64: dropping it costs a possible 400 later, never a broken id now


def _unpack_signature(packed: str) -> str:
    try:
        return base64.b64encode(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))).decode()
    except (binascii.Error, ValueError):
        return ""


class GeminiAdapter(ProviderAdapter):
    """Gemini through generateContent / streamGenerateContent."""

    type: ClassVar[str] = "gemini"
    supports_embeddings: ClassVar[bool] = True

    @property
    def _provider(self) -> str:
        return self.settings.name

    def _url(self, model: str, method: str) -> str:
        base = (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        return f"{base}/v1beta/models/{quote(model.removeprefix('models/'), safe='-._')}:{method}"

    def _headers(self) -> dict[str, str]:
        # The key travels in a header, never in the URL, so it cannot end up in access logs.
        headers = {"content-type": "application/json", **self.settings.headers}
        if self.settings.api_key:
            headers["x-goog-api-key"] = self.settings.api_key
        return headers

    def chat_request(self, chat: Mapping[str, Any], model: str, *, stream: bool) -> HttpRequest:
        """Build POST models/{model}:generateContent, or :streamGenerateContent?alt=sse."""
        system, contents = self._convert_messages(chat.get("messages") or [])
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        config = self._generation_config(chat)
        if config:
            body["generationConfig"] = config
        tools = chat.get("tools")
        if tools:
            body["tools"] = [{"functionDeclarations": [self._convert_tool(tool) for tool in tools]}]
        tool_config = self._convert_tool_choice(chat.get("tool_choice"))
        if tools and tool_config is not None:
            body["toolConfig"] = {"functionCallingConfig": tool_config}
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return HttpRequest("POST", self._url(model, method), self._headers(), body)

    def _generation_config(self, chat: Mapping[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for ours, theirs in (
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("seed", "seed"),
            ("presence_penalty", "presencePenalty"),
            ("frequency_penalty", "frequencyPenalty"),
        ):
            if chat.get(ours) is not None:
                config[theirs] = chat[ours]
        max_tokens = shapes.requested_max_tokens(chat)
        if max_tokens:
            config["maxOutputTokens"] = max_tokens
        stop = shapes.stop_sequences(chat)
        if stop:
            config["stopSequences"] = stop
        if (chat.get("n") or 1) > 1:
            config["candidateCount"] = chat["n"]
        response_format = chat.get("response_format") or {}
        if response_format.get("type") in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        if response_format.get("type") == "json_schema":
            # responseJsonSchema takes standard JSON Schema; responseSchema only an OpenAPI subset.
            schema = response_format["json_schema"].get("schema")
            if schema:
                config["responseJsonSchema"] = schema
        return config

    def _convert_messages(self, messages: Iterable[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
        """System parts, and contents with consecutive same-role turns merged."""
        system: list[dict[str, Any]] = []
        contents: list[dict[str, Any]] = []
        call_names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse
        for message in messages:
            role = message["role"]
            if role in ("system", "developer"):
                text = shapes.message_text(message.get("content"))
                if text:
                    system.append({"text": text})
                continue
            if role == "assistant":
                parts = self._model_parts(message, call_names)
                gemini_role = "model"
            elif role == "tool":
                parts = [self._function_response(message, call_names)]
                gemini_role = "user"
            else:
                parts = self._user_parts(message.get("content"))
                gemini_role = "user"
            if not parts:
                continue
            if contents and contents[-1]["role"] == gemini_role:
                contents[-1]["parts"].extend(parts)
            else:
                contents.append({"role": gemini_role, "parts": parts})
        return system, contents

    def _user_parts(self, content: Any) -> list[dict[str, Any]]:
        if isinstance(content, str):
            return [{"text": content}]
        parts: list[dict[str, Any]] = []
        for part in content or []:
            if part.get("type") == "text":
                parts.append({"text": part["text"]})
            elif part.get("type") == "image_url":
                parts.append(self._image_part(part["image_url"]["url"]))
            else:
                raise UnsupportedFeature(
                    f"content part {part.get('type')!r} is not supported by Gemini", provider=self._provider
                )
        return parts

    def _image_part(self, url: str) -> dict[str, Any]:
        data_url = shapes.parse_data_url(url)
        if data_url is not None:
            return {"inlineData": {"mimeType": data_url[0], "data": data_url[1]}}
        if url.startswith(("https://", "http://")):
            # Gemini fetches a public URL given as fileData; it wants a MIME type, guessed from the path.
            file_data: dict[str, Any] = {"fileUri": url}
            mime = mimetypes.guess_type(urlsplit(url).path)[0]
            if mime:
                file_data = {"mimeType": mime, **file_data}
            return {"fileData": file_data}
        raise UnsupportedFeature(
            "image_url must be an http(s) URL or a base64 data URL", provider=self._provider
        )

    def _model_parts(self, message: Mapping[str, Any], call_names: dict[str, str]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        text = shapes.message_text(message.get("content"))
        if text:
            parts.append({"text": text})
        for call in message.get("tool_calls") or []:
            function = call["function"]
            call_names[call["id"]] = function["name"]
            part: dict[str, Any] = {
                "functionCall": {
                    "name": function["name"],
                    "args": shapes.parse_arguments(function.get("arguments"), self._provider),
                }
            }
            _, sep, packed = call["id"].partition(_SIGNATURE_SEP)
            signature = _unpack_signature(packed) if sep else ""
            if signature:
                part["thoughtSignature"] = signature
            parts.append(part)
        return parts

    def _function_response(self, message: Mapping[str, Any], call_names: dict[str, str]) -> dict[str, Any]:
        call_id = message["tool_call_id"]
        name = call_names.get(call_id)
        if name is None:
            raise ProviderError(
                f"tool message {call_id!r} answers no earlier assistant tool call",
                kind="invalid_request",
                provider=self._provider,
            )
        text = shapes.message_text(message.get("content"))
        # Gemini wants an object; a JSON object result is passed as is, anything else under "output",
        # the key its docs name for function output.
        value = shapes.load_json(text) if text else None
        response = value if isinstance(value, dict) else {"output": text}
        return {"functionResponse": {"name": name, "response": response}}

    @staticmethod
    def _convert_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
        function = tool["function"]
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            # parametersJsonSchema accepts plain JSON Schema (additionalProperties, $ref ...),
            # which the OpenAPI-subset `parameters` field rejects.
            declaration["parametersJsonSchema"] = function["parameters"]
        return declaration

    @staticmethod
    def _convert_tool_choice(choice: Any) -> dict[str, Any] | None:
        if choice is None:
            return None
        if choice == "none":
            return {"mode": "NONE"}
        if choice == "required":
            return {"mode": "ANY"}
        if isinstance(choice, Mapping):
            return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
        return {"mode": "AUTO"}

    def parse_chat(self, body: Any, model: str) -> dict[str, Any]:
        """Turn a GenerateContentResponse into a chat.completion."""
        self._raise_for_block(body)
        choices = []
        for position, candidate in enumerate(body.get("candidates") or []):
            index = candidate.get("index", position)
            texts: list[str] = []
            tool_calls: list[dict[str, Any]] = []
            for part in (candidate.get("content") or {}).get("parts") or []:
                if "functionCall" in part:
                    tool_calls.append(self._tool_call(part))
                elif "text" in part and not part.get("thought"):
                    texts.append(part["text"])
            finish = self._finish(candidate.get("finishReason"), bool(tool_calls)) or "stop"
            content = "".join(texts) if texts or not tool_calls else None
            message = shapes.assistant_message(content, tool_calls)
            choices.append({"index": index, "message": message, "finish_reason": finish})
        if not choices:
            raise ProviderError("Gemini returned no candidates", kind="server", provider=self._provider)
        return shapes.completion(
            body.get("responseId") or shapes.new_id("chatcmpl-"),
            model,
            choices,
            _usage(body["usageMetadata"]) if body.get("usageMetadata") else None,
        )

    def parse_stream(self, lines: Iterable[str], model: str) -> Iterator[dict[str, Any]]:
        """Each SSE data line is a whole GenerateContentResponse; a finishReason marks the end."""
        chunks = shapes.ChunkMaker(model)
        started: set[int] = set()
        finished: set[int] = set()
        tool_counts: dict[int, int] = {}  # candidate index -> tool calls yielded so far
        usage: dict[str, Any] | None = None
        for event in iter_sse_events(lines):
            data = shapes.load_json(event.data)
            if isinstance(data, list) and len(data) == 1:
                data = data[0]
            if not isinstance(data, dict):
                continue  # a malformed data line is dropped; the finishReason check still guards the end
            if isinstance(data.get("error"), dict):
                raise self._error_from_object(data["error"], None)
            self._raise_for_block(data)
            if data.get("responseId") and not started:
                chunks.id = data["responseId"]
            for position, candidate in enumerate(data.get("candidates") or []):
                index = candidate.get("index", position)
                if index not in started:
                    started.add(index)
                    yield chunks.role(index)
                for part in (candidate.get("content") or {}).get("parts") or []:
                    if "functionCall" in part:
                        call = self._tool_call(part)
                        tool_index = tool_counts.get(index, 0)
                        tool_counts[index] = tool_index + 1
                        function = call["function"]
                        yield chunks.tool_call_start(
                            tool_index, call["id"], function["name"], function["arguments"], index=index
                        )
                    elif part.get("text") and not part.get("thought"):
                        yield chunks.content(part["text"], index)
                finish = self._finish(candidate.get("finishReason"), index in tool_counts)
                if finish and index not in finished:
                    finished.add(index)
                    yield chunks.finish(finish, index)
            if data.get("usageMetadata"):
                usage = data["usageMetadata"]
        if not finished or finished != started:
            raise ProviderError(
                "Gemini stream ended before a finishReason",
                kind="stream_interrupted",
                provider=self._provider,
            )
        if usage:
            yield chunks.usage(_usage(usage))

    def _tool_call(self, part: Mapping[str, Any]) -> dict[str, Any]:
        call = part["functionCall"]
        call_id = call.get("id") or shapes.new_id("call_")
        packed = _pack_signature(part["thoughtSignature"]) if part.get("thoughtSignature") else ""
        if packed:
            call_id = f"{call_id}{_SIGNATURE_SEP}{packed}"
        return shapes.tool_call(call_id, call.get("name") or "", json.dumps(call.get("args") or {}))

    @staticmethod
    def _finish(reason: str | None, has_tool_calls: bool) -> str | None:
        if not reason or reason == "FINISH_REASON_UNSPECIFIED":
            return None
        # Gemini says STOP after function calls; OpenAI clients look for tool_calls to run them.
        if has_tool_calls and reason == "STOP":
            return "tool_calls"
        return _FINISH_REASONS.get(reason, "stop")

    def _raise_for_block(self, body: Mapping[str, Any]) -> None:
        feedback = body.get("promptFeedback") or {}
        if feedback.get("blockReason") and not body.get("candidates"):
            reason = feedback["blockReason"]
            raise ProviderError(
                feedback.get("blockReasonMessage") or f"Gemini blocked the prompt ({reason})",
                kind="content_policy",
                provider=self._provider,
                provider_code=reason,
            )

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Classify {"error": {"code", "message", "status"}} (sometimes wrapped in a one-item list)."""
        data = shapes.load_json(body)
        if isinstance(data, list) and data:
            data = data[0]
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return shapes.status_only_error("Gemini", self._provider, status, headers)
        return self._error_from_object(error, status, shapes.retry_after(headers))

    def _error_from_object(
        self, error: Mapping[str, Any], status: int | None, retry_after: float | None = None
    ) -> ProviderError:
        code = error.get("status") or ""
        message = error.get("message") or "Gemini failed"
        status = status or (error.get("code") if isinstance(error.get("code"), int) else None)
        kind = _ERROR_KINDS.get(code) or (shapes.kind_for_status(status) if status else "server")
        lowered = message.lower()
        # Gemini reports a bad or expired key as 400 INVALID_ARGUMENT ("API key not valid..." or "API key
        # expired..."), both with a google.rpc.ErrorInfo detail whose reason is API_KEY_INVALID.
        reasons = {
            detail.get("reason") for detail in error.get("details") or [] if isinstance(detail, Mapping)
        }
        if kind == "invalid_request" and ("API_KEY_INVALID" in reasons or "api key not valid" in lowered):
            kind = "authentication"
        elif kind == "invalid_request" and ("token count" in lowered or "too long" in lowered):
            kind = "context_length"
        return ProviderError(
            message,
            kind=kind,
            provider=self._provider,
            upstream_status=status,
            retry_after=retry_after,
            provider_code=code or None,
        )

    def embeddings_request(
        self, inputs: list[str], model: str, *, dimensions: int | None = None
    ) -> HttpRequest:
        """Build POST models/{model}:batchEmbedContents, one request per input."""
        name = f"models/{model.removeprefix('models/')}"
        requests = []
        for text in inputs:
            request: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if dimensions:
                request["outputDimensionality"] = dimensions
            requests.append(request)
        return HttpRequest(
            "POST", self._url(model, "batchEmbedContents"), self._headers(), {"requests": requests}
        )

    def parse_embeddings(self, body: Any, model: str) -> dict[str, Any]:
        """Turn {"embeddings": [{"values"}]} into OpenAI's embedding list."""
        data = [
            {"object": "embedding", "index": i, "embedding": item.get("values") or []}
            for i, item in enumerate(body.get("embeddings") or [])
        ]
        # batchEmbedContents may report no usage; zero then, rather than a guess.
        prompt = int((body.get("usageMetadata") or {}).get("promptTokenCount") or 0)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }


def _usage(metadata: Mapping[str, Any]) -> dict[str, int]:
    # Tool-use prompt tokens are input too; thoughts are output tokens billed as such.
    prompt = int(metadata.get("promptTokenCount") or 0) + int(metadata.get("toolUsePromptTokenCount") or 0)
    completion = int(metadata.get("candidatesTokenCount") or 0) + int(metadata.get("thoughtsTokenCount") or 0)
    return shapes.usage_dict(prompt, completion, metadata.get("totalTokenCount") or prompt + completion)
