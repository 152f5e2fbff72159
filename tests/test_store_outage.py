"""Redis or the database down: a 503 in the documented shape with Retry-After, never a 500.

(The request rate limits are the exception: their storage failing lets requests through; see
test_rate_limits.py.)
"""

from __future__ import annotations

import pytest

from app import create_app
from app.config import TestingConfig
from tests.conftest import AuthActions, bearer

CLOSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused


def assert_unavailable(response, store: str, *, openai: bool = False) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "2"
    error = response.get_json()["error"]
    assert error["code"] == "service_unavailable"
    assert store in error["message"]
    if openai:
        assert error["type"] == "api_error" and error["param"] is None
    else:
        assert set(error) == {"code", "message"}


@pytest.fixture
def tokens(make_app):
    """A user signed up through an app whose stores work."""
    return AuthActions(make_app().test_client()).signup("outage")


def test_redis_down_answers_503_where_a_request_needs_it(make_app, tokens, capfd):
    client = make_app(REDIS_URL=CLOSED_REDIS).test_client()  # same database and secrets
    # A JWT is checked against the revocations in Redis.
    assert_unavailable(client.get("/api/auth/me", headers=bearer(tokens["access_token"])), "Redis")
    chat = {"model": "mock/echo-1", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json=chat, headers=bearer(tokens["access_token"]))
    assert_unavailable(response, "Redis", openai=True)
    logs = capfd.readouterr().err  # the app logs JSON lines to stderr
    assert "Redis unreachable: ConnectionError" in logs and "Traceback" not in logs


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_database_down_answers_503_and_logs_no_values(kind, tmp_path, capfd):
    config = TestingConfig()
    if kind == "sqlite":
        (tmp_path / "a-file").write_text("not a directory")
        config.SQLALCHEMY_DATABASE_URI = f"sqlite:///{tmp_path}/a-file/nothing.db"
    else:
        config.SQLALCHEMY_DATABASE_URI = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
    client = create_app(config).test_client()
    password = "Unl0gged-" + kind + "-secret"
    response = client.post(
        "/api/auth/register",
        json={"username": "outage", "email": "outage@example.com", "password": password},
    )
    assert_unavailable(response, "the database")
    response = client.post("/api/auth/login", json={"username": "outage", "password": password})
    assert_unavailable(response, "the database")
    logs = capfd.readouterr().err
    assert "the database unreachable: OperationalError" in logs
    assert password not in logs and "outage@example.com" not in logs
