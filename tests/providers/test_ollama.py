from __future__ import annotations

import json

import pytest
from ollama._types import ChatRequest, ChatResponse, EmbedResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.create_embedding_response import CreateEmbeddingResponse

from app.errors import ProviderError
from app.providers.aggregate import collect_completion
from app.providers.base import ProviderSettings, UnsupportedFeature
from app.providers.ollama import OllamaAdapter
from tests.providers import wire
from tests.upstreams.ollama import ollama
from tests.upstreams.server import Upstream

SETTINGS = ProviderSettings(name="ollama", base_url="http://127.0.0.1:11434/")
TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": True},
    }
]
CHAT = {
    "model": "alias",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "temperature": 0.3,
    "top_p": 0.9,
    "seed": 1,
    "max_tokens": 64,
    "stop": "END",
    "tools": TOOLS,
    "response_format": {"type": "json_object"},
}


def test_chat_request_maps_to_native_api():
    request = OllamaAdapter(SETTINGS).chat_request(CHAT, "llama3.2", stream=False)
    assert request.url == "http://127.0.0.1:11434/api/chat"
    assert "Authorization" not in request.headers
    body = request.json
    assert body["stream"] is False
    assert body["options"] == {
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 1,
        "num_predict": 64,
        "stop": ["END"],
    }
    assert body["format"] == "json"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1] == {"role": "user", "content": "What is here?", "images": ["iVBORw0KGgo="]}
    assert body["messages"][2]["tool_calls"] == [
        {"function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    ]
    assert body["messages"][3] == {"role": "tool", "content": "sunny", "tool_name": "weather"}
    assert "strict" not in body["tools"][0]["function"]
    ChatRequest.model_validate(body)  # the SDK's own request model accepts it


def test_json_schema_format_and_tool_choice_none():
    chat = {
        **CHAT,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "tool_choice": "none",
    }
    body = OllamaAdapter(SETTINGS).chat_request(chat, "m", stream=True).json
    assert body["format"] == {"type": "object"}
    assert "tools" not in body and body["stream"] is True


@pytest.mark.parametrize(
    "chat",
    [
        {**CHAT, "tool_choice": "required"},
        {**CHAT, "n": 2},
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}
            ]
        },
    ],
)
def test_unsupported_requests_raise(chat):
    with pytest.raises(UnsupportedFeature):
        OllamaAdapter(SETTINGS).chat_request(chat, "m", stream=False)


FINAL = {
    "model": "llama3.2",
    "created_at": "2024-07-22T20:33:28.123648Z",
    "done": True,
    "done_reason": "stop",
    "total_duration": 1,
    "prompt_eval_count": 26,
    "eval_count": 3,
}


def test_parse_chat_with_tool_call():
    body = {
        **FINAL,
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
        },
    }
    ChatResponse.model_validate(body)
    out = OllamaAdapter(SETTINGS).parse_chat(body, "llama3.2")
    ChatCompletion.model_validate(out)
    call = out["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert call["id"].startswith("call_")
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 26, "completion_tokens": 3, "total_tokens": 29}


def test_parse_chat_length():
    body = {**FINAL, "done_reason": "length", "message": {"role": "assistant", "content": "Hi there"}}
    out = OllamaAdapter(SETTINGS).parse_chat(body, "m")
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["message"]["content"] == "Hi there"
    assert out["choices"][0]["finish_reason"] == "length"


def ndjson(*parts: dict) -> list[str]:
    return [json.dumps(p) for p in parts]


def part(content: str) -> dict:
    return {
        "model": "m",
        "created_at": FINAL["created_at"],
        "message": {"role": "assistant", "content": content},
        "done": False,
    }


def test_parse_stream():
    lines = ndjson(part("Hel"), part("lo"), {**FINAL, "message": {"role": "assistant", "content": ""}})
    lines.insert(1, "")  # blank lines are skipped
    chunks = list(OllamaAdapter(SETTINGS).parse_stream(lines, "m"))
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 29


