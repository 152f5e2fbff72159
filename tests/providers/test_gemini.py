"""Gemini adapter: request building, answers, streams, errors and embeddings."""

from __future__ import annotations

import base64
import json
import re

import pytest
from google.genai import types as g

from app.errors import ProviderError
from app.providers.base import ProviderSettings, UnsupportedFeature
from app.providers.gemini import GeminiAdapter
from tests.providers.helpers import (
    send,
    sse_lines,
    stream_lines,
    text_of,
    tool_arguments,
    valid_chunks,
    valid_completion,
    valid_embeddings,
)
from tests.upstreams.gemini import gemini_error, gemini_response, gemini_stream_bodies, gemini_upstream
from tests.upstreams.server import Upstream

PNG = "iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def adapter(base_url: str = "https://generativelanguage.googleapis.com") -> GeminiAdapter:
    return GeminiAdapter(ProviderSettings(name="gemini", base_url=base_url, api_key="AIza-test"))


def body_of(chat: dict) -> dict:
    body = adapter().chat_request(chat, "gemini-test", stream=False).json
    # The SDK's models forbid unknown fields and accept the REST camelCase names: a misspelt key fails here.
    for content in body["contents"]:
        g.Content.model_validate(content)
    if "systemInstruction" in body:
        g.Content.model_validate(body["systemInstruction"])
    if "generationConfig" in body:
        g.GenerationConfig.model_validate(body["generationConfig"])
    for tool in body.get("tools", []):
        g.Tool.model_validate(tool)
    if "toolConfig" in body:
        g.ToolConfig.model_validate(body["toolConfig"])
    return body


def lines_of(*bodies: dict) -> list[str]:
    return sse_lines(*(json.dumps(body) for body in bodies))


def test_request_url_headers_and_body() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.3,
        "top_p": 0.8,
        "max_tokens": 100,
        "stop": ["END", "STOP"],
        "seed": 4,
        "n": 2,
    }
    request = adapter().chat_request(chat, "gemini-2.5-flash", stream=False)
    assert (
        request.url
        == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert request.headers == {"content-type": "application/json", "x-goog-api-key": "AIza-test"}
    assert "AIza-test" not in request.url
    assert request.json == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.8,
            "seed": 4,
            "maxOutputTokens": 100,
            "stopSequences": ["END", "STOP"],
            "candidateCount": 2,
        },
    }
    body_of(chat)


def test_stream_url_asks_for_sse() -> None:
    request = adapter().chat_request({"messages": []}, "models/gemini-test", stream=True)
    assert request.url.endswith("/v1beta/models/gemini-test:streamGenerateContent?alt=sse")


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tools_and_tool_choice(tool_choice: object, expected: dict) -> None:
    body = body_of(
        {"messages": [{"role": "user", "content": "?"}], "tools": [WEATHER_TOOL], "tool_choice": tool_choice}
    )
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                }
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_tool_round_trip_finds_names_and_carries_thought_signatures() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1__thought__c2lnAA",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1__thought__c2lnAA", "content": '{"sky": "clear"}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "Rain"},
        ]
    }
    assert body_of(chat)["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": "c2lnAA==",
                },
                {"functionCall": {"name": "get_weather", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "Rain"}}},
            ],
        },
    ]


def test_tool_message_without_its_call_is_refused() -> None:
    with pytest.raises(ProviderError) as caught:
        body_of({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]})
    assert caught.value.kind == "invalid_request"


