from __future__ import annotations

import json
import re

import pytest
from mistralai.client.models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChunk,
    EmbeddingRequest,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.create_embedding_response import CreateEmbeddingResponse

from app.errors import ProviderError
from app.providers.aggregate import collect_completion
from app.providers.base import ProviderSettings
from app.providers.mistral import MistralAdapter
from tests.providers import wire
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Upstream

SETTINGS = ProviderSettings(name="mistral", base_url="https://api.mistral.ai/v1", api_key="mk")
CHAT = {
    "model": "alias",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}], "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"c":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
    ],
    "max_completion_tokens": 30,
    "seed": 42,
    "temperature": 0.1,
    "stop": "END",
    "user": "u-9",
    "tools": [{"type": "function", "function": {"name": "weather"}}],
    "tool_choice": "required",
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
    "stream_options": {"include_usage": True},
}


def test_request_translates_names_and_roles():
    request = MistralAdapter(SETTINGS).chat_request(CHAT, "mistral-large-latest", stream=True)
    body = request.json
    assert request.url == "https://api.mistral.ai/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer mk"
    assert body["random_seed"] == 42 and "seed" not in body
    assert body["max_tokens"] == 30 and "max_completion_tokens" not in body
    assert "user" not in body and "stream_options" not in body
    assert body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "name" not in body["messages"][1]
    assert "refusal" not in body["messages"][2]
    call_id = body["messages"][2]["tool_calls"][0]["id"]
    assert body["messages"][3] == {"role": "tool", "tool_call_id": call_id, "content": "sunny"}
    assert body["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert body["tool_choice"] == "required"
    parsed = ChatCompletionRequest.model_validate(body)  # the SDK's own request model accepts it
    assert parsed.response_format.json_schema.schema_definition == {"type": "object"}
    assert parsed.random_seed == 42


def test_tool_call_ids_are_made_acceptable_to_mistral():
    # Mistral rejects any other tool call id with 400 "Tool call id was call_a but must be a-z, A-Z, 0-9,
    # with a length of 9." (type invalid_function_call, code 3280); its own ids pass unchanged.
    chat = {
        "messages": [
            {"role": "user", "content": "Weather in two cities?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_Hx3kYb2QpLm9",
                        "type": "function",
                        "function": {"name": "w", "arguments": "{}"},
                    },
                    {"id": "toolu_01A-b", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    {"id": "D681PevKs", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_Hx3kYb2QpLm9", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_01A-b", "content": "rain"},
            {"role": "tool", "tool_call_id": "D681PevKs", "content": "snow"},
        ]
    }
    messages = MistralAdapter(SETTINGS).chat_request(chat, "m", stream=False).json["messages"]
    ids = [call["id"] for call in messages[1]["tool_calls"]]
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", call_id) for call_id in ids)
    assert len(set(ids)) == 3 and ids[2] == "D681PevKs"
    assert [m["tool_call_id"] for m in messages[2:]] == ids  # each result still answers its call
    ChatCompletionRequest.model_validate({"model": "m", "messages": messages})


def test_safe_prompt_option():
    adapter = MistralAdapter(
        ProviderSettings(name="m", base_url="", api_key="k", options={"safe_prompt": True})
    )
    request = adapter.chat_request({"messages": [{"role": "user", "content": "x"}]}, "m", stream=False)
    assert request.json["safe_prompt"] is True
    assert request.url == "https://api.mistral.ai/v1/chat/completions"


RESPONSE = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "model": "mistral-large-latest",
    "created": 1700000000,
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "",
                "prefix": False,
                "tool_calls": [
                    {"id": "D681PevKs", "function": {"name": "weather", "arguments": {"c": "Oslo"}}}
                ],
            },
        }
    ],
}


def test_parse_chat_converts_tool_call_arguments_to_json_string():
    ChatCompletionResponse.model_validate(RESPONSE)
    out = MistralAdapter(SETTINGS).parse_chat(RESPONSE, "m")
    ChatCompletion.model_validate(out)
    call = out["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "id": "D681PevKs",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"c": "Oslo"}'},
    }
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"]["total_tokens"] == 15


