"""With routing (issue 6, "Routing"): the usage row and metrics name the target that served the call."""

from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import UsageRecord
from tests.gateway import routing_setup
from tests.upstreams.openai_like import openai_like

HI = [{"role": "user", "content": "Hi"}]


def served_rows(app):
    app.extensions["usage_writer"].flush()
    with app.app_context():
        return [
            (r.endpoint, r.status, r.provider, r.upstream_model)
            for r in db.session.scalars(select(UsageRecord))
        ]


def test_a_fallback_is_recorded_under_the_target_that_served(upstream, gateway):
    first = upstream(routing_setup.failing(503))
    healthy = upstream(openai_like(reply="from the second"))
    gw = gateway(
        routing_setup.routed_config(
            first, healthy, retries={**routing_setup.FAST_RETRIES, "max_per_target": 1}
        )
    )
    assert (
        gw.sdk.chat.completions.create(model="smart", messages=HI).choices[0].message.content
        == "from the second"
    )
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in gw.sdk.chat.completions.create(model="smart", messages=HI, stream=True)
        if chunk.choices
    )
    assert text == "from the second"
    assert served_rows(gw.app) == [("chat", "ok", "p1", "m-1"), ("stream", "ok", "p1", "m-1")]
    registry = gw.app.extensions["metrics"].registry
    labels = {"provider": "p1", "model": "smart"}
    assert registry.get_sample_value("llm_fallbacks_total", labels) == 2
    assert registry.get_sample_value("llm_retries_total", labels) >= 2
    assert registry.get_sample_value("llm_requests_in_flight", {"provider": "p0", "model": "smart"}) == 0
