from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion

from app.errors import ProviderError
from app.providers.aggregate import collect_completion
from app.providers.base import ProviderSettings
from app.providers.openai_compatible import OpenAICompatibleAdapter
from tests.providers import wire
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Upstream

CHAT = {"model": "local", "messages": [{"role": "user", "content": "Hi"}]}
LOCAL = ProviderSettings(name="my-llama", base_url="http://127.0.0.1:8080/v1")


def lines(*chunks: dict) -> list[str]:
    out = []
    for chunk in chunks:
        out += ["data: " + json.dumps(chunk), ""]
    return out


def chunk(index: int, content: str | None, finish: str | None = None) -> dict:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def test_key_is_optional():
    request = OpenAICompatibleAdapter(LOCAL).chat_request(CHAT, "qwen", stream=False)
    assert "Authorization" not in request.headers
    keyed = ProviderSettings(name="vllm", base_url="http://h/v1", api_key="k")
    assert (
        OpenAICompatibleAdapter(keyed).chat_request(CHAT, "q", stream=False).headers["Authorization"]
        == "Bearer k"
    )


def test_finish_reason_without_done_counts_as_finished():
    out = list(
        OpenAICompatibleAdapter(LOCAL).parse_stream(lines(chunk(0, "Hi"), chunk(0, None, "stop")), "m")
    )
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_unfinished_choice_without_done_is_interrupted():
    body = lines(chunk(0, "a"), chunk(1, "b"), chunk(0, None, "stop"))
    with pytest.raises(ProviderError) as info:
        list(OpenAICompatibleAdapter(LOCAL).parse_stream(body, "m"))
    assert info.value.kind == "stream_interrupted"


def test_against_stand_in_without_done():
    with Upstream(openai_like(reply="x y", send_done=False, usage_on_last_chunk=True)) as up:
        adapter = OpenAICompatibleAdapter(ProviderSettings(name="llama", base_url=up.url + "/v1"))
        chunks = wire.stream(adapter, CHAT, "qwen")
        assert "Authorization" not in up.last.headers
    folded = collect_completion(chunks, "qwen")
    ChatCompletion.model_validate(folded)
    assert folded["choices"][0]["message"]["content"] == "x y"
    assert chunks[-1]["choices"] == [] and folded["usage"]["total_tokens"] == 7


def test_against_stand_in_cut_stream_still_interrupted():
    with Upstream(openai_like(reply="x y z", cut_after=1)) as up:
        adapter = OpenAICompatibleAdapter(ProviderSettings(name="llama", base_url=up.url))
        with pytest.raises(ProviderError) as info:
            wire.stream(adapter, CHAT, "qwen")
    assert info.value.kind == "stream_interrupted"


def test_developer_role_and_max_completion_tokens_use_older_names():
    chat = {
        "messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}],
        "max_completion_tokens": 9,
    }
    body = OpenAICompatibleAdapter(LOCAL).chat_request(chat, "q", stream=False).json
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["max_tokens"] == 9 and "max_completion_tokens" not in body
