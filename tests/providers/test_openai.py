from __future__ import annotations

import json
import logging

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.create_embedding_response import CreateEmbeddingResponse

from app.errors import ProviderError
from app.providers.aggregate import collect_completion
from app.providers.base import ProviderSettings
from app.providers.openai import OpenAIAdapter
from tests.providers import wire
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Upstream

SETTINGS = ProviderSettings(
    name="openai", base_url="https://api.openai.com/v1/", api_key="sk-test", headers={"OpenAI-Project": "p1"}
)
CHAT = {
    "model": "gpt-alias",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            ],
        },
    ],
    "temperature": 0.2,
    "max_completion_tokens": 50,
    "seed": 7,
    "stop": ["END"],
    "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
    "user": "u-1",
}


def sse_lines(*events: object) -> list[str]:
    lines = []
    for event in events:
        lines += [f"data: {event if isinstance(event, str) else json.dumps(event)}", ""]
    return lines


def chunk(delta: dict, finish: str | None = None, index: int = 0) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def usage_chunk() -> dict:
    return {**chunk({}), "choices": [], "usage": USAGE}


def test_chat_request_forwards_fields_to_upstream_model():
    request = OpenAIAdapter(SETTINGS).chat_request(CHAT, "gpt-4o", stream=False)
    assert request.method == "POST"
    assert request.url == "https://api.openai.com/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.headers["OpenAI-Project"] == "p1"
    expected = {k: v for k, v in CHAT.items() if k != "model"}
    assert request.json == {"model": "gpt-4o", **expected}


def test_stream_request_forces_usage():
    chat = {**CHAT, "stream": True, "stream_options": {"include_usage": False, "include_obfuscation": False}}
    request = OpenAIAdapter(SETTINGS).chat_request(chat, "gpt-4o", stream=True)
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True, "include_obfuscation": False}


def test_non_stream_request_drops_stream_options():
    request = OpenAIAdapter(SETTINGS).chat_request({**CHAT, "stream_options": {}}, "m", stream=False)
    assert "stream" not in request.json and "stream_options" not in request.json


def test_missing_key_is_an_authentication_error():
    adapter = OpenAIAdapter(ProviderSettings(name="openai", base_url="https://x/v1"))
    with pytest.raises(ProviderError) as info:
        adapter.chat_request(CHAT, "m", stream=False)
    assert info.value.kind == "authentication"


def test_parse_chat_keeps_openai_body():
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": USAGE,
    }
    out = OpenAIAdapter(SETTINGS).parse_chat(body, "gpt-4o")
    assert out == body
    ChatCompletion.model_validate(out)


def test_parse_chat_rejects_body_without_choices():
    with pytest.raises(ProviderError) as info:
        OpenAIAdapter(SETTINGS).parse_chat({"id": "x"}, "m")
    assert info.value.kind == "server"


def test_parse_stream_yields_chunks_and_usage_last():
    lines = sse_lines(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hi"}),
        chunk({}, "stop"),
        usage_chunk(),
        "[DONE]",
    )
    chunks = list(OpenAIAdapter(SETTINGS).parse_stream(lines, "gpt-4o"))
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:3]] == ["", "Hi", None]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert all(c["usage"] is None for c in chunks[:-1])


def test_usage_on_a_choice_chunk_is_moved_to_a_last_chunk():
    lines = sse_lines(chunk({"content": "Hi"}), {**chunk({}, "stop"), "usage": USAGE}, "[DONE]")
    chunks = list(OpenAIAdapter(SETTINGS).parse_stream(lines, "gpt-4o"))
    assert len(chunks) == 3
    assert chunks[1]["choices"][0]["finish_reason"] == "stop" and chunks[1]["usage"] is None
    assert chunks[2]["usage"] == USAGE and chunks[2]["choices"] == []


def test_stream_without_done_is_interrupted():
    lines = sse_lines(chunk({"content": "Hi"}), chunk({}, "stop"))
    with pytest.raises(ProviderError) as info:
        list(OpenAIAdapter(SETTINGS).parse_stream(lines, "m"))
    assert info.value.kind == "stream_interrupted"


def test_stream_cut_after_its_usage_still_passes_the_usage_on():
    lines = sse_lines(chunk({"content": "Hi"}), chunk({}, "stop"), usage_chunk())  # no [DONE]
    stream = OpenAIAdapter(SETTINGS).parse_stream(lines, "m")
    chunks = [next(stream), next(stream), next(stream)]
    assert chunks[2]["usage"] == USAGE and chunks[2]["choices"] == []
    with pytest.raises(ProviderError) as info:
        next(stream)
    assert info.value.kind == "stream_interrupted"


def test_non_json_event_is_dropped_and_logged_without_content(caplog):
    lines = sse_lines("secret garbage", chunk({"content": "Hi"}), "[DONE]")
    with caplog.at_level(logging.WARNING, logger="app.providers.openai"):
        chunks = list(OpenAIAdapter(SETTINGS).parse_stream(lines, "m"))
    assert len(chunks) == 1
    assert caplog.records and "secret" not in caplog.text


