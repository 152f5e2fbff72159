from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from app.providers.aggregate import collect_completion
from app.providers.base import ProviderSettings, UnsupportedFeature
from app.providers.mock import MockAdapter

MOCK = MockAdapter(ProviderSettings(name="mock", base_url=""))
MESSAGES = [
    {"role": "system", "content": "Be nice."},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": [{"type": "text", "text": "tell me a joke"}]},
]
TOOLS = [
    {"type": "function", "function": {"name": "first", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "second", "parameters": {"type": "object"}}},
]


def run(**chat) -> tuple[list[dict], dict]:
    chunks = list(MOCK.local_stream({"messages": MESSAGES, **chat}, "mock-1"))
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    completion = collect_completion(chunks, "mock-1")
    ChatCompletion.model_validate(completion)
    return chunks, completion


def test_reply_to_last_user_message_in_several_chunks_with_usage():
    chunks, completion = run()
    assert completion["choices"][0]["message"]["content"] == "Mock reply to: tell me a joke"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert len([c for c in chunks if c["choices"]]) > 3
    assert chunks[-1]["choices"] == []
    # prompt: 2 + 2 + 1 + 4 words; completion: 7 words
    assert completion["usage"] == {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
    assert completion["model"] == "mock-1"


def test_deterministic():
    assert run()[1]["choices"] == run()[1]["choices"]
    assert run()[1]["id"] == run()[1]["id"]


def test_max_tokens_truncates():
    _, completion = run(max_tokens=3)
    assert completion["choices"][0]["message"]["content"] == "Mock reply to:"
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == 3
    assert run(max_completion_tokens=2)[1]["choices"][0]["message"]["content"] == "Mock reply"


def test_tools_answer_with_a_call_to_the_first_tool():
    _, completion = run(tools=TOOLS)
    message = completion["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "first", "arguments": "{}"}
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {}
    assert completion["choices"][0]["finish_reason"] == "tool_calls"


def test_named_tool_choice_and_none():
    _, named = run(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "second"}})
    assert named["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "second"
    _, none = run(tools=TOOLS, tool_choice="none")
    assert none["choices"][0]["message"]["content"].startswith("Mock reply to:")


def test_n_choices():
    _, completion = run(n=2)
    assert [c["index"] for c in completion["choices"]] == [0, 1]
    assert completion["usage"]["completion_tokens"] == 14


def test_mock_is_local_and_refuses_http():
    assert MockAdapter.is_local
    with pytest.raises(UnsupportedFeature):
        MOCK.chat_request({"messages": MESSAGES}, "m", stream=False)
