"""The meter on its own: one row per call however often it is finished, routed targets, estimates."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import select

from app.extensions import db
from app.models import UsageRecord
from app.services.gateway.catalog import ModelEntry, Target
from app.services.usage_service import CallInfo, Meter
from tests.conftest import AuthActions


def meter_for(app, user_id: int) -> Meter:
    entry = ModelEntry(
        "m", (Target("first", "up-1"), Target("second", "up-2")), input_price=1.0, output_price=2.0
    )
    info = CallInfo(user_id, None, "req-1", "chat", "m", "first", "up-1", entry, listed=True)
    return Meter(app, info, None)


def queued(app) -> list[dict]:
    app.extensions["usage_writer"].flush()
    with app.app_context():
        return [record.to_public() for record in db.session.scalars(select(UsageRecord))]


def gauge(app, provider: str) -> float:
    metrics = app.extensions["metrics"]
    return metrics.registry.get_sample_value("llm_requests_in_flight", {"provider": provider, "model": "m"})


def test_finishing_twice_writes_one_row(app):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    meter = meter_for(app, user_id)
    meter.finish("ok", usage={"prompt_tokens": 3, "completion_tokens": 4})
    meter.finish("error", error=RuntimeError("late"))
    [row] = queued(app)
    assert row["status"] == "ok" and row["cost_usd"] == (3 * 1.0 + 4 * 2.0) / 1_000_000
    assert row["request_id"] == "req-1"


def test_the_target_that_served_is_recorded_with_retries_and_fallback(app):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    meter = meter_for(app, user_id)
    assert gauge(app, "first") == 1
    route = SimpleNamespace(provider="second", upstream_model="up-2", attempts=[1, 2, 3], fallback=True)
    meter.served_by(route)
    meter.finish("ok", usage={"prompt_tokens": 1, "completion_tokens": 1})
    [row] = queued(app)
    assert (row["provider"], row["upstream_model"]) == ("second", "up-2")
    registry = app.extensions["metrics"].registry
    labels = {"provider": "second", "model": "m"}
    assert registry.get_sample_value("llm_retries_total", labels) == 2
    assert registry.get_sample_value("llm_fallbacks_total", labels) == 1
    assert gauge(app, "first") == 0  # in flight is given back under the labels it was taken with


def test_no_usage_from_the_provider_is_estimated_and_marked(app):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    meter = meter_for(app, user_id)
    meter.prompt_estimate = 10
    meter.observe_chunk({"choices": [{"delta": {"content": "x" * 40}}]})
    meter.finish("client_closed")
    [row] = queued(app)
    assert (row["prompt_tokens"], row["completion_tokens"], row["tokens_estimated"]) == (10, 10, True)
    assert row["time_to_first_token_ms"] is not None


def test_failure_before_any_output_bills_nothing(app):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    meter = meter_for(app, user_id)
    meter.prompt_estimate = 10
    meter.finish("error", error=RuntimeError("boom"))
    [row] = queued(app)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (0, 0, 0.0)
    assert row["error_code"] == "internal_error"