def test_images_inline_and_by_url() -> None:
    chat = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg?size=2"}},
                ],
            }
        ]
    }
    assert body_of(chat)["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg?size=2"}},
    ]
    with pytest.raises(UnsupportedFeature):
        body_of(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///x"}}]}
                ]
            }
        )


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    json_schema = body_of(
        {
            "messages": [],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        }
    )
    assert json_schema["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    json_object = body_of({"messages": [], "response_format": {"type": "json_object"}})
    assert json_object["generationConfig"] == {"responseMimeType": "application/json"}


def test_parse_chat_text_and_usage() -> None:
    result = adapter().parse_chat(gemini_response([g.Part(text="Bonjour")]), "gemini-test")
    completion = valid_completion(result)
    assert completion.id == "resp-1"
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "stop"
    assert result["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_parse_chat_function_call_keeps_signature_in_id() -> None:
    part = g.Part(
        function_call=g.FunctionCall(name="get_weather", args={"city": "Oslo"}), thought_signature=b"sig"
    )
    completion = valid_completion(adapter().parse_chat(gemini_response([part]), "m"))
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.content is None
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert call.id.endswith("__thought__c2ln")  # base64 of b"sig", sent back on the next turn
    assert re.fullmatch(r"[A-Za-z0-9_-]+", call.id)  # portable: Anthropic's tool_use id pattern


def test_thought_parts_are_not_answer_text() -> None:
    parts = [g.Part(text="thinking...", thought=True), g.Part(text="Answer")]
    assert adapter().parse_chat(gemini_response(parts), "m")["choices"][0]["message"]["content"] == "Answer"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        (g.FinishReason.STOP, "stop"),
        (g.FinishReason.MAX_TOKENS, "length"),
        (g.FinishReason.SAFETY, "content_filter"),
        (g.FinishReason.RECITATION, "content_filter"),
        (g.FinishReason.BLOCKLIST, "content_filter"),
        (g.FinishReason.PROHIBITED_CONTENT, "content_filter"),
        (g.FinishReason.SPII, "content_filter"),
    ],
)
def test_finish_reasons(reason: g.FinishReason, finish: str) -> None:
    body = gemini_response([g.Part(text="x")], finish_reason=reason)
    assert adapter().parse_chat(body, "m")["choices"][0]["finish_reason"] == finish


