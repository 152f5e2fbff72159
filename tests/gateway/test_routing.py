"""Fallback across targets for each failure class: attempts per target, time taken, response headers."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from app.errors import ProviderError
from tests.gateway.routing_setup import (
    FAST_RETRIES,
    ResettingServer,
    chat_requests,
    failing,
    flaky,
    routed_config,
    silent,
)
from tests.upstreams.openai_like import openai_like

HI = [{"role": "user", "content": "Hi"}]


def ask(gw, model: str = "smart"):
    """(completion, headers, seconds) of one non-streaming call through the SDK."""
    started = time.monotonic()
    raw = gw.sdk.chat.completions.with_raw_response.create(model=model, messages=HI)
    return raw.parse(), raw.headers, time.monotonic() - started


@pytest.mark.parametrize(
    ("status", "headers"),
    [(500, None), (502, None), (503, None), (504, None), (429, None)],
)
def test_retryable_failures_are_retried_with_backoff_then_fall_back(upstream, gateway, status, headers):
    first, second = upstream(failing(status, headers)), upstream(failing(503))
    healthy = upstream(openai_like(reply="from the third"))
    gw = gateway(routed_config(first, second, healthy, retries=FAST_RETRIES))
    completion, response_headers, took = ask(gw)
    assert completion.choices[0].message.content == "from the third"
    assert completion.model == "m-2"  # the served target's model, not the public name
    assert [len(chat_requests(s)) for s in (first, second, healthy)] == [3, 3, 1]
    # Four waits of 0.2-0.4 s (jitter, floored at 0.2 s so no target sees a tight loop).
    assert 0.8 <= took < 2.5
    assert response_headers["x-multillm-provider"] == "p2"
    assert response_headers["x-multillm-model"] == "m-2"
    assert response_headers["x-multillm-attempts"] == "7"
    assert response_headers["x-multillm-fallback"] == "true"


def test_connection_reset_before_any_byte_is_retried_then_falls_back(upstream, gateway):
    resetting = ResettingServer()
    try:
        healthy = upstream(openai_like(reply="steady"))
        gw = gateway(routed_config(resetting, healthy, retries={**FAST_RETRIES, "max_per_target": 1}))
        completion, headers, took = ask(gw)
    finally:
        resetting.stop()
    assert completion.choices[0].message.content == "steady"
    assert resetting.connections == 2 and len(chat_requests(healthy)) == 1
    assert headers["x-multillm-attempts"] == "3"
    assert 0.2 <= took < 2.0


def test_retry_after_that_fits_the_budget_is_waited_on_the_same_target(upstream, gateway):
    limited = upstream(flaky(1, 429, {"Retry-After": "1"}, reply="after the wait"))
    spare = upstream(openai_like(reply="spare"))
    gw = gateway(routed_config(limited, spare, retries=FAST_RETRIES))
    completion, headers, took = ask(gw)
    assert completion.choices[0].message.content == "after the wait"
    assert [len(chat_requests(limited)), len(chat_requests(spare))] == [2, 0]
    assert 1.0 <= took < 2.0
    assert headers["x-multillm-attempts"] == "2" and "x-multillm-fallback" not in headers


def test_retry_after_longer_than_allowed_moves_on_at_once(upstream, gateway):
    limited = upstream(failing(429, {"Retry-After": "120"}))
    spare = upstream(openai_like(reply="spare"))
    gw = gateway(routed_config(limited, spare, retries={**FAST_RETRIES, "max_retry_after": 30}))
    completion, headers, took = ask(gw)
    assert completion.choices[0].message.content == "spare"
    assert [len(chat_requests(limited)), len(chat_requests(spare))] == [1, 1]
    assert took < 0.8
    assert headers["x-multillm-fallback"] == "true"


def test_retry_after_beyond_the_request_budget_moves_on_at_once(upstream, gateway):
    limited = upstream(failing(429, {"Retry-After": "5"}))
    spare = upstream(openai_like(reply="spare"))
    gw = gateway(routed_config(limited, spare, retries=FAST_RETRIES), LLM_REQUEST_BUDGET=3.0)
    completion, _, took = ask(gw)
    assert completion.choices[0].message.content == "spare"
    assert [len(chat_requests(limited)), len(chat_requests(spare))] == [1, 1]
    assert took < 0.8


def test_silent_target_is_left_at_the_timeout_without_retry(upstream, gateway):
    slow, healthy = upstream(silent(3.0)), upstream(openai_like(reply="quick"))
    gw = gateway(routed_config(slow, healthy, retries=FAST_RETRIES), LLM_REQUEST_TIMEOUT=0.5)
    completion, headers, took = ask(gw)
    assert completion.choices[0].message.content == "quick"
    assert [len(chat_requests(slow)), len(chat_requests(healthy))] == [1, 1]
    assert 0.5 <= took < 1.5
    assert headers["x-multillm-attempts"] == "2"


def test_request_error_is_not_retried_on_the_same_target(upstream, gateway):
    rejecting = upstream(failing(400, message="unsupported parameter"))
    healthy = upstream(openai_like(reply="accepted"))
    gw = gateway(routed_config(rejecting, healthy, retries=FAST_RETRIES))
    completion, _, took = ask(gw)
    assert completion.choices[0].message.content == "accepted"
    assert [len(chat_requests(rejecting)), len(chat_requests(healthy))] == [1, 1]
    assert took < 0.8


def test_context_length_moves_to_a_target_with_a_larger_context(upstream, gateway):
    small = upstream(failing(400, code="context_length_exceeded", message="maximum context length"))
    smaller, large = upstream(openai_like(reply="small")), upstream(openai_like(reply="large"))
    windows = [{"context_window": 8000}, {"context_window": 4000}, {"context_window": 128000}]
    gw = gateway(routed_config(small, smaller, large, retries=FAST_RETRIES, target_options=windows))
    completion, headers, _ = ask(gw)
    assert completion.choices[0].message.content == "large"
    assert [len(chat_requests(s)) for s in (small, smaller, large)] == [1, 0, 1]
    assert headers["x-multillm-provider"] == "p2"


def test_context_length_without_a_larger_target_reaches_the_caller(upstream, gateway):
    small = upstream(failing(400, code="context_length_exceeded", message="maximum context length"))
    other = upstream(openai_like(reply="same size"))
    windows = [{"context_window": 8000}, {"context_window": 8000}]
    gw = gateway(routed_config(small, other, target_options=windows))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gw)
    assert caught.value.code == "context_length_exceeded"
    assert [len(chat_requests(small)), len(chat_requests(other))] == [1, 0]


def test_content_policy_rejection_reaches_the_caller_unrouted(upstream, gateway):
    strict = upstream(
        failing(400, code="content_policy_violation", message="Your request was rejected by our policy.")
    )
    lenient = upstream(openai_like(reply="anything goes"))
    gw = gateway(routed_config(strict, lenient, retries=FAST_RETRIES))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(gw)
    assert caught.value.code == "content_policy_violation"
    assert "rejected by our policy" in caught.value.message
    assert [len(chat_requests(strict)), len(chat_requests(lenient))] == [1, 0]


def test_every_target_failing_answers_the_last_failure(upstream, gateway):
    first, second = upstream(failing(500)), upstream(failing(503, message="all busy"))
    gw = gateway(routed_config(first, second, retries={**FAST_RETRIES, "max_per_target": 0}))
    with pytest.raises(openai.APIStatusError) as caught:
        ask(gw)
    assert caught.value.status_code == 503 and "all busy" in caught.value.message
    assert [len(chat_requests(first)), len(chat_requests(second))] == [1, 1]
    # The service's error carries the attempts, for usage rows and metrics of failed calls.
    with pytest.raises(ProviderError) as failed:
        gw.app.extensions["gateway"].complete_routed({"model": "smart", "messages": HI})
    attempts = failed.value.route.attempts
    assert [(a.provider, a.error) for a in attempts] == [("p0", "server"), ("p1", "overloaded")]
    assert all(a.latency is not None for a in attempts) and failed.value.route.provider is None


def test_single_target_answer_names_its_provider_without_fallback(upstream, gateway):
    only = upstream(openai_like(reply="solo"))
    gw = gateway(routed_config(only))
    _, headers, _ = ask(gw)
    assert headers["x-multillm-provider"] == "p0" and headers["x-multillm-attempts"] == "1"
    assert "x-multillm-fallback" not in headers


def test_embeddings_fall_back_too(upstream, gateway):
    broken, healthy = upstream(failing(500)), upstream(openai_like())
    gw = gateway(routed_config(broken, healthy, retries={**FAST_RETRIES, "max_per_target": 0}))
    result = gw.sdk.embeddings.create(model="smart", input=["a", "b"], encoding_format="float")
    assert len(result.data) == 2
    assert [len(broken.requests), len(healthy.requests)] == [1, 1]


def test_browsers_may_read_the_routing_headers(upstream, gateway):
    gw = gateway(routed_config(upstream(openai_like(reply="hi"))))
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "smart", "messages": HI},
        headers={"Authorization": f"Bearer {gw.token}", "Origin": "https://app.example"},
        timeout=10,
    )
    exposed = response.headers["access-control-expose-headers"].lower()
    assert response.headers["x-multillm-provider"] == "p0"
    assert all(f"x-multillm-{name}" in exposed for name in ("provider", "model", "attempts", "fallback"))


def test_random_faults_still_get_every_call_answered(upstream, gateway):
    rng = random.Random(7)
    lock = threading.Lock()
    faults = [failing(500), failing(503), failing(429), failing(502)]

    def sometimes_failing(reply: str):
        healthy = openai_like(reply=reply)

        def handler(request):
            with lock:
                fault = rng.choice(faults) if rng.random() < 0.6 else None
            return fault(request) if fault else healthy(request)

        return handler

    first, second = upstream(sometimes_failing("first")), upstream(sometimes_failing("second"))
    steady = upstream(openai_like(reply="steady"))
    retries = {"max_per_target": 1, "backoff_base": 0.2, "backoff_cap": 0.2}
    gw = gateway(routed_config(first, second, steady, retries=retries), LLM_BREAKER_FAILURES=1000)
    service = gw.app.extensions["gateway"]

    def call(_: int) -> str:
        completion, _ = service.complete_routed({"model": "smart", "messages": HI})
        return completion["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(call, range(60)))
    assert len(answers) == 60 and set(answers) <= {"first", "second", "steady"}
    # Every call was answered once: by the first target, else the second, else the steady one.
    served_by_first = answers.count("first")
    assert 0 < served_by_first < 60 and answers.count("steady") > 0
    assert len(chat_requests(steady)) == answers.count("steady")
