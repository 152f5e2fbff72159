"""Redis or the database down: a 503 in the documented shape with Retry-After, never a 500.

(The request rate limits are the exception: their storage failing lets requests through; see
test_rate_limits.py.)
"""

from __future__ import annotations

import pytest
import redis

from app import create_app
from app.config import TestingConfig
from tests.conftest import STRONG_PASSWORD, AuthActions, bearer

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


class _WritesFail:
    """Stands in for a Redis client that still answers reads but goes away at the next write: the moment
    between a check and a revocation, which a real server cannot be made to hit on cue."""

    def __init__(self, real) -> None:
        self._real = real

    def exists(self, *names):
        return self._real.exists(*names)

    def set(self, *_, **__):
        raise redis.ConnectionError("Redis went away")

    def pipeline(self, *_, **__):
        raise redis.ConnectionError("Redis went away")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_password_change_that_cannot_tell_redis_changes_nothing_and_can_be_retried(make_app):
    first, second = make_app(), make_app()
    client = first.test_client()
    here = AuthActions(client).signup("alice")
    elsewhere = AuthActions(client).login("alice")  # another session, to be logged out by the change
    change = {"current_password": STRONG_PASSWORD, "new_password": "An0ther-Secret-pass"}
    store = first.extensions["revocations"]
    real, store.client = store.client, _WritesFail(store.client)
    failed = client.patch("/api/profile", json=change, headers=bearer(here["access_token"]))
    store.client = real
    assert failed.status_code == 503
    # Nothing changed: the old password still works, so the change can be made again.
    assert (
        second.test_client().get("/api/profile", headers=bearer(elsewhere["access_token"])).status_code == 200
    )
    retried = client.patch("/api/profile", json=change, headers=bearer(here["access_token"]))
    assert retried.status_code == 200
    assert (
        second.test_client().get("/api/profile", headers=bearer(elsewhere["access_token"])).status_code == 401
    )


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_key_revocation_that_cannot_tell_redis_can_be_retried(make_app):
    first, second = make_app(), make_app()
    client = first.test_client()
    tokens = AuthActions(client).signup("alice")
    key = client.post("/api/keys", json={"name": "ci"}, headers=bearer(tokens["access_token"])).get_json()
    # The other instance has verified the key, and caches it for CACHE_TTL.
    assert second.test_client().get("/api/profile", headers=bearer(key["key"])).status_code == 200
    verifier = first.extensions["api_keys"]
    real, verifier.redis = verifier.redis, _WritesFail(verifier.redis)
    failed = client.delete(f"/api/keys/{key['id']}", headers=bearer(tokens["access_token"]))
    verifier.redis = real
    assert failed.status_code == 503
    retried = client.delete(f"/api/keys/{key['id']}", headers=bearer(tokens["access_token"]))
    assert retried.status_code == 200  # not a 404 for a key revoked only in SQL
    assert second.test_client().get("/api/profile", headers=bearer(key["key"])).status_code == 401
