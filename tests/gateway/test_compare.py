from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway.conftest import PROVIDER_KEY
from tests.gateway.test_streaming import slow_stream
from tests.upstreams.openai_like import openai_like


def compare(gw, body: dict) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/api/llm/compare", json=body, headers={"Authorization": f"Bearer {gw.token}"}, timeout=20
    )


def test_compare_runs_models_concurrently_and_isolates_failures(upstream, gateway):
    slow = upstream(slow_stream(first_delay=0.6, words=3))
    slow_too = upstream(slow_stream(first_delay=0.6, words=2))
    failing = upstream(openai_like(fail_status=500, fail_body={"error": {"message": "boom"}}))
    config = {
        "providers": {
            name: {"type": "openai", "base_url": server.url + "/v1", "api_key": PROVIDER_KEY}
            for name, server in (("slow", slow), ("slow2", slow_too), ("bad", failing))
        },
        "models": {"priced": {"provider": "slow", "model": "m-1", "input_price": 1.0, "output_price": 2.0}},
    }
    # The failing model's retries (backoff between them) would outlast the slow ones; they are not the point.
    gw = gateway(config, LLM_MAX_RETRIES_PER_TARGET=0)
    started = time.monotonic()
    response = compare(
        gw,
        {
            "models": ["priced", "slow2/m-2", "bad/m-3", "mock/echo-1"],
            "messages": [{"role": "user", "content": "compare me"}],
            "temperature": 0.2,
        },
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["model"] for r in results] == ["priced", "slow2/m-2", "bad/m-3", "mock/echo-1"]
    priced, slow2, bad, mock = results
    assert priced["content"] == "w0 w1 w2 " and priced["finish_reason"] == "stop" and priced["error"] is None
    assert slow2["content"] == "w0 w1 "
    assert (
        priced["time_to_first_token_ms"] >= 500 and priced["latency_ms"] >= priced["time_to_first_token_ms"]
    )
    assert bad["error"]["status"] == 502 and bad["content"] is None
    assert mock["content"] == "Mock reply to: compare me" and mock["usage"]["total_tokens"] > 0
    # Two 0.6 s models side by side take about 0.6 s, not 1.2 s.
    assert elapsed < 1.1
    assert mock["cost"] is None


def test_compare_prices_usage_when_the_model_is_priced(upstream, gateway):
    standin = upstream(openai_like(reply="a b c"))
    config = {
        "providers": {"p": {"type": "openai", "base_url": standin.url + "/v1", "api_key": PROVIDER_KEY}},
        "models": {"priced": {"provider": "p", "model": "m", "input_price": 1.0, "output_price": 2.0}},
    }
    gw = gateway(config)
    response = compare(
        gw, {"models": ["priced", "mock/echo-1"], "messages": [{"role": "user", "content": "x"}]}
    )
    priced = response.json()["results"][0]
    usage = priced["usage"]
    assert priced["cost"] == (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1_000_000


def test_compare_validation(gateway):
    gw = gateway()
    headers = {"Authorization": f"Bearer {gw.token}"}
    messages = [{"role": "user", "content": "x"}]
    for models in (["mock/echo-1"], ["a"] * 9, ["mock/echo-1", "mock/echo-1"]):
        response = httpx.post(
            f"{gw.url}/api/llm/compare", json={"models": models, "messages": messages}, headers=headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"
    assert (
        httpx.post(f"{gw.url}/api/llm/compare", json={"models": ["a", "b"], "messages": messages}).status_code
        == 401
    )


def test_an_unknown_model_fails_in_its_own_slot(gateway):
    gw = gateway()
    response = compare(
        gw, {"models": ["mock/echo-1", "nope/x"], "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200
    known, unknown = response.json()["results"]
    assert known["content"] == "Mock reply to: hi" and known["error"] is None
    assert unknown["model"] == "nope/x" and unknown["content"] is None
    assert unknown["error"]["code"] == "model_not_found" and unknown["error"]["status"] == 404


def test_a_well_known_model_is_priced_as_its_usage_row(upstream, gateway):
    standin = upstream(openai_like(reply="one two three"))
    config = {
        "providers": {"p": {"type": "openai", "base_url": standin.url + "/v1", "api_key": PROVIDER_KEY}}
    }
    gw = gateway(config)
    response = compare(
        gw, {"models": ["p/gpt-4o-mini", "mock/echo-1"], "messages": [{"role": "user", "content": "x"}]}
    )
    priced = response.json()["results"][0]
    usage = priced["usage"]
    # No price in the configuration: the built-in table's gpt-4o-mini prices, as the usage row has them.
    expected = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1_000_000
    assert priced["cost"] == pytest.approx(expected) and priced["cost"] > 0


def test_n_choices_are_reserved_for_every_model(gateway):
    gw = gateway(LLM_DEFAULT_TPM=100)  # two models of one 5-token choice fit; of eight choices they do not
    body = {"models": ["mock/echo-1", "mock/echo-2"], "messages": [{"role": "user", "content": "x"}]}
    assert compare(gw, {**body, "max_tokens": 5, "n": 8}).status_code == 429
    assert compare(gw, {**body, "max_tokens": 5}).status_code == 200
