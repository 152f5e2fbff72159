"""The circuit breaker: opens after N consecutive failures, skips the target, lets one trial through
after the cool-down, closes on its success; in-process and shared through a real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.services.gateway.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerSettings,
    MemoryBreaker,
)
from app.services.gateway.redis_breaker import RedisBreaker
from tests.conftest import _require
from tests.gateway.conftest import Gateway
from tests.gateway.routing_setup import chat_requests, routed_config, switchable
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import LiveServer

COOLDOWN = 0.3


@pytest.fixture(params=["memory", "redis"])
def breaker(request: pytest.FixtureRequest):
    settings = BreakerSettings(failures=3, cooldown=COOLDOWN)
    if request.param == "memory":
        return MemoryBreaker(settings)
    client = redis.Redis.from_url(_require("TEST_REDIS_URL"))
    # A prefix of its own: other sessions may share this Redis database.
    return RedisBreaker(client, settings, prefix=f"test-breaker-{uuid.uuid4().hex}:")


def test_opens_after_consecutive_failures_and_skips(breaker):
    for _ in range(2):
        breaker.failure("p/m")
        assert breaker.allow("p/m") and breaker.state("p/m") == CLOSED
    breaker.failure("p/m")
    assert breaker.state("p/m") == OPEN
    assert not breaker.allow("p/m")
    assert breaker.allow("other/m")  # one target's breaker is its own


def test_a_success_resets_the_count_of_consecutive_failures(breaker):
    breaker.failure("p/m")
    breaker.failure("p/m")
    breaker.success("p/m")
    breaker.failure("p/m")
    breaker.failure("p/m")
    assert breaker.allow("p/m") and breaker.state("p/m") == CLOSED


def test_half_open_lets_one_trial_through_and_its_success_closes(breaker):
    for _ in range(3):
        breaker.failure("p/m")
    time.sleep(COOLDOWN + 0.05)
    assert breaker.state("p/m") == HALF_OPEN
    assert breaker.allow("p/m")  # the trial
    assert not breaker.allow("p/m")  # everyone else waits for its outcome
    breaker.success("p/m")
    assert breaker.state("p/m") == CLOSED and breaker.allow("p/m") and breaker.allow("p/m")


def test_a_failed_trial_opens_it_again_for_another_cooldown(breaker):
    for _ in range(3):
        breaker.failure("p/m")
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("p/m")
    breaker.failure("p/m")
    assert breaker.state("p/m") == OPEN and not breaker.allow("p/m")
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("p/m")


def test_a_lost_trial_is_replaced_after_a_cooldown(breaker):
    for _ in range(3):
        breaker.failure("p/m")
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("p/m")  # this trial never reports back
    time.sleep(COOLDOWN + 0.05)
    assert breaker.allow("p/m")


def test_only_one_of_many_concurrent_callers_gets_the_trial(breaker):
    for _ in range(3):
        breaker.failure("p/m")
    time.sleep(COOLDOWN + 0.05)
    start = threading.Barrier(20)

    def try_once(_: int) -> bool:
        start.wait()
        return breaker.allow("p/m")

    with ThreadPoolExecutor(20) as pool:
        assert sum(pool.map(try_once, range(20))) == 1


def test_redis_outage_lets_traffic_through():
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    breaker = RedisBreaker(dead, BreakerSettings(failures=1, cooldown=60))
    breaker.failure("p/m")
    assert breaker.allow("p/m") and breaker.state("p/m") == CLOSED


def ask(gw):
    raw = gw.sdk.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "Hi"}]
    )
    return raw.parse().choices[0].message.content, raw.headers


def test_breaker_through_the_gateway_opens_skips_half_opens_and_closes(upstream, gateway):
    handler, primary_state = switchable(reply="primary")
    primary, secondary = upstream(handler), upstream(openai_like(reply="secondary"))
    gw = gateway(
        routed_config(primary, secondary, retries={"max_per_target": 0}),
        LLM_BREAKER_FAILURES=2,
        LLM_BREAKER_COOLDOWN=0.5,
    )
    for _ in range(2):
        assert ask(gw)[0] == "secondary"
    assert len(chat_requests(primary)) == 2  # two consecutive failures open it
    text, headers = ask(gw)
    assert text == "secondary" and len(chat_requests(primary)) == 2  # skipped, not asked
    assert headers["x-multillm-attempts"] == "1" and headers["x-multillm-fallback"] == "true"
    assert breaker_gauges(gw) == {"open": 2.0, "closed": 0.0}

    time.sleep(0.6)  # past the cool-down, the primary has recovered
    primary_state["down"] = False
    text, headers = ask(gw)
    assert text == "primary" and len(chat_requests(primary)) == 3  # the half-open trial
    assert "x-multillm-fallback" not in headers
    assert ask(gw)[0] == "primary" and len(chat_requests(primary)) == 4  # closed again
    assert breaker_gauges(gw) == {"open": 0.0, "closed": 0.0}


def breaker_gauges(gw) -> dict[str, float]:
    """/metrics' llm_breaker_state of the primary ("open") and the secondary ("closed") targets."""
    text = gw.app.test_client().get("/metrics").get_data(as_text=True)
    values = {}
    for line in text.splitlines():
        if line.startswith("llm_breaker_state{"):
            label = line.split('target="', 1)[1].split('"', 1)[0]
            values[label] = float(line.rsplit(" ", 1)[1])
    primary = values["p0/m-0"]
    secondary = values["p1/m-1"]
    return {"open": primary, "closed": secondary}


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_breaker_state_is_shared_by_two_instances_through_redis(upstream, gateway, make_app):
    handler, primary_state = switchable(reply="primary")
    primary, secondary = upstream(handler), upstream(openai_like(reply="secondary"))
    config = routed_config(primary, secondary, retries={"max_per_target": 0})
    settings = {"LLM_BREAKER_FAILURES": 2, "LLM_BREAKER_COOLDOWN": 0.6}
    first = gateway(config, **settings)
    # A second instance of the same deployment: its own process state, the same database and Redis.
    second_app = make_app(**settings, MODELS_CONFIG=first.app.config["MODELS_CONFIG"])
    server = LiveServer(second_app).start()
    second = Gateway(second_app, server, first.token)
    assert isinstance(second.app.extensions["gateway"].router.breaker, RedisBreaker)
    for _ in range(2):
        assert ask(first)[0] == "secondary"
    assert len(chat_requests(primary)) == 2
    # The other instance has never seen the primary fail, yet skips it.
    assert ask(second)[0] == "secondary" and len(chat_requests(primary)) == 2
    time.sleep(0.7)
    primary_state["down"] = False
    assert ask(second)[0] == "primary"  # the trial, on the second instance
    assert ask(first)[0] == "primary"  # closed for the first one too
    assert len(chat_requests(primary)) == 4
    server.stop()