def test_stream_without_done_is_interrupted():
    with pytest.raises(ProviderError) as info:
        list(OllamaAdapter(SETTINGS).parse_stream(ndjson(part("a")), "m"))
    assert info.value.kind == "stream_interrupted"


def test_in_stream_error_raises():
    with pytest.raises(ProviderError) as info:
        list(OllamaAdapter(SETTINGS).parse_stream(ndjson(part("a"), {"error": "out of memory"}), "m"))
    assert info.value.message == "out of memory"


@pytest.mark.parametrize(("status", "kind"), [(404, "not_found"), (400, "invalid_request"), (500, "server")])
def test_parse_error(status, kind):
    error = OllamaAdapter(SETTINGS).parse_error(status, b'{"error": "model \\"x\\" not found"}', {})
    assert error.kind == kind and error.message == 'model "x" not found' and error.upstream_status == status


def test_embeddings():
    adapter = OllamaAdapter(SETTINGS)
    request = adapter.embeddings_request(["a", "b"], "nomic-embed-text", dimensions=2)
    assert request.url == "http://127.0.0.1:11434/api/embed"
    assert request.json == {"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 2}
    body = {"model": "nomic-embed-text", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 4}
    EmbedResponse.model_validate(body)
    out = adapter.parse_embeddings(body, "nomic-embed-text")
    CreateEmbeddingResponse.model_validate(out)
    assert out["data"][1]["embedding"] == [0.3, 0.4] and out["usage"]["prompt_tokens"] == 4


def test_against_stand_in():
    simple = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9}
    with Upstream(ollama(reply="hi there you")) as up:
        adapter = OllamaAdapter(ProviderSettings(name="ollama", base_url=up.url, api_key="ok"))
        completion = wire.chat(adapter, simple, "llama3.2")
        assert up.last.path == "/api/chat" and up.last.json["stream"] is False
        assert up.last.headers["Authorization"] == "Bearer ok"
        ChatCompletion.model_validate(completion)
        assert completion["choices"][0]["message"]["content"] == "hi there you"
        chunks = wire.stream(adapter, simple, "llama3.2")
        assert up.last.json["options"] == {"num_predict": 9}
        folded = collect_completion(chunks, "llama3.2")
        assert folded["choices"][0]["message"]["content"] == "hi there you"
        assert folded["usage"]["completion_tokens"] == 3
        out = wire.embeddings(adapter, ["a"], "nomic-embed-text")
        CreateEmbeddingResponse.model_validate(out)


def test_against_stand_in_tool_call_cut_and_errors():
    simple = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    with Upstream(ollama(tool_call=("weather", {"city": "Oslo"}))) as up:
        adapter = OllamaAdapter(ProviderSettings(name="ollama", base_url=up.url))
        folded = collect_completion(wire.stream(adapter, simple, "m"), "m")
    assert folded["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    with Upstream(ollama(cut_after=1)) as up:
        adapter = OllamaAdapter(ProviderSettings(name="ollama", base_url=up.url))
        with pytest.raises(ProviderError) as info:
            wire.stream(adapter, simple, "m")
        assert info.value.kind == "stream_interrupted"
    with Upstream(ollama(fail_status=404)) as up:
        adapter = OllamaAdapter(ProviderSettings(name="ollama", base_url=up.url))
        with pytest.raises(ProviderError) as info:
            wire.chat(adapter, simple, "nope")
        assert info.value.kind == "not_found" and info.value.message == "model not found"


def test_against_stand_in_in_stream_error():
    with Upstream(ollama(reply="a b c", stream_error="model crashed")) as up:
        adapter = OllamaAdapter(ProviderSettings(name="ollama", base_url=up.url))
        with pytest.raises(ProviderError) as info:
            wire.stream(adapter, {"messages": [{"role": "user", "content": "hi"}]}, "m")
    assert info.value.message == "model crashed"
