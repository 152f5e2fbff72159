"""Two instances as separate processes sharing one PostgreSQL and one Redis: limits, revocations, keys,
circuit breakers and budgets hold across them. Runs on the PostgreSQL+Redis backend only."""

from __future__ import annotations

import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from scripts.cluster import free_port, start_instance, stop, wait_healthy
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Upstream

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
def launch(make_app, backend, tmp_path):
    """Start two instances, with extra environment on top of the shared one; stopped after the test."""
    make_app()  # a fresh schema in the test database
    processes = []

    def start(**extra: str) -> list[str]:
        env = {
            **os.environ,
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_hex(32),
            "JWT_SECRET_KEY": secrets.token_hex(32),
            "DATABASE_URL": backend["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": backend["REDIS_URL"],
            "RATE_LIMIT_STORAGE_URL": backend["REDIS_URL"],
            "RATE_LIMIT_PER_MINUTE": "10",
            "AUTH_RATE_LIMIT": "1000 per minute",
            "GUNICORN_WORKERS": "1",
            "LOG_LEVEL": "WARNING",
            **extra,
        }
        ports = [free_port(), free_port()]
        processes.extend(start_instance(port, env, tmp_path / f"{port}.log") for port in ports)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            wait_healthy(url)
        return urls

    try:
        yield start
    finally:
        stop(processes)


@pytest.fixture
def instances(launch):
    return launch()


def signup(url: str, name: str = "shared") -> str:
    body = {"username": name, "email": f"{name}@example.com", "password": "Shared-Pass-123"}
    assert httpx.post(f"{url}/api/auth/register", json=body).status_code == 201
    login = httpx.post(f"{url}/api/auth/login", json={"username": name, "password": body["password"]})
    return login.json()["access_token"]


def test_a_limit_of_10_a_minute_lets_10_through_in_total(instances):
    headers = {"Authorization": f"Bearer {signup(instances[0])}"}
    statuses = [
        httpx.get(f"{url}/api/profile", headers=headers).status_code for _ in range(10) for url in instances
    ]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 10


def test_logout_through_one_is_refused_by_the_other(instances):
    first, second = instances
    token = signup(first)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{second}/api/profile", headers=headers).status_code == 200
    assert httpx.post(f"{first}/api/auth/logout", headers=headers).status_code == 200
    assert httpx.get(f"{second}/api/profile", headers=headers).status_code == 401


def test_a_key_revoked_through_one_is_refused_by_the_other_within_a_second(instances):
    first, second = instances
    token = signup(first)
    created = httpx.post(
        f"{first}/api/keys", json={"name": "shared"}, headers={"Authorization": f"Bearer {token}"}
    )
    key = created.json()["key"]
    key_headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{second}/api/profile", headers=key_headers).status_code == 200  # now cached there
    revoked = httpx.delete(
        f"{first}/api/keys/{created.json()['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert revoked.status_code == 200
    deadline = time.monotonic() + 1.0
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = httpx.get(f"{second}/api/profile", headers=key_headers).status_code
    assert status == 401


def models_file(tmp_path, models: dict) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(models))
    return str(path)


def test_a_breaker_opened_through_one_instance_is_open_on_the_other(launch, tmp_path):
    failing = Upstream(openai_like(fail_status=500, fail_body={"error": {"message": "down"}})).start()
    try:
        config = {
            "providers": {"flaky": {"type": "openai_compatible", "base_url": failing.url + "/v1"}},
            "models": {"fragile": {"provider": "flaky", "model": "m", "retries": {"max_per_target": 0}}},
        }
        first, second = launch(
            MODELS_CONFIG=models_file(tmp_path, config),
            LLM_BREAKER_FAILURES="3",
            LLM_BREAKER_COOLDOWN="60",
        )
        headers = {"Authorization": f"Bearer {signup(first)}"}
        body = {"model": "fragile", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            assert httpx.post(f"{first}/v1/chat/completions", json=body, headers=headers).status_code == 502
        assert len(failing.requests) == 3

        refused = httpx.post(f"{second}/v1/chat/completions", json=body, headers=headers)
        assert refused.status_code == 503  # failing fast: every target's breaker is open
        assert "every target of 'fragile' is failing" in refused.json()["error"]["message"]
        assert len(failing.requests) == 3  # the second instance never called the failing target
        metrics = httpx.get(f"{second}/metrics").text
        assert 'llm_breaker_state{target="flaky/m"} 2.0' in metrics  # 2: open
    finally:
        failing.stop()


BUDGET = 0.5  # USD a day; each call below costs $0.007 (7 tokens at $1000 a million)


def test_a_budget_spent_through_both_instances_at_once_is_not_overshot(launch, tmp_path):
    priced = {"provider": "mock", "model": "echo-1", "input_price": 1000.0, "output_price": 1000.0}
    urls = launch(
        MODELS_CONFIG=models_file(tmp_path, {"models": {"priced": priced}}),
        LLM_DEFAULT_DAILY_BUDGET_USD=str(BUDGET),
        RATE_LIMIT_PER_MINUTE="1000",
    )
    headers = {"Authorization": f"Bearer {signup(urls[0])}"}
    # max_tokens is sent, so the documented overshoot bound (app/services/limits.py) is zero.
    body = {"model": "priced", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
    start = threading.Barrier(100)

    def call(n: int) -> int:
        start.wait()
        return httpx.post(
            f"{urls[n % 2]}/v1/chat/completions", json=body, headers=headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(call, range(100)))
    assert set(statuses) <= {200, 402}
    admitted = statuses.count(200)
    assert 1 <= admitted < 100  # $0.70 asked of a $0.50 budget

    # Read through the other instance: GET /api/usage first writes what the stream holds.
    usage = httpx.get(f"{urls[1]}/api/usage", headers=headers).json()["totals"]
    assert usage["requests"] == admitted
    assert usage["cost_usd"] == pytest.approx(admitted * 0.007)
    assert usage["cost_usd"] <= BUDGET
