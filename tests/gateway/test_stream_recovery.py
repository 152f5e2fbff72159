"""Streams across targets: a restart before the first chunk, a continuation after it, an honest end when
no target can continue."""

from __future__ import annotations

import json
import time

import httpx

from tests.gateway.routing_setup import (
    chat_requests,
    empty_stream,
    failing,
    prefill_continuer,
    routed_config,
)
from tests.gateway.test_streaming import slow_stream
from tests.upstreams.openai_like import openai_like

FULL = "one two three four five"
NO_RETRY = {"max_per_target": 0}


def stream(gw, model: str = "smart") -> tuple[httpx.Headers, list[str]]:
    """The response headers and the data lines of one streamed call."""
    payload = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {gw.token}"},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        lines = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
        return response.headers, lines


def text_of(events: list[str]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if event != "[DONE]"
        for choice in json.loads(event).get("choices") or []
    )


def test_cut_before_the_first_chunk_restarts_on_the_fallback(upstream, gateway):
    cut, healthy = upstream(empty_stream()), upstream(openai_like(reply=FULL))
    gw = gateway(routed_config(cut, healthy, retries=NO_RETRY))
    headers, events = stream(gw)
    assert events[-1] == "[DONE]" and text_of(events) == FULL
    assert [len(chat_requests(cut)), len(chat_requests(healthy))] == [1, 1]
    assert headers["x-multillm-provider"] == "p1" and headers["x-multillm-fallback"] == "true"
    assert headers["x-multillm-attempts"] == "2"


def test_error_status_before_the_first_chunk_restarts_on_the_fallback(upstream, gateway):
    broken, healthy = upstream(failing(503)), upstream(openai_like(reply=FULL))
    gw = gateway(routed_config(broken, healthy, retries=NO_RETRY))
    _, events = stream(gw)
    assert text_of(events) == FULL and events[-1] == "[DONE]"


def test_sdk_sees_one_whole_answer_when_a_prefill_target_continues(upstream, gateway):
    cut = upstream(openai_like(reply=FULL, cut_after=2))  # sends "one two", then the body ends
    continuer = upstream(prefill_continuer(FULL))
    gw = gateway(
        routed_config(cut, continuer, retries=NO_RETRY, target_options=[{}, {"accepts_prefill": True}])
    )
    chunks = list(
        gw.sdk.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FULL
    assert len({c.id for c in chunks}) == 1  # one answer, one id
    sent = chat_requests(continuer)[0].json["messages"]
    assert sent[-1] == {"role": "assistant", "content": "one two"}
    assert sent[:-1] == [{"role": "user", "content": "Hi"}]


def test_continuation_streams_only_the_rest_and_ends_with_done(upstream, gateway):
    cut = upstream(openai_like(reply=FULL, cut_after=3))
    continuer = upstream(prefill_continuer(FULL))
    gw = gateway(
        routed_config(cut, continuer, retries=NO_RETRY, target_options=[{}, {"accepts_prefill": True}])
    )
    headers, events = stream(gw)
    assert events[-1] == "[DONE]" and text_of(events) == FULL
    # The headers went out with the first chunk: they name the target that started the answer.
    assert headers["x-multillm-provider"] == "p0"
    roles = [
        c["delta"]["role"] for e in events[:-1] for c in json.loads(e)["choices"] if c["delta"].get("role")
    ]
    assert roles == ["assistant"]


def test_target_without_prefill_restarts_and_only_the_rest_is_streamed(upstream, gateway):
    cut = upstream(openai_like(reply=FULL, cut_after=2))
    restarter = upstream(openai_like(reply=FULL))  # deterministic: reproduces the same text
    gw = gateway(routed_config(cut, restarter, retries=NO_RETRY))
    _, events = stream(gw)
    assert events[-1] == "[DONE]" and text_of(events) == FULL
    assert chat_requests(restarter)[0].json["messages"] == [{"role": "user", "content": "Hi"}]


def test_a_diverging_restart_is_abandoned_for_the_next_target(upstream, gateway):
    cut = upstream(openai_like(reply=FULL, cut_after=2))
    diverging = upstream(openai_like(reply="entirely different words here"))
    continuer = upstream(prefill_continuer(FULL))
    options = [{}, {}, {"accepts_prefill": True}]
    gw = gateway(routed_config(cut, diverging, continuer, retries=NO_RETRY, target_options=options))
    _, events = stream(gw)
    assert text_of(events) == FULL and events[-1] == "[DONE]"
    assert [len(chat_requests(s)) for s in (cut, diverging, continuer)] == [1, 1, 1]


def test_no_target_able_to_continue_ends_with_the_original_failure(upstream, gateway):
    cut = upstream(openai_like(reply=FULL, cut_after=2))
    # It accepts prefills on paper but rejects this one: its 400 must not replace the original failure.
    rejecting = upstream(failing(400, message="prefill not supported"))
    diverging = upstream(openai_like(reply="something else"))
    options = [{}, {"accepts_prefill": True}, {}]
    gw = gateway(routed_config(cut, rejecting, diverging, retries=NO_RETRY, target_options=options))
    _, events = stream(gw)
    assert "[DONE]" not in events
    assert text_of(events[:-1]) == "one two"
    error = json.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted"
    assert "prefill" not in error["message"]
    assert [len(chat_requests(s)) for s in (cut, rejecting, diverging)] == [1, 1, 1]


def test_stalled_stream_continues_on_the_next_target(upstream, gateway):
    stalling = upstream(slow_stream(gap=3.0, words=3))  # "w0 ", then silence
    continuer = upstream(prefill_continuer("w0 w1 w2 "))
    gw = gateway(
        routed_config(stalling, continuer, retries=NO_RETRY, target_options=[{}, {"accepts_prefill": True}]),
        LLM_STREAM_IDLE_TIMEOUT=0.5,
        LLM_STREAM_HEARTBEAT=0.2,
    )
    started = time.monotonic()
    _, events = stream(gw)
    assert time.monotonic() - started < 2.5
    assert events[-1] == "[DONE]" and text_of(events) == "w0 w1 w2 "
    # The prefill leaves out the trailing space (Anthropic refuses one); the space is not doubled.
    assert chat_requests(continuer)[0].json["messages"][-1] == {"role": "assistant", "content": "w0"}


def test_no_first_token_in_time_moves_to_the_next_target(upstream, gateway):
    slow, healthy = upstream(slow_stream(first_delay=3.0)), upstream(openai_like(reply=FULL))
    gw = gateway(routed_config(slow, healthy), LLM_FIRST_TOKEN_TIMEOUT=0.5)
    started = time.monotonic()
    headers, events = stream(gw)
    assert time.monotonic() - started < 1.8
    assert text_of(events) == FULL and headers["x-multillm-provider"] == "p1"
    assert len(chat_requests(slow)) == 1  # a silent target is not retried


def test_stream_with_a_finish_reason_but_no_done_is_whole(upstream, gateway):
    nodone = upstream(openai_like(reply=FULL, send_done=False))
    spare = upstream(openai_like(reply="spare"))
    gw = gateway(routed_config(nodone, spare, retries=NO_RETRY))
    _, events = stream(gw)
    assert events[-1] == "[DONE]" and text_of(events) == FULL
    assert len(chat_requests(spare)) == 0
