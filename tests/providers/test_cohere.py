"""Cohere adapter: Chat v2 request building, answers, streams, errors and Embed v2."""

from __future__ import annotations

import json

import pytest
from cohere.types import ChatMessageV2, ResponseFormatV2, ToolV2
from pydantic import TypeAdapter

from app.errors import ProviderError
from app.providers.base import ProviderSettings, UnsupportedFeature
from app.providers.cohere import CohereAdapter
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
from tests.upstreams.cohere import cohere_events, cohere_response, cohere_upstream, sse
from tests.upstreams.server import Upstream

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
OTHER_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
MESSAGES = TypeAdapter(list[ChatMessageV2])


def adapter(base_url: str = "https://api.cohere.com") -> CohereAdapter:
    return CohereAdapter(ProviderSettings(name="cohere", base_url=base_url, api_key="co-test"))


def body_of(chat: dict) -> dict:
    body = adapter().chat_request(chat, "command-a", stream=False).json
    MESSAGES.validate_python(body["messages"])  # the SDK's message union accepts what we send
    for tool in body.get("tools", []):
        ToolV2.model_validate(tool)
    if "response_format" in body:
        TypeAdapter(ResponseFormatV2).validate_python(body["response_format"])
    return body


def lines_of(events: list[dict]) -> list[str]:
    return b"".join(sse(event) for event in events).decode().split("\n")


def test_request_url_headers_and_body() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.3,
        "top_p": 0.8,
        "max_completion_tokens": 100,
        "stop": "END",
        "seed": 4,
        "user": "u-1",
        "parallel_tool_calls": True,
    }
    request = adapter().chat_request(chat, "command-a", stream=True)
    assert request.url == "https://api.cohere.com/v2/chat"
    assert request.headers == {"content-type": "application/json", "authorization": "Bearer co-test"}
    assert request.json == {
        "model": "command-a",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
        ],
        "temperature": 0.3,
        "p": 0.8,
        "seed": 4,
        "max_tokens": 100,
        "stop_sequences": ["END"],
        "stream": True,
    }


@pytest.mark.parametrize(
    ("ours", "value", "theirs", "sent"),
    [
        ("top_p", 1.0, "p", 0.99),  # OpenAI clients often send top_p=1; Cohere's p stops at 0.99
        ("top_p", 0.0, "p", 0.01),
        ("top_p", 0.5, "p", 0.5),
        ("presence_penalty", -0.5, "presence_penalty", 0.0),
        ("presence_penalty", 1.5, "presence_penalty", 1.0),
        ("frequency_penalty", 2.0, "frequency_penalty", 1.0),
        ("frequency_penalty", 0.4, "frequency_penalty", 0.4),
    ],
)
def test_sampling_values_are_kept_in_cohere_ranges(ours: str, value: float, theirs: str, sent: float) -> None:
    # The SDK's V2 chat docstring: p "min value of 0.01, max value of 0.99"; penalties "min value of 0.0,
    # max value of 1.0". OpenAI allows top_p up to 1 and penalties from -2 to 2.
    chat = {"messages": [{"role": "user", "content": "Hi"}], ours: value}
    assert adapter().chat_request(chat, "command-a", stream=False).json[theirs] == sent


@pytest.mark.parametrize(
    ("tool_choice", "tool_names", "expected"),
    [
        ("auto", ["get_weather", "get_time"], None),
        ("required", ["get_weather", "get_time"], "REQUIRED"),
        ("none", ["get_weather", "get_time"], "NONE"),
        ({"type": "function", "function": {"name": "get_time"}}, ["get_time"], "REQUIRED"),
    ],
)
def test_tools_and_tool_choice(tool_choice: object, tool_names: list[str], expected: str | None) -> None:
    body = body_of(
        {
            "messages": [{"role": "user", "content": "?"}],
            "tools": [WEATHER_TOOL, OTHER_TOOL],
            "tool_choice": tool_choice,
        }
    )
    assert [tool["function"]["name"] for tool in body["tools"]] == tool_names
    assert body.get("tool_choice") == expected
    if "get_weather" in tool_names:
        assert body["tools"][0] == {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["function"]["parameters"],
                "description": "Weather for a city",
            },
        }


def test_tool_round_trip_and_images() -> None:
    chat = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Where is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Snow"},
        ]
    }
    assert body_of(chat)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Where is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Snow"},
    ]