def test_parse_chat_content_chunks_and_model_length():
    body = json.loads(json.dumps(RESPONSE))
    body["choices"][0] = {
        "index": 0,
        "finish_reason": "model_length",
        "message": {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                {"type": "text", "text": "Sunny."},
            ],
        },
    }
    ChatCompletionResponse.model_validate(body)
    out = MistralAdapter(SETTINGS).parse_chat(body, "m")
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["message"]["content"] == "Sunny."
    assert out["choices"][0]["finish_reason"] == "length"


def sse(*chunks: object) -> list[str]:
    lines = []
    for c in chunks:
        lines += ["data: " + (c if isinstance(c, str) else json.dumps(c)), ""]
    return lines


def mchunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
    chunk = {
        "id": "s1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "mistral-small-latest",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        chunk["usage"] = usage
    return chunk


def test_parse_stream_usage_on_last_chunk_and_tool_calls():
    chunks = [
        mchunk({"role": "assistant", "content": ""}),
        mchunk(
            {
                "content": None,
                "tool_calls": [{"id": "abc", "function": {"name": "w", "arguments": '{"c":1}'}, "index": 0}],
            }
        ),
        mchunk(
            {"content": ""}, "tool_calls", {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
        ),
    ]
    for c in chunks:
        CompletionChunk.model_validate(c)
    out = list(MistralAdapter(SETTINGS).parse_stream(sse(*chunks, "[DONE]"), "m"))
    for c in out:
        ChatCompletionChunk.model_validate(c)
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 10
    folded = collect_completion(out, "m")
    ChatCompletion.model_validate(folded)
    assert folded["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "w",
        "arguments": '{"c":1}',
    }


def test_stream_error_finish_reason_raises():
    with pytest.raises(ProviderError) as info:
        list(MistralAdapter(SETTINGS).parse_stream(sse(mchunk({"content": "a"}, "error"), "[DONE]"), "m"))
    assert info.value.kind == "server"


def test_stream_without_done_is_interrupted():
    with pytest.raises(ProviderError) as info:
        list(MistralAdapter(SETTINGS).parse_stream(sse(mchunk({"content": "a"}, "stop")), "m"))
    assert info.value.kind == "stream_interrupted"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, {"message": "Unauthorized", "request_id": "r1"}, "authentication"),
        (
            400,
            {
                "object": "error",
                # illustrative wording: the adapter keys on OpenAI's phrase "maximum context length"
                "message": "Prompt has 40000 tokens, too many for the model's maximum context length",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
            "context_length",
        ),
        (
            422,
            {
                "object": "error",
                "message": {"detail": [{"loc": ["body"], "msg": "bad", "type": "x"}]},
                "type": "x",
            },
            "invalid_request",
        ),
        (429, {"message": "Requests rate limit exceeded"}, "rate_limit"),
    ],
)
def test_parse_error(status, body, kind):
    error = MistralAdapter(SETTINGS).parse_error(status, json.dumps(body).encode(), {"Retry-After": "2"})
    assert error.kind == kind and error.retry_after == 2.0
    assert isinstance(error.message, str) and error.message


def test_embeddings_request():
    request = MistralAdapter(SETTINGS).embeddings_request(["a"], "mistral-embed", dimensions=512)
    assert request.url == "https://api.mistral.ai/v1/embeddings"
    assert request.json == {"model": "mistral-embed", "input": ["a"], "output_dimension": 512}
    EmbeddingRequest.model_validate(request.json)


def test_against_stand_in():
    with Upstream(openai_like(reply="bonjour tout", send_done=True, usage_on_last_chunk=True)) as up:
        adapter = MistralAdapter(ProviderSettings(name="mistral", base_url=up.url + "/v1", api_key="mk"))
        completion = wire.chat(adapter, CHAT, "mistral-small-latest")
        ChatCompletion.model_validate(completion)
        assert up.last.json["random_seed"] == 42
        chunks = wire.stream(adapter, CHAT, "mistral-small-latest")
        folded = collect_completion(chunks, "m")
        assert folded["choices"][0]["message"]["content"] == "bonjour tout"
        assert folded["usage"]["completion_tokens"] == 2
        out = wire.embeddings(adapter, ["a", "b"], "mistral-embed", dimensions=2)
        assert up.last.json["output_dimension"] == 2
    CreateEmbeddingResponse.model_validate(out)
