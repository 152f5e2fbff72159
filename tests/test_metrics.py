"""GET /metrics: Prometheus text whose values match a known sequence of calls; METRICS_TOKEN guards it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AuthActions, bearer
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Upstream, json_response

HI = [{"role": "user", "content": "hello there"}]
PRICE = {"input_price": 1000.0, "output_price": 1000.0}


def samples(client, **headers) -> dict[tuple, float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def metered(make_app, tmp_path: Path):
    failing = Upstream(openai_like(fail_status=500, fail_body={"error": {"message": "boom"}})).start()
    echo = Upstream(lambda request: json_response({"ok": True})).start()
    config = {
        "providers": {"p": {"type": "openai", "base_url": failing.url + "/v1", "api_key": "k"}},
        "models": {"priced": {"provider": "mock", "model": "echo-1", **PRICE}},
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(config))
    app = make_app(MODELS_CONFIG=str(path), EXTERNAL_API_ALLOW_PRIVATE_NETWORKS=["127.0.0.1/32"])
    yield app, echo
    failing.stop()
    echo.stop()


def test_metrics_match_a_known_sequence_of_calls(metered):
    app, echo = metered
    client = app.test_client()
    token = bearer(AuthActions(client).signup()["access_token"])
    chat = {"model": "priced", "messages": HI, "max_tokens": 5}
    for _ in range(2):
        assert client.post("/v1/chat/completions", json=chat, headers=token).status_code == 200
    streamed = client.post("/v1/chat/completions", json={**chat, "stream": True}, headers=token)
    assert b"[DONE]" in streamed.get_data()
    failed = client.post("/v1/chat/completions", json={**chat, "model": "p/m"}, headers=token)
    assert failed.status_code == 502
    missing = client.post("/v1/chat/completions", json={**chat, "model": "none/such"}, headers=token)
    assert missing.status_code == 404
    for _ in range(3):
        response = client.post("/api/external/get", json={"url": echo.url + "/x"}, headers=token)
        assert response.status_code == 200, response.get_json()

    found = samples(client)
    ok = {"provider": "mock", "model": "priced"}
    bad = {"provider": "p", "model": "other"}  # a made-up name that failed gets no label of its own
    assert value(found, "llm_requests_total", **ok, status="ok") == 3
    assert value(found, "llm_requests_total", **bad, status="error") == 1
    assert value(found, "llm_errors_total", **bad, error="server") == 1
    assert value(found, "llm_errors_total", **ok, error="server") == 0
    assert value(found, "llm_tokens_total", **ok, type="prompt") == 3 * 2
    assert value(found, "llm_tokens_total", **ok, type="completion") == 3 * 5
    assert value(found, "llm_cost_usd_total", **ok) == pytest.approx(3 * 7 * 1000 / 1_000_000)
    assert value(found, "llm_requests_in_flight", **ok) == 0
    assert value(found, "llm_requests_in_flight", **bad) == 0
    assert value(found, "llm_request_duration_seconds_count", **ok) == 3
    assert value(found, "llm_time_to_first_token_seconds_count", **ok) == 1  # only the stream has one
    route = {"route": "/v1/chat/completions", "method": "POST"}
    assert value(found, "http_requests_total", **route, status="200") == 3
    assert value(found, "http_requests_total", **route, status="502") == 1
    assert value(found, "http_requests_total", **route, status="404") == 1
    assert value(found, "http_request_duration_seconds_count", **route, status="200") == 3
    assert value(found, "external_api_calls_total", outcome="success") == 3
    # /metrics does not count itself
    assert not any(labels and dict(labels).get("route") == "/metrics" for _, labels in found)


def test_metrics_token_guards_the_endpoint(make_app):
    app = make_app(METRICS_TOKEN="s3cret-metrics-token")
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics-token"})
    assert allowed.status_code == 200
    assert "# TYPE llm_requests_total counter" in allowed.get_data(as_text=True)


_WORKER = """
import sys
from app import create_app
from app.config import TestingConfig
from app.extensions import db
from tests.conftest import AuthActions, bearer

config = TestingConfig()
config.SQLALCHEMY_DATABASE_URI = "sqlite:///" + sys.argv[1]
config.RATE_LIMIT_DEFAULT = "1000 per minute"
app = create_app(config)
with app.app_context():
    db.create_all()
client = app.test_client()
name = sys.argv[2]
token = AuthActions(client).signup(name)["access_token"]
chat = {"model": "mock/echo-1", "messages": [{"role": "user", "content": "hi"}]}
assert client.post("/v1/chat/completions", json=chat, headers=bearer(token)).status_code == 200
if len(sys.argv) > 3:
    sys.stdout.write(client.get("/metrics").get_data(as_text=True))
"""


def test_multiprocess_mode_sums_every_worker(tmp_path):
    """Under gunicorn each worker writes to PROMETHEUS_MULTIPROC_DIR; /metrics in any worker sums them."""
    import os
    import subprocess
    import sys

    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    root = Path(__file__).resolve().parent.parent
    database = str(tmp_path / "mp.db")
    for name, extra in (("alice", []), ("bob", ["render"])):
        result = subprocess.run(
            [sys.executable, "-c", _WORKER, database, name, *extra],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    found = {}
    for family in text_string_to_metric_families(result.stdout):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert value(found, "llm_requests_total", provider="mock", model="mock/echo-1", status="ok") == 2
