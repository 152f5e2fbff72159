"""Limits per user and per key: 429 with Retry-After for rates, 402 budget_exceeded for spend, checked
before the provider is called; atomic under concurrency; shared across instances through Redis."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from app.extensions import db
from app.models import UsageRecord
from app.services.limit_counters import Bucket
from app.services.limits import MICROS, usd_to_micros
from tests.conftest import AuthActions, add_usage_row, bearer
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Upstream

HI = [{"role": "user", "content": "hello there"}]
# A dollar per thousand tokens each way: a mock reply of 5 words to "hello there" costs 7 tokens, $0.007.
PRICE = {"input_price": 1000.0, "output_price": 1000.0}


@pytest.fixture
def priced_app(make_app, tmp_path: Path):
    def build(**overrides):
        path = tmp_path / "models.yaml"
        path.write_text(
            yaml.safe_dump({"models": {"priced": {"provider": "mock", "model": "echo-1", **PRICE}}})
        )
        return make_app(MODELS_CONFIG=str(path), **overrides)

    return build


def chat(client, token: str, model: str = "priced", **extra):
    return client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": HI, "max_tokens": 5, **extra},
        headers=bearer(token),
    )


def admin_token(app) -> str:
    tokens = AuthActions(app.test_client()).signup("root")
    assert app.test_cli_runner().invoke(args=["users", "set-role", "root", "admin"]).exit_code == 0
    return tokens["access_token"]


def set_user_limits(app, admin: str, user_id: int, **limits):
    response = app.test_client().put(f"/api/admin/users/{user_id}/limits", json=limits, headers=bearer(admin))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_requests_per_minute_429_with_retry_after_in_openai_shape(priced_app):
    app = priced_app()
    client = app.test_client()
    admin = admin_token(app)
    user = AuthActions(client).signup("alice")
    body = set_user_limits(app, admin, user["user"]["id"], requests_per_minute=2)
    assert body["effective"]["requests_per_minute"] == 2 and body["stored"]["tokens_per_minute"] is None
    token = user["access_token"]
    assert chat(client, token).status_code == 200
    assert chat(client, token, stream=True).status_code == 200
    refused = chat(client, token)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.get_json()["error"]["type"] == "rate_limit_error"
    assert chat(client, admin).status_code == 200  # another user has their own counters


def test_budget_402_before_the_provider_is_called(make_app, tmp_path):
    standin = Upstream(openai_like(reply="a b c")).start()
    try:
        path = tmp_path / "models.yaml"
        config = {
            "providers": {"p": {"type": "openai", "base_url": standin.url + "/v1", "api_key": "k"}},
            # $1 per token: a call reserves $37 at max_tokens=5 and costs $8, so a second one cannot fit in $40.
            "models": {"dear": {"provider": "p", "model": "m", "input_price": 1e6, "output_price": 1e6}},
        }
        path.write_text(yaml.safe_dump(config))
        app = make_app(MODELS_CONFIG=str(path), LLM_DEFAULT_DAILY_BUDGET_USD=40.0)
        client = app.test_client()
        token = AuthActions(client).signup("alice")["access_token"]
        assert chat(client, token, model="dear").status_code == 200
        refused = chat(client, token, model="dear")
        assert refused.status_code == 402
        assert refused.get_json()["error"]["code"] == "budget_exceeded"
        assert len(standin.requests) == 1  # the refused call never reached the provider
        usage = client.get("/api/usage", headers=bearer(token)).get_json()
        assert usage["totals"]["requests"] == 1 and usage["totals"]["cost_usd"] == pytest.approx(8.0)
    finally:
        standin.stop()


def test_monthly_budget_and_the_api_surface_error_shape(priced_app):
    app = priced_app(LLM_DEFAULT_MONTHLY_BUDGET_USD=0.01)
    client = app.test_client()
    token = AuthActions(client).signup("alice")["access_token"]
    refused = client.post(
        "/api/llm/compare", json={"models": ["priced", "mock/echo-1"], "messages": HI}, headers=bearer(token)
    )
    assert refused.status_code == 402
    assert refused.get_json()["error"]["code"] == "budget_exceeded"
    assert "message" in refused.get_json()["error"]


def test_tokens_per_minute_counts_the_reservation_then_the_real_figure(priced_app):
    app = priced_app(LLM_DEFAULT_TPM=100)
    client = app.test_client()
    user = AuthActions(client).signup("alice")
    token, user_id = user["access_token"], user["user"]["id"]
    # The worst case of this call (the prompt estimate plus 1,000 tokens) cannot fit in 100.
    refused = chat(client, token, max_tokens=1000)
    assert refused.status_code == 429 and "tokens-per-minute" in refused.get_json()["error"]["message"]
    bucket = Bucket.at(time.time())
    assert chat(client, token).status_code == 200
    # After settling, the minute's tokens are the real 7, not the reserved worst case.
    assert app.extensions["limits"].counters.value(bucket, f"u:{user_id}", "tpm") == 7


def test_key_limits_set_by_the_owner_apply_to_that_key_only(priced_app):
    app = priced_app()
    client = app.test_client()
    token = AuthActions(client).signup("alice")["access_token"]
    key = client.post("/api/keys", json={"name": "ci"}, headers=bearer(token)).get_json()
    response = client.put(
        f"/api/keys/{key['id']}/limits", json={"requests_per_minute": 1}, headers=bearer(token)
    )
    assert response.status_code == 200 and response.get_json()["limits"]["requests_per_minute"] == 1
    assert chat(client, key["key"]).status_code == 200
    assert chat(client, key["key"]).status_code == 429
    assert chat(client, token).status_code == 200  # the login is not the key
    # Keys cannot raise their own limits, and nobody can touch another user's key.
    assert client.put(f"/api/keys/{key['id']}/limits", json={}, headers=bearer(key["key"])).status_code == 403
    other = AuthActions(client).signup("bob")["access_token"]
    assert client.put(f"/api/keys/{key['id']}/limits", json={}, headers=bearer(other)).status_code == 404
    limits = client.get("/api/limits", headers=bearer(key["key"])).get_json()
    assert limits["key"]["requests_per_minute"] == 1 and limits["user"]["requests_per_minute"] == 0


def test_admin_limits_endpoints_need_an_admin_and_valid_values(priced_app):
    app = priced_app(LLM_DEFAULT_RPM=50)
    client = app.test_client()
    user = AuthActions(client).signup("alice")
    uid = user["user"]["id"]
    assert (
        client.put(
            f"/api/admin/users/{uid}/limits", json={}, headers=bearer(user["access_token"])
        ).status_code
        == 403
    )
    admin = admin_token(app)
    assert (
        client.put(
            f"/api/admin/users/{uid}/limits", json={"requests_per_minute": -1}, headers=bearer(admin)
        ).status_code
        == 400
    )
    assert client.put("/api/admin/users/9999/limits", json={}, headers=bearer(admin)).status_code == 404
    body = set_user_limits(app, admin, uid, daily_budget_usd=2.5)
    assert body["effective"] == {
        "requests_per_minute": 50,
        "tokens_per_minute": 0,
        "daily_budget_usd": 2.5,
        "monthly_budget_usd": 0.0,
    }
    # null falls back to the default again; omitted fields keep their value
    body = set_user_limits(app, admin, uid, requests_per_minute=0, daily_budget_usd=None)
    assert body["effective"]["requests_per_minute"] == 0 and body["effective"]["daily_budget_usd"] == 0.0
    assert (
        client.get(f"/api/admin/users/{uid}/limits", headers=bearer(admin)).get_json()["stored"][
            "requests_per_minute"
        ]
        == 0
    )


@pytest.mark.parametrize(
    "limits",
    [
        {"requests_per_minute": 2**31},
        {"tokens_per_minute": 99999999999},
        {"daily_budget_usd": 1e303},
        {"monthly_budget_usd": 1_000_000_001},
    ],
)
def test_limits_beyond_their_bounds_are_a_400(priced_app, limits):
    app = priced_app()
    client = app.test_client()
    admin = admin_token(app)
    user = AuthActions(client).signup("alice")
    key = client.post("/api/keys", json={"name": "ci"}, headers=bearer(user["access_token"])).get_json()
    for path, token in (
        (f"/api/admin/users/{user['user']['id']}/limits", admin),
        (f"/api/keys/{key['id']}/limits", user["access_token"]),
    ):
        response = client.put(path, json=limits, headers=bearer(token))
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"]["code"] == "validation_error"
    assert chat(client, key["key"]).status_code == 200  # nothing was stored


def test_the_largest_limits_admitted_and_any_already_stored_still_let_calls_through(priced_app):
    from app.models import UsageLimit

    app = priced_app()
    client = app.test_client()
    admin = admin_token(app)
    user = AuthActions(client).signup("alice")
    uid = user["user"]["id"]
    largest = {
        "requests_per_minute": 2**31 - 1,
        "tokens_per_minute": 2**31 - 1,
        "daily_budget_usd": 1e9,
        "monthly_budget_usd": 1e9,
    }
    assert set_user_limits(app, admin, uid, **largest)["effective"] == largest
    assert chat(client, user["access_token"]).status_code == 200
    # A budget stored before the bound existed (its micro-USD overflowed) does not break the key's calls.
    key = client.post("/api/keys", json={"name": "ci"}, headers=bearer(user["access_token"])).get_json()
    with app.app_context():
        db.session.add(UsageLimit(scope="key", subject_id=key["id"], daily_budget_usd=1e303))
        db.session.commit()
    response = chat(client, key["key"])
    assert response.status_code == 200, response.get_json()


def test_ids_beyond_any_row_in_limit_paths_are_a_404(priced_app):
    app = priced_app()
    client = app.test_client()
    admin = admin_token(app)
    for method, path in (
        ("get", "/api/admin/users/99999999999/limits"),
        ("put", "/api/admin/users/99999999999/limits"),
        ("put", "/api/admin/keys/99999999999/limits"),
        ("get", "/api/keys/99999999999/limits"),
        ("put", "/api/keys/99999999999/limits"),
    ):
        response = getattr(client, method)(path, json={}, headers=bearer(admin))
        assert response.status_code == 404, (path, response.get_data(as_text=True))
        assert set(response.get_json()["error"]) >= {"code", "message"}


def test_100_concurrent_requests_cannot_overshoot_a_nearly_spent_budget(priced_app):
    app = priced_app()
    client = app.test_client()
    admin = admin_token(app)
    user = AuthActions(client).signup("alice")
    uid, token = user["user"]["id"], user["access_token"]
    set_user_limits(app, admin, uid, daily_budget_usd=1.0)
    limits = app.extensions["limits"]
    bucket = Bucket.at(time.time())
    already = usd_to_micros(0.9)  # $0.90 of $1 spent: room for about fourteen $0.007 calls
    limits.counters.add(bucket, f"u:{uid}", "day", already)
    start = threading.Barrier(100)

    def call(_: int) -> int:
        local = app.test_client()
        start.wait()
        return chat(local, token).status_code

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(call, range(100)))
    assert set(statuses) <= {200, 402}
    admitted = statuses.count(200)
    assert 1 <= admitted < 100
    app.extensions["usage_writer"].flush()
    with app.app_context():
        spent = db.session.scalar(select(func.sum(UsageRecord.cost_usd)).where(UsageRecord.user_id == uid))
        recorded = db.session.scalar(
            select(func.count()).select_from(UsageRecord).where(UsageRecord.user_id == uid)
        )
    assert recorded == admitted
    # The documented bound is zero overshoot for calls that send max_tokens: never past $1.
    assert already + usd_to_micros(spent) <= MICROS
    assert limits.counters.value(bucket, f"u:{uid}", "day") == already + admitted * usd_to_micros(0.007)
    # Every call was admitted while a $0.037 worst case still fitted, so little room is left unused.
    assert already + usd_to_micros(spent) > MICROS - 100 * usd_to_micros(0.037)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # shared counters need Redis
def test_limits_are_shared_by_two_instances(priced_app, backend):
    first = priced_app(LLM_DEFAULT_RPM=3)
    second = priced_app(LLM_DEFAULT_RPM=3)
    token = AuthActions(first.test_client()).signup("alice")["access_token"]
    codes = [chat(app.test_client(), token).status_code for app in (first, second, first, second)]
    assert codes == [200, 200, 200, 429]


def test_spend_already_recorded_counts_after_a_restart(priced_app):
    from datetime import UTC, datetime, timedelta

    app = priced_app(LLM_DEFAULT_DAILY_BUDGET_USD=1.0)
    user = AuthActions(app.test_client()).signup("alice")
    uid = user["user"]["id"]

    def spend(usd: float, when: datetime) -> None:
        add_usage_row(app, uid, "priced", when, cost_usd=usd)

    now = datetime.now(UTC)
    spend(5.0, now - timedelta(days=40))  # another day and month: not counted
    # A fresh instance (its counters empty, as after a restart) starts from the rows.
    assert (
        chat(priced_app(LLM_DEFAULT_DAILY_BUDGET_USD=1.0).test_client(), user["access_token"]).status_code
        == 200
    )
    spend(0.98, now)
    if app.extensions["redis"] is not None:
        app.extensions["redis"].flushdb()  # Redis lost its counters too
    fresh = priced_app(LLM_DEFAULT_DAILY_BUDGET_USD=1.0)
    refused = chat(fresh.test_client(), user["access_token"])
    assert refused.status_code == 402


@pytest.mark.parametrize("budget", ["daily_budget_usd", "monthly_budget_usd"])
def test_a_budget_set_after_the_counters_exist_counts_the_spend_before_them(priced_app, budget):
    from datetime import UTC, datetime

    # A per-minute default makes every user's counters live from the first call, budget or not.
    app = priced_app(LLM_DEFAULT_RPM=1000)
    client = app.test_client()
    admin = admin_token(app)
    user = AuthActions(client).signup("alice")
    uid, token = user["user"]["id"], user["access_token"]
    add_usage_row(app, uid, "priced", datetime.now(UTC), cost_usd=10.0)  # $10 today, before this instance
    assert chat(client, token).status_code == 200  # no budget yet: the spend counters start here
    set_user_limits(app, admin, uid, **{budget: 5.0})
    refused = chat(client, token)
    assert refused.status_code == 402, refused.get_json()
    assert refused.get_json()["error"]["code"] == "budget_exceeded"


def test_100_concurrent_requests_cannot_overshoot_a_nearly_spent_token_rate(priced_app):
    if 60 - time.time() % 60 < 15:
        time.sleep(60 - time.time() % 60 + 0.5)  # keep the whole test inside one minute window
    app = priced_app(LLM_DEFAULT_TPM=1000)
    user = AuthActions(app.test_client()).signup("alice")
    uid, token = user["user"]["id"], user["access_token"]
    bucket = Bucket.at(time.time())
    app.extensions["limits"].counters.add(bucket, f"u:{uid}", "tpm", 900)  # 100 tokens left
    start = threading.Barrier(100)

    def call(_: int) -> int:
        local = app.test_client()
        start.wait()
        return chat(local, token).status_code

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(call, range(100)))
    assert set(statuses) <= {200, 429}
    admitted = statuses.count(200)
    # Each call reserves 37 tokens and uses 7: between 2 (all at once) and 13 (one after another) fit.
    assert 2 <= admitted <= 13
    used = app.extensions["limits"].counters.value(bucket, f"u:{uid}", "tpm")
    assert used == 900 + 7 * admitted <= 1000


def test_limit_variables_are_read_and_warn_without_redis(monkeypatch):
    from app.config import ConfigError, load_config

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("LLM_DEFAULT_RPM", "30")
    monkeypatch.setenv("LLM_DEFAULT_DAILY_BUDGET_USD", "2.5")
    monkeypatch.setenv("LLM_DEFAULT_TPM", "")  # empty: unlimited
    config = load_config("development")
    assert (config.LLM_DEFAULT_RPM, config.LLM_DEFAULT_TPM, config.LLM_DEFAULT_DAILY_BUDGET_USD) == (
        30,
        0,
        2.5,
    )
    assert any("counted per process" in warning for warning in config.STARTUP_WARNINGS)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert not any("counted per process" in w for w in load_config("development").STARTUP_WARNINGS)
    monkeypatch.setenv("LLM_DEFAULT_MONTHLY_BUDGET_USD", "-1")
    with pytest.raises(ConfigError, match="LLM_DEFAULT_MONTHLY_BUDGET_USD"):
        load_config("development")


def test_a_compare_refused_part_way_gives_back_what_it_reserved(priced_app):
    app = priced_app(LLM_DEFAULT_TPM=50)  # one model's worst case (37 tokens) fits, two do not
    client = app.test_client()
    user = AuthActions(client).signup("alice")
    bucket = Bucket.at(time.time())
    refused = client.post(
        "/api/llm/compare",
        json={"models": ["priced", "mock/echo-1"], "messages": HI, "max_tokens": 5},
        headers=bearer(user["access_token"]),
    )
    assert refused.status_code == 429
    counters = app.extensions["limits"].counters
    assert counters.value(bucket, f"u:{user['user']['id']}", "tpm") == 0
    assert counters.value(bucket, f"u:{user['user']['id']}", "rpm") == 0
    assert chat(client, user["access_token"]).status_code == 200
