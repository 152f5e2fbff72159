"""One usage row per LLM call: chat, stream, embeddings, compare; failed, cut and abandoned calls too."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import UsageRecord
from tests.conftest import bearer
from tests.gateway.conftest import PROVIDER_KEY, provider_config
from tests.gateway.test_streaming import slow_stream
from tests.upstreams.openai_like import openai_like

HI = [{"role": "user", "content": "hello there"}]
PRICED = {"input_price": 2.0, "output_price": 4.0}


def rows(app) -> list[UsageRecord]:
    app.extensions["usage_writer"].flush()
    with app.app_context():
        found = list(db.session.scalars(select(UsageRecord).order_by(UsageRecord.id)))
        db.session.expunge_all()
        return found


def wait_rows(app, count: int, timeout: float = 5.0) -> list[UsageRecord]:
    deadline = time.monotonic() + timeout
    while True:
        found = rows(app)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def priced_config(base_url: str) -> dict:
    config = provider_config("p", "openai", base_url + "/v1")
    config["models"] = {
        "priced": {"provider": "p", "model": "m-1", **PRICED},
        "mock-priced": {"provider": "mock", "model": "echo-1", **PRICED},
    }
    return config


def test_chat_row_has_who_what_tokens_cost_and_request_id(upstream, gateway):
    standin = upstream(openai_like(reply="one two three"))
    gw = gateway(priced_config(standin.url))
    raw = gw.sdk.chat.completions.with_raw_response.create(model="priced", messages=HI)
    completion = raw.parse()
    [row] = rows(gw.app)
    assert (row.endpoint, row.model, row.provider, row.upstream_model) == ("chat", "priced", "p", "m-1")
    assert row.prompt_tokens == completion.usage.prompt_tokens == 5
    assert row.completion_tokens == completion.usage.completion_tokens == 3
    assert row.tokens_estimated is False
    assert row.cost_usd == pytest.approx((5 * 2.0 + 3 * 4.0) / 1_000_000)
    assert row.status == "ok" and row.error_code is None
    assert row.request_id == raw.headers["x-request-id"]
    assert row.api_key_id is None and row.latency_ms >= 0


def test_unpriced_model_has_no_cost(gateway):
    gw = gateway()
    gw.sdk.chat.completions.create(model="mock/echo-1", messages=HI)
    [row] = rows(gw.app)
    assert row.cost_usd is None and row.provider == "mock" and row.prompt_tokens == 2


def test_stream_row_recorded_when_it_ends_with_time_to_first_token(gateway, models_file):
    gw = gateway({"models": {"mock-priced": {"provider": "mock", "model": "echo-1", **PRICED}}})
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in gw.sdk.chat.completions.create(model="mock-priced", messages=HI, stream=True)
        if chunk.choices
    )
    assert text == "Mock reply to: hello there"
    [row] = wait_rows(gw.app, 1)
    assert row.endpoint == "stream" and row.status == "ok"
    assert (row.prompt_tokens, row.completion_tokens) == (2, 5)
    assert row.time_to_first_token_ms is not None and row.time_to_first_token_ms <= row.latency_ms
    assert row.cost_usd == pytest.approx((2 * 2.0 + 5 * 4.0) / 1_000_000)


def test_a_stream_cut_after_its_usage_is_billed_on_that_usage(upstream, gateway):
    standin = upstream(openai_like(reply="one two three", send_done=False))
    gw = gateway(priced_config(standin.url))
    chunks = list(
        gw.sdk.chat.completions.create(
            model="priced", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    [row] = wait_rows(gw.app, 1)
    assert row.status == "ok" and not row.tokens_estimated
    assert (row.prompt_tokens, row.completion_tokens) == (5, 3)


def test_failed_provider_call_is_recorded_as_failed_and_not_billed(upstream, gateway):
    failing = upstream(openai_like(fail_status=500, fail_body={"error": {"message": "boom"}}))
    gw = gateway(priced_config(failing.url))
    with pytest.raises(openai.InternalServerError):
        gw.sdk.chat.completions.create(model="priced", messages=HI)
    with pytest.raises(openai.InternalServerError):
        gw.sdk.chat.completions.create(model="priced", messages=HI, stream=True)
    found = wait_rows(gw.app, 2)
    assert [(r.endpoint, r.status, r.error_code) for r in found] == [
        ("chat", "error", "server"),
        ("stream", "error", "server"),
    ]
    assert all(r.prompt_tokens == 0 and r.completion_tokens == 0 and not r.cost_usd for r in found)


def test_cut_stream_is_recorded_with_the_tokens_seen_so_far(upstream, gateway):
    standin = upstream(openai_like(reply="a b c d e f", cut_after=3))
    gw = gateway(priced_config(standin.url))
    with pytest.raises(openai.APIError):
        for _ in gw.sdk.chat.completions.create(model="priced", messages=HI, stream=True):
            pass
    [row] = wait_rows(gw.app, 1)
    assert row.status == "error" and row.error_code == "stream_interrupted"
    assert row.tokens_estimated is True and row.completion_tokens >= 1
    assert row.cost_usd > 0


def test_client_gone_mid_stream_is_recorded_as_client_closed(upstream, gateway):
    closed = threading.Event()
    standin = upstream(slow_stream(gap=0.2, words=50, closed=closed))
    gw = gateway(priced_config(standin.url))
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json={"model": "priced", "messages": HI, "stream": True},
        headers=bearer(gw.token),
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if '"w1 "' in line:
                break
    [row] = wait_rows(gw.app, 1, timeout=10)
    assert row.status == "client_closed"
    assert row.completion_tokens >= 1 and row.tokens_estimated is True


def test_embeddings_and_api_key_are_recorded(upstream, gateway):
    standin = upstream(openai_like())
    gw = gateway(priced_config(standin.url))
    created = gw.app.test_client().post("/api/keys", json={"name": "k"}, headers=bearer(gw.token))
    key = created.get_json()
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key["key"], max_retries=0)
    client.embeddings.create(model="p/e-1", input=["a", "b"])
    [row] = rows(gw.app)
    assert (row.endpoint, row.model, row.upstream_model) == ("embeddings", "p/e-1", "e-1")
    assert row.api_key_id == key["id"] and row.prompt_tokens == 2 and row.completion_tokens == 0


def test_compare_records_one_row_per_model(upstream, gateway):
    standin = upstream(openai_like(reply="x y"))
    failing = upstream(openai_like(fail_status=503, fail_body={"error": {"message": "busy"}}))
    config = priced_config(standin.url)
    config["providers"]["bad"] = {"type": "openai", "base_url": failing.url + "/v1", "api_key": PROVIDER_KEY}
    gw = gateway(config)
    response = gw.app.test_client().post(
        "/api/llm/compare",
        json={"models": ["priced", "mock/echo-1", "bad/m"], "messages": HI},
        headers=bearer(gw.token),
    )
    assert response.status_code == 200
    found = sorted(rows(gw.app), key=lambda r: r.model)
    assert [(r.model, r.endpoint, r.status) for r in found] == [
        ("bad/m", "compare", "error"),
        ("mock/echo-1", "compare", "ok"),
        ("priced", "compare", "ok"),
    ]
    assert found[2].completion_tokens == 2 and found[2].cost_usd > 0
    assert found[0].completion_tokens == 0


def test_unknown_model_writes_no_row(gateway):
    gw = gateway()
    with pytest.raises(openai.NotFoundError):
        gw.sdk.chat.completions.create(model="nope/none", messages=HI)
    assert rows(gw.app) == []


def test_a_well_known_model_is_priced_without_configuration(upstream, gateway):
    standin = upstream(openai_like(reply="one two three"))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    gw.sdk.chat.completions.create(model="p/gpt-4o-mini", messages=HI)
    [row] = rows(gw.app)
    assert row.cost_usd == pytest.approx((5 * 0.15 + 3 * 0.60) / 1_000_000)  # the built-in table
