"""Anthropic adapter: request building, answers, streams and errors."""

from __future__ import annotations

import json

import pytest
from anthropic.types import message_create_params
from pydantic import TypeAdapter

from app.errors import ProviderError
from app.providers.anthropic import AnthropicAdapter
from app.providers.base import ProviderSettings, UnsupportedFeature
from tests.providers.helpers import (
    send,
    sse_lines,
    stream_lines,
    text_of,
    tool_arguments,
    valid_chunks,
    valid_completion,
)
from tests.upstreams.anthropic import anthropic_events, anthropic_message, anthropic_upstream, sse
from tests.upstreams.server import Upstream

PNG = "iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MESSAGE_PARAMS = TypeAdapter(message_create_params.MessageCreateParamsNonStreaming)


def adapter(base_url: str = "https://api.anthropic.com", **options: object) -> AnthropicAdapter:
    return AnthropicAdapter(
        ProviderSettings(name="claude", base_url=base_url, api_key="sk-ant-test", options=options)
    )


def body_of(chat: dict, **kw: object) -> dict:
    request = adapter(**kw).chat_request(chat, "claude-test", stream=False)
    MESSAGE_PARAMS.validate_python(request.json)  # the SDK's own request type accepts what we send
    return request.json


def lines_of(events: list) -> list[str]:
    return b"".join(sse(event) for event in events).decode().split("\n")


def test_request_url_headers_and_body() -> None:
    chat = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,
        "user": "u-1",
    }
    request = adapter().chat_request(chat, "claude-test", stream=True)
    assert request.method == "POST"
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant-test",
    }
    assert request.json == {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


@pytest.mark.parametrize(
    ("fields", "options", "expected"),
    [
        ({}, {}, 4096),
        ({}, {"default_max_tokens": 1000}, 1000),
        ({"max_tokens": 50}, {}, 50),
        ({"max_tokens": 50, "max_completion_tokens": 70}, {}, 70),
    ],
)
def test_max_tokens_is_always_sent(fields: dict, options: dict, expected: int) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}], **fields}
    assert body_of(chat, **options)["max_tokens"] == expected


def test_extra_headers_and_base_url_are_honoured() -> None:
    settings = ProviderSettings(
        name="claude", base_url="http://proxy.local/anthropic/", api_key="k", headers={"x-team": "a"}
    )
    request = AnthropicAdapter(settings).chat_request({"messages": []}, "m", stream=False)
    assert request.url == "http://proxy.local/anthropic/v1/messages"
    assert request.headers["x-team"] == "a"
    assert "stream" not in request.json


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, None, None),
    ],
)
def test_tools_and_tool_choice(tool_choice: object, parallel: object, expected: object) -> None:
    chat: dict = {"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        chat["tool_choice"] = tool_choice
    if parallel is not None:
        chat["parallel_tool_calls"] = parallel
    body = body_of(chat)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body.get("tool_choice") == expected


def test_tool_round_trip_merges_turns_so_roles_alternate() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "Rain"}]},
            {"role": "user", "content": "Thanks"},
            {"role": "user", "content": "Summarise."},
        ]
    }
    assert body_of(chat)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "Rain"},
                {"type": "text", "text": "Thanks"},
                {"type": "text", "text": "Summarise."},
            ],
        },
    ]


def test_bad_tool_arguments_are_a_caller_error() -> None:
    chat = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                ],
            }
        ]
    }
    with pytest.raises(ProviderError) as caught:
        body_of(chat)
    assert caught.value.kind == "invalid_request"


def test_images_from_data_and_http_urls() -> None:
    chat = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ]
    }
    assert body_of(chat)["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_unusable_image_url_is_refused() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}
        ]
    }
    with pytest.raises(UnsupportedFeature):
        body_of(chat)


def test_n_above_one_and_json_object_are_unsupported() -> None:
    with pytest.raises(UnsupportedFeature):
        body_of({"messages": [], "n": 2})
    with pytest.raises(UnsupportedFeature):
        body_of({"messages": [], "response_format": {"type": "json_object"}})


