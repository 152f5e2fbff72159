from __future__ import annotations

from openai.types.chat import ChatCompletion

from app.providers.aggregate import collect_completion


def chunk(choices: list[dict], **extra) -> dict:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "gpt-x",
        "choices": choices,
        **extra,
    }


def delta(index: int, finish: str | None = None, **d) -> dict:
    return {"index": index, "delta": d, "finish_reason": finish}


def test_content_joined_per_choice_and_usage_kept():
    chunks = [
        chunk([delta(0, role="assistant", content=""), delta(1, role="assistant", content="")]),
        chunk([delta(1, content="B1")]),
        chunk([delta(0, content="A1")]),
        chunk([delta(0, content=" A2")]),
        chunk([delta(0, "stop"), delta(1, "length")]),
        chunk([], usage={"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}),
    ]
    out = collect_completion(chunks, "fallback")
    ChatCompletion.model_validate(out)
    assert out["id"] == "chatcmpl-9" and out["created"] == 5 and out["model"] == "gpt-x"
    assert out["object"] == "chat.completion"
    assert [c["message"]["content"] for c in out["choices"]] == ["A1 A2", "B1"]
    assert [c["finish_reason"] for c in out["choices"]] == ["stop", "length"]
    assert out["usage"]["total_tokens"] == 4


def test_tool_call_fragments_joined_by_index():
    call0 = {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
    call1 = {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": '{"y"'}}
    chunks = [
        chunk([delta(0, role="assistant", tool_calls=[call0])]),
        chunk([delta(0, tool_calls=[{"index": 0, "function": {"arguments": '{"x":'}}, call1])]),
        chunk([delta(0, tool_calls=[{"index": 1, "function": {"arguments": ": 2}"}}])]),
        chunk([delta(0, tool_calls=[{"index": 0, "function": {"arguments": " 1}"}}])]),
        chunk([delta(0, "tool_calls")]),
    ]
    out = collect_completion(chunks, "m")
    ChatCompletion.model_validate(out)
    message = out["choices"][0]["message"]
    assert message["content"] is None
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("call_a", "f", '{"x": 1}'),
        ("call_b", "g", '{"y": 2}'),
    ]
    assert out["usage"] is None


def test_empty_reply_and_model_fallback():
    out = collect_completion([{"id": "", "choices": [delta(0, "stop", role="assistant")]}], "fallback")
    ChatCompletion.model_validate(out)
    assert out["model"] == "fallback"
    assert out["choices"][0]["message"]["content"] == ""


def test_refusal_and_system_fingerprint():
    chunks = [chunk([delta(0, refusal="I can't")], system_fingerprint="fp_1"), chunk([delta(0, "stop")])]
    out = collect_completion(chunks, "m")
    ChatCompletion.model_validate(out)
    assert out["choices"][0]["message"]["refusal"] == "I can't"
    assert out["system_fingerprint"] == "fp_1"