def test_response_formats_and_strict_tools() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = body_of(
        {
            "messages": [],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
            "tools": [{"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}],
        }
    )
    assert body["response_format"] == {"type": "json_object", "json_schema": schema}
    assert body["strict_tools"] is True
    assert body_of({"messages": [], "response_format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }


def test_n_above_one_is_unsupported() -> None:
    with pytest.raises(UnsupportedFeature):
        body_of({"messages": [], "n": 3})


def test_parse_chat_text_and_billed_usage() -> None:
    result = adapter().parse_chat(cohere_response("Bonjour"), "command-a")
    completion = valid_completion(result)
    assert completion.id == "c-1"
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "stop"
    assert result["usage"] == {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}


def test_parse_chat_tool_calls() -> None:
    completion = valid_completion(
        adapter().parse_chat(cohere_response("", ("get_weather", {"city": "Oslo"})), "m")
    )
    call = completion.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_c1",
        "get_weather",
        {"city": "Oslo"},
    )
    assert completion.choices[0].message.content is None
    assert completion.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("TOOL_CALL", "tool_calls")],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    body = {**cohere_response(), "finish_reason": reason}
    assert adapter().parse_chat(body, "m")["choices"][0]["finish_reason"] == finish


def test_finish_reason_error_raises() -> None:
    with pytest.raises(ProviderError) as caught:
        adapter().parse_chat({**cohere_response(), "finish_reason": "ERROR"}, "m")
    assert caught.value.kind == "server"


def test_stream_text_finish_and_usage() -> None:
    chunks = valid_chunks(adapter().parse_stream(lines_of(cohere_events("Hello there")), "m"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {chunk["id"] for chunk in chunks} == {"c-1"}
    assert text_of(chunks) == "Hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}


def test_stream_tool_call() -> None:
    chunks = valid_chunks(
        adapter().parse_stream(lines_of(cohere_events("", ("get_weather", {"city": "Oslo"}))), "m")
    )
    calls = tool_arguments(chunks)
    assert calls[0]["id"] == "call_c1" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_cut_stream_is_interrupted() -> None:
    with pytest.raises(ProviderError) as caught:
        list(adapter().parse_stream(lines_of(cohere_events()[:-1]), "m"))
    assert caught.value.kind == "stream_interrupted"


def test_stream_ending_in_error_raises() -> None:
    events = cohere_events()
    events[-1] = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal failure"}}
    with pytest.raises(ProviderError) as caught:
        list(adapter().parse_stream(lines_of(events), "m"))
    assert (caught.value.kind, caught.value.message) == ("server", "internal failure")


def test_malformed_line_and_done_marker_are_dropped() -> None:
    events = cohere_events("Hi")
    lines = lines_of(events[:2]) + sse_lines("{broken") + lines_of(events[2:]) + sse_lines("[DONE]")
    assert text_of(valid_chunks(adapter().parse_stream(lines, "m"))) == "Hi"


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (400, "invalid request: message must not be empty", "invalid_request"),
        (400, "too many tokens: total number of tokens in the prompt cannot exceed 128000", "context_length"),
        (401, "invalid api token", "authentication"),
        (498, "invalid api token", "authentication"),
        (403, "forbidden", "permission"),
        (404, "model 'x' not found", "not_found"),
        (422, "unprocessable", "invalid_request"),
        (429, "You are using a Trial key", "rate_limit"),
        (500, "internal server error", "server"),
        (503, "service unavailable", "overloaded"),
        (504, "gateway timeout", "timeout"),
    ],
)
def test_parse_error(status: int, message: str, kind: str) -> None:
    error = adapter().parse_error(
        status, json.dumps({"id": "e", "message": message}).encode(), {"Retry-After": "2"}
    )
    assert (error.kind, error.upstream_status, error.message, error.retry_after) == (
        kind,
        status,
        message,
        2.0,
    )


def test_embeddings_request_and_parse() -> None:
    request = adapter().embeddings_request(["a", "b"], "embed-v4.0", dimensions=512)
    assert request.url == "https://api.cohere.com/v2/embed"
    assert request.json == {
        "model": "embed-v4.0",
        "texts": ["a", "b"],
        "input_type": "search_document",
        "embedding_types": ["float"],
        "output_dimension": 512,
    }


def test_over_loopback_chat_stream_embeddings_and_errors() -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}]}
    with Upstream(cohere_upstream(text="From the wire")) as upstream:
        client = adapter(upstream.url)
        completion = valid_completion(
            client.parse_chat(send(client.chat_request(chat, "cmd", stream=False)).json(), "cmd")
        )
        assert completion.choices[0].message.content == "From the wire"
        assert upstream.last.path == "/v2/chat"
        assert upstream.last.headers["Authorization"] == "Bearer co-test"
        status, lines = stream_lines(client.chat_request(chat, "cmd", stream=True))
        assert status == 200 and text_of(valid_chunks(client.parse_stream(lines, "cmd"))) == "From the wire"
        embeddings = valid_embeddings(
            client.parse_embeddings(send(client.embeddings_request(["x", "y"], "e")).json(), "e")
        )
        assert [item.embedding for item in embeddings.data] == [[0.25, 0.0], [0.25, 1.0]]
        assert embeddings.usage.prompt_tokens == 6
    with Upstream(cohere_upstream(cut_stream=True)) as upstream:
        client = adapter(upstream.url)
        _, lines = stream_lines(client.chat_request(chat, "cmd", stream=True))
        with pytest.raises(ProviderError) as caught:
            list(client.parse_stream(lines, "cmd"))
        assert caught.value.kind == "stream_interrupted"
    with Upstream(cohere_upstream(error_status=401, error_body={"message": "invalid api token"})) as upstream:
        client = adapter(upstream.url)
        response = send(client.chat_request(chat, "cmd", stream=False))
        error = client.parse_error(response.status_code, response.content, response.headers)
    assert (error.kind, error.upstream_status, error.status) == ("authentication", 401, 502)


def test_tool_choice_without_tools_is_left_out() -> None:
    assert "tool_choice" not in body_of(
        {"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "required"}
    )