def test_in_stream_error_raises():
    lines = sse_lines(chunk({"content": "Hi"}), {"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(ProviderError) as info:
        list(OpenAIAdapter(SETTINGS).parse_stream(lines, "m"))
    assert info.value.kind == "server" and info.value.message == "boom"


def test_azure_style_filter_preamble_chunk_is_skipped():
    preamble = {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []}
    lines = sse_lines(preamble, chunk({"content": "Hi"}), "[DONE]")
    chunks = list(OpenAIAdapter(SETTINGS).parse_stream(lines, "m"))
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Hi"]


def err(message: str, type_: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, err("too long", "invalid_request_error", "context_length_exceeded"), "context_length"),
        (400, err("no", "invalid_request_error", "content_policy_violation"), "content_policy"),
        (400, err("filtered", "invalid_request_error", "content_filter"), "content_policy"),
        (400, err("bad", "invalid_request_error"), "invalid_request"),
        (401, err("bad key", "invalid_request_error", "invalid_api_key"), "authentication"),
        (403, err("nope", "invalid_request_error"), "permission"),
        (404, err("no model", "invalid_request_error", "model_not_found"), "not_found"),
        (429, err("slow down", "requests", "rate_limit_exceeded"), "rate_limit"),
        (500, err("oops", "server_error"), "server"),
        (502, b"<html>bad gateway</html>", "server"),
        (503, err("busy", "server_error"), "overloaded"),
        (529, err("busy", "overloaded_error"), "overloaded"),
    ],
)
def test_parse_error_kinds(status, body, kind):
    error = OpenAIAdapter(SETTINGS).parse_error(status, body, {})
    assert error.kind == kind
    assert error.upstream_status == status and error.provider == "openai"


def test_parse_error_reads_retry_after_and_code():
    error = OpenAIAdapter(SETTINGS).parse_error(
        429, err("slow", "requests", "rate_limit_exceeded"), {"Retry-After": "7"}
    )
    assert error.retry_after == 7.0 and error.provider_code == "rate_limit_exceeded"
    assert error.message == "slow"
    ms = OpenAIAdapter(SETTINGS).parse_error(429, b"{}", {"retry-after-ms": "1500", "retry-after": "9"})
    assert ms.retry_after == 1.5


def test_html_error_body_is_not_echoed():
    error = OpenAIAdapter(SETTINGS).parse_error(502, b"<html>" + b"x" * 5000, {})
    assert "<html>" not in error.message


def test_embeddings_request_and_parse():
    adapter = OpenAIAdapter(SETTINGS)
    request = adapter.embeddings_request(["a", "b"], "text-embedding-3-small", dimensions=256)
    assert request.url == "https://api.openai.com/v1/embeddings"
    assert request.json == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 256,
    }
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    out = adapter.parse_embeddings(body, "text-embedding-3-small")
    assert out == body
    CreateEmbeddingResponse.model_validate(out)


def test_against_stand_in_non_stream_and_stream():
    with Upstream(openai_like(reply="one two three")) as up:
        adapter = OpenAIAdapter(ProviderSettings(name="openai", base_url=up.url + "/v1", api_key="sk-1"))
        completion = wire.chat(adapter, CHAT, "gpt-4o")
        assert up.last.path == "/v1/chat/completions"
        assert up.last.headers["Authorization"] == "Bearer sk-1"
        assert up.last.json["model"] == "gpt-4o"
        ChatCompletion.model_validate(completion)
        assert completion["choices"][0]["message"]["content"] == "one two three"

        chunks = wire.stream(adapter, CHAT, "gpt-4o")
        assert up.last.json["stream_options"] == {"include_usage": True}
        for c in chunks:
            ChatCompletionChunk.model_validate(c)
        folded = collect_completion(chunks, "gpt-4o")
        ChatCompletion.model_validate(folded)
        assert folded["choices"][0]["message"]["content"] == "one two three"
        assert folded["usage"]["completion_tokens"] == 3


def test_against_stand_in_tool_call_stream():
    with Upstream(openai_like(tool_call=("look", '{"q": "cats"}'))) as up:
        adapter = OpenAIAdapter(ProviderSettings(name="openai", base_url=up.url, api_key="k"))
        folded = collect_completion(wire.stream(adapter, CHAT, "gpt-4o"), "gpt-4o")
    ChatCompletion.model_validate(folded)
    call = folded["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "look", "arguments": '{"q": "cats"}'}
    assert folded["choices"][0]["finish_reason"] == "tool_calls"


def test_against_stand_in_cut_stream():
    with Upstream(openai_like(reply="a b c d", cut_after=2)) as up:
        adapter = OpenAIAdapter(ProviderSettings(name="openai", base_url=up.url, api_key="k"))
        with pytest.raises(ProviderError) as info:
            wire.stream(adapter, CHAT, "m")
    assert info.value.kind == "stream_interrupted"


def test_against_stand_in_in_stream_error_and_garbage():
    handler = openai_like(garbage_line=True, stream_error={"message": "overloaded", "type": "server_error"})
    with Upstream(handler) as up:
        adapter = OpenAIAdapter(ProviderSettings(name="openai", base_url=up.url, api_key="k"))
        with pytest.raises(ProviderError) as info:
            wire.stream(adapter, CHAT, "m")
    assert info.value.message == "overloaded"


def test_against_stand_in_rate_limited():
    handler = openai_like(
        fail_status=429,
        fail_body={
            "error": {"message": "slow", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
        },
        fail_headers={"Retry-After": "3"},
    )
    with Upstream(handler) as up:
        adapter = OpenAIAdapter(ProviderSettings(name="openai", base_url=up.url, api_key="k"))
        with pytest.raises(ProviderError) as info:
            wire.stream(adapter, CHAT, "m")
    assert (info.value.kind, info.value.retry_after) == ("rate_limit", 3.0)


def test_against_stand_in_embeddings():
    with Upstream(openai_like()) as up:
        adapter = OpenAIAdapter(ProviderSettings(name="openai", base_url=up.url, api_key="k"))
        out = wire.embeddings(adapter, ["x", "y"], "emb", dimensions=4)
    CreateEmbeddingResponse.model_validate(out)
    assert [len(d["embedding"]) for d in out["data"]] == [4, 4]