def test_blocked_prompt_is_a_content_policy_error() -> None:
    body = g.GenerateContentResponse(
        prompt_feedback=g.GenerateContentResponsePromptFeedback(block_reason=g.BlockedReason.SAFETY)
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    with pytest.raises(ProviderError) as caught:
        adapter().parse_chat(body, "m")
    assert caught.value.kind == "content_policy" and caught.value.provider_code == "SAFETY"
    with pytest.raises(ProviderError) as caught:
        list(adapter().parse_stream(lines_of(body), "m"))
    assert caught.value.kind == "content_policy"


def test_stream_text_finish_and_usage() -> None:
    chunks = valid_chunks(adapter().parse_stream(lines_of(*gemini_stream_bodies("Hello there")), "m"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text_of(chunks) == "Hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_stream_function_call() -> None:
    part = g.Part(function_call=g.FunctionCall(name="get_weather", args={"city": "Oslo"}))
    chunks = valid_chunks(adapter().parse_stream(lines_of(gemini_response([part])), "m"))
    calls = tool_arguments(chunks)
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert calls[0]["id"].startswith("call_")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_without_finish_reason_is_interrupted() -> None:
    with pytest.raises(ProviderError) as caught:
        list(adapter().parse_stream(lines_of(gemini_stream_bodies()[0]), "m"))
    assert caught.value.kind == "stream_interrupted"


def test_stream_error_payload_raises() -> None:
    first, _ = gemini_stream_bodies()
    lines = lines_of(first, gemini_error(503, "UNAVAILABLE", "The model is overloaded."))
    with pytest.raises(ProviderError) as caught:
        list(adapter().parse_stream(lines, "m"))
    assert caught.value.kind == "overloaded"


def test_stream_malformed_line_is_dropped() -> None:
    first, last = gemini_stream_bodies("Hello there")
    lines = lines_of(first) + sse_lines("{broken") + lines_of(last)
    assert text_of(valid_chunks(adapter().parse_stream(lines, "m"))) == "Hello there"


@pytest.mark.parametrize(
    ("status", "rpc_status", "message", "kind"),
    [
        (400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "invalid_request"),
        (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "authentication"),
        (
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            "context_length",
        ),
        (403, "PERMISSION_DENIED", "denied", "permission"),
        (404, "NOT_FOUND", "models/x is not found", "not_found"),
        (429, "RESOURCE_EXHAUSTED", "quota", "rate_limit"),
        (500, "INTERNAL", "internal", "server"),
        (503, "UNAVAILABLE", "overloaded", "overloaded"),
        (504, "DEADLINE_EXCEEDED", "deadline", "timeout"),
    ],
)
def test_parse_error(status: int, rpc_status: str, message: str, kind: str) -> None:
    error = adapter().parse_error(status, json.dumps(gemini_error(status, rpc_status, message)).encode(), {})
    assert (error.kind, error.upstream_status, error.message, error.provider_code) == (
        kind,
        status,
        message,
        rpc_status,
    )


def test_expired_key_is_an_authentication_error() -> None:
    # What generativelanguage.googleapis.com answers for an expired key: 400 INVALID_ARGUMENT, told apart
    # from a bad request only by the ErrorInfo reason (google.rpc error details).
    body = gemini_error(400, "INVALID_ARGUMENT", "API key expired. Please renew the API key.")
    body["error"]["details"] = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": "en-US",
            "message": "API key expired. Please renew the API key.",
        },
    ]
    error = adapter().parse_error(400, json.dumps(body).encode(), {})
    assert (error.kind, error.upstream_status) == ("authentication", 400)


def test_parse_error_in_a_list_and_without_json() -> None:
    wrapped = json.dumps([gemini_error(429, "RESOURCE_EXHAUSTED", "quota")]).encode()
    assert adapter().parse_error(429, wrapped, {}).kind == "rate_limit"
    assert adapter().parse_error(503, b"Service Unavailable", {}).kind == "overloaded"


def test_embeddings_request_and_parse() -> None:
    request = adapter().embeddings_request(["a", "b"], "gemini-embedding-001", dimensions=256)
    assert request.url.endswith("/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert request.headers["x-goog-api-key"] == "AIza-test"
    assert request.json == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "a"}]},
                "outputDimensionality": 256,
            },
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "b"}]},
                "outputDimensionality": 256,
            },
        ]
    }
    body = g.EmbedContentResponse(
        embeddings=[g.ContentEmbedding(values=[0.1, 0.2]), g.ContentEmbedding(values=[0.3, 0.4])]
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    parsed = valid_embeddings(adapter().parse_embeddings(body, "gemini-embedding-001"))
    assert [item.embedding for item in parsed.data] == [[0.1, 0.2], [0.3, 0.4]]
    assert [item.index for item in parsed.data] == [0, 1]


def test_over_loopback_chat_stream_embeddings_and_errors() -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}]}
    with Upstream(gemini_upstream(text="From the wire")) as upstream:
        client = adapter(upstream.url)
        completion = valid_completion(
            client.parse_chat(send(client.chat_request(chat, "gm", stream=False)).json(), "gm")
        )
        assert completion.choices[0].message.content == "From the wire"
        assert upstream.last.path == "/v1beta/models/gm:generateContent"
        assert upstream.last.headers["X-Goog-Api-Key"] == "AIza-test"
        status, lines = stream_lines(client.chat_request(chat, "gm", stream=True))
        assert status == 200 and text_of(valid_chunks(client.parse_stream(lines, "gm"))) == "From the wire"
        assert (upstream.last.path, upstream.last.query) == (
            "/v1beta/models/gm:streamGenerateContent",
            "alt=sse",
        )
        embeddings = client.parse_embeddings(send(client.embeddings_request(["x"], "emb")).json(), "emb")
        assert valid_embeddings(embeddings).data[0].embedding == [0.5, 0.0]
    with Upstream(gemini_upstream(cut_stream=True)) as upstream:
        client = adapter(upstream.url)
        _, lines = stream_lines(client.chat_request(chat, "gm", stream=True))
        with pytest.raises(ProviderError) as caught:
            list(client.parse_stream(lines, "gm"))
        assert caught.value.kind == "stream_interrupted"
    quota = gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded")
    with Upstream(gemini_upstream(error_status=429, error_body=quota)) as upstream:
        client = adapter(upstream.url)
        response = send(client.chat_request(chat, "gm", stream=False))
        error = client.parse_error(response.status_code, response.content, response.headers)
    assert (error.kind, error.upstream_status) == ("rate_limit", 429)


def test_tool_choice_without_tools_is_left_out() -> None:
    assert "toolConfig" not in body_of(
        {"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "none"}
    )


def test_thought_signature_survives_the_round_trip_through_the_id() -> None:
    signature = b"\xfb\xff\xfe\x00sig"  # standard base64 of these bytes holds "+" and "/"
    part = g.Part(function_call=g.FunctionCall(name="f", args={}), thought_signature=signature)
    call = adapter().parse_chat(gemini_response([part]), "m")["choices"][0]["message"]["tool_calls"][0]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", call["id"])
    chat = {"messages": [{"role": "assistant", "tool_calls": [call]}]}
    sent = body_of(chat)["contents"][0]["parts"][0]["thoughtSignature"]
    assert base64.b64decode(sent) == signature
    # the real API writes standard base64, the SDK's dump above the URL-safe alphabet: both must work
    standard = {**gemini_response([part])}
    standard["candidates"][0]["content"]["parts"][0]["thoughtSignature"] = base64.b64encode(
        signature
    ).decode()
    assert (
        adapter()
        .parse_chat(standard, "m")["choices"][0]["message"]["tool_calls"][0]["id"]
        .endswith(call["id"].partition("__thought__")[2])
    )