def test_json_schema_uses_native_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    chat = {
        "messages": [{"role": "user", "content": "Give a"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": schema, "strict": True},
        },
    }
    assert body_of(chat)["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_parse_chat_text_and_usage_with_cache() -> None:
    result = adapter().parse_chat(anthropic_message("Bonjour"), "claude-test")
    completion = valid_completion(result)
    assert completion.id == "msg_01"
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    # 12 input + 3 read from cache: OpenAI counts cached input inside prompt_tokens
    assert result["usage"] == {"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20}


def test_parse_chat_tool_use() -> None:
    result = adapter().parse_chat(anthropic_message("Let me check.", ("get_weather", {"city": "Paris"})), "m")
    completion = valid_completion(result)
    call = completion.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_01",
        "get_weather",
        {"city": "Paris"},
    )
    assert completion.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    body = {**anthropic_message(), "stop_reason": stop_reason}
    assert adapter().parse_chat(body, "m")["choices"][0]["finish_reason"] == finish


def test_stream_text_then_finish_then_usage() -> None:
    chunks = valid_chunks(adapter().parse_stream(lines_of(anthropic_events("Hello there")), "claude-test"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {chunk["id"] for chunk in chunks} == {"msg_01"}
    assert text_of(chunks) == "Hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def test_stream_tool_use() -> None:
    events = anthropic_events("Checking.", ("get_weather", {"city": "Rome"}))
    chunks = valid_chunks(adapter().parse_stream(lines_of(events), "m"))
    calls = tool_arguments(chunks)
    assert calls[0]["id"] == "toolu_01" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Rome"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_cut_stream_is_interrupted_not_complete() -> None:
    lines = lines_of(anthropic_events()[:-1])  # everything but message_stop
    stream = adapter().parse_stream(lines, "m")
    chunks = []
    with pytest.raises(ProviderError) as caught:
        for item in stream:
            chunks.append(item)
    assert caught.value.kind == "stream_interrupted"
    # The stop reason and the final counts had come: the usage is passed on before the error.
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def test_stream_cut_before_its_stop_reason_passes_no_usage() -> None:
    events = [event for event in anthropic_events() if event.type not in ("message_delta", "message_stop")]
    chunks = []
    with pytest.raises(ProviderError):
        for item in adapter().parse_stream(lines_of(events), "m"):
            chunks.append(item)
    assert all(not chunk.get("usage") for chunk in chunks)


def test_stream_error_event_raises_classified_error() -> None:
    events = [
        *anthropic_events()[:3],
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ]
    stream = adapter().parse_stream(lines_of(events), "m")
    assert next(stream)["choices"][0]["delta"]["role"] == "assistant"
    with pytest.raises(ProviderError) as caught:
        list(stream)
    assert caught.value.kind == "overloaded"
    assert caught.value.provider_code == "overloaded_error"


def test_malformed_data_line_and_ping_are_dropped() -> None:
    events = anthropic_events("Hi")
    lines = lines_of(events[:1]) + sse_lines("{not json", event="content_block_delta")
    lines += sse_lines('{"type": "ping"}', event="ping") + lines_of(events[1:])
    chunks = valid_chunks(adapter().parse_stream(lines, "m"))
    assert text_of(chunks) == "Hi"


@pytest.mark.parametrize(
    ("status", "error_type", "message", "kind"),
    [
        (400, "invalid_request_error", "messages: field required", "invalid_request"),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            "context_length",
        ),
        (401, "authentication_error", "invalid x-api-key", "authentication"),
        (403, "permission_error", "no access", "permission"),
        (404, "not_found_error", "model: claude-x", "not_found"),
        (413, "request_too_large", "Request exceeds the maximum size", "invalid_request"),
        (429, "rate_limit_error", "slow down", "rate_limit"),
        (500, "api_error", "internal", "server"),
        (529, "overloaded_error", "Overloaded", "overloaded"),
    ],
)
def test_parse_error(status: int, error_type: str, message: str, kind: str) -> None:
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()
    error = adapter().parse_error(status, body, {"retry-after": "3"})
    assert (error.kind, error.upstream_status, error.message, error.provider) == (
        kind,
        status,
        message,
        "claude",
    )
    assert error.retry_after == 3.0


def test_parse_error_without_json_falls_back_to_status() -> None:
    error = adapter().parse_error(502, b"<html>bad gateway</html>", {})
    assert error.kind == "server" and error.upstream_status == 502


def test_over_loopback_non_stream() -> None:
    with Upstream(anthropic_upstream(text="From the wire")) as upstream:
        client = adapter(upstream.url)
        request = client.chat_request(
            {"messages": [{"role": "user", "content": "Hi"}]}, "claude-test", stream=False
        )
        response = send(request)
        completion = valid_completion(client.parse_chat(response.json(), "claude-test"))
    assert completion.choices[0].message.content == "From the wire"
    assert upstream.last.path == "/v1/messages"
    assert upstream.last.headers["X-Api-Key"] == "sk-ant-test"
    assert upstream.last.json["max_tokens"] == 4096


def test_over_loopback_stream_and_cut_stream() -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}]}
    with Upstream(anthropic_upstream(text="Streamed words")) as upstream:
        client = adapter(upstream.url)
        status, lines = stream_lines(client.chat_request(chat, "m", stream=True))
        chunks = valid_chunks(client.parse_stream(lines, "m"))
    assert status == 200 and text_of(chunks) == "Streamed words"
    with Upstream(anthropic_upstream(cut_stream=True)) as upstream:
        client = adapter(upstream.url)
        _, lines = stream_lines(client.chat_request(chat, "m", stream=True))
        with pytest.raises(ProviderError) as caught:
            list(client.parse_stream(lines, "m"))
    assert caught.value.kind == "stream_interrupted"


def test_over_loopback_error_status() -> None:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"}}
    with Upstream(anthropic_upstream(error_status=429, error_body=body)) as upstream:
        client = adapter(upstream.url)
        response = send(client.chat_request({"messages": []}, "m", stream=False))
        error = client.parse_error(response.status_code, response.content, response.headers)
    assert (error.kind, error.upstream_status, error.status) == ("rate_limit", 429, 429)


def test_tool_choice_without_tools_and_empty_assistant_turns_are_left_out() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "Still there?"},
        ],
        "tool_choice": "none",
    }
    body = body_of(chat)
    assert "tool_choice" not in body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "Still there?"}],
        }
    ]
