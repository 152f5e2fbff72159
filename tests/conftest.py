"""Fixtures: a fresh app and database per test, on SQLite and, when configured, PostgreSQL with Redis.

TEST_DATABASE_URL and TEST_REDIS_URL switch on the "postgres" backend; without them its tests are
skipped, except under REQUIRE_TEST_SERVICES=1 (CI), where a missing service fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from app import create_app
from app.config import TestingConfig, normalise_database_url
from app.extensions import db

STRONG_PASSWORD = "Sup3rSecret-pass"
BACKENDS = ["sqlite", "postgres"]


def _require(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        if os.environ.get("REQUIRE_TEST_SERVICES") == "1":
            pytest.fail(f"{name} is required under CI but not set")
        pytest.skip(f"{name} not set")
    return value


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    """Settings that point an app at one storage backend, with its state wiped."""
    if request.param == "sqlite":
        return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.db'}", "REDIS_URL": ""}
    database_url = normalise_database_url(_require("TEST_DATABASE_URL"))
    redis_url = _require("TEST_REDIS_URL")
    try:
        redis.Redis.from_url(redis_url).flushdb()
        with create_engine(database_url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        pytest.fail(f"test services unreachable: {error}")
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "RATELIMIT_STORAGE_URI": redis_url,
    }


@pytest.fixture
def make_app(backend: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """Build apps sharing this test's backend and secrets; overrides go on top of the test config."""
    base = TestingConfig()
    apps: list[Any] = []

    def factory(**overrides: Any) -> Any:
        config = TestingConfig()
        config.SECRET_KEY, config.JWT_SECRET_KEY = base.SECRET_KEY, base.JWT_SECRET_KEY
        config.AUTH_RATE_LIMIT = "1000 per minute"
        config.RATE_LIMIT_DEFAULT = "1000 per minute"
        for key, value in {**backend, **overrides}.items():
            setattr(config, key, value)
        app = create_app(config)
        if not apps:
            with app.app_context():
                db.drop_all()
                db.create_all()
        apps.append(app)
        return app

    yield factory
    for built in apps:
        # Rows queued by this test belong to this database; a stream's consumer stops too, so it cannot
        # read the next test's stream.
        for writer in (built.extensions["external_audit"], built.extensions["usage_writer"]):
            (getattr(writer, "close", None) or writer.flush)()
    if apps:
        with apps[0].app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


@pytest.fixture
def client(app: Any) -> FlaskClient:
    return app.test_client()


class AuthActions:
    """Register and log in through the real endpoints, as a client would."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def register(
        self, username: str = "alice", email: str | None = None, password: str = STRONG_PASSWORD
    ) -> Any:
        email = email or f"{username}@example.com"
        return self.client.post(
            "/api/auth/register", json={"username": username, "email": email, "password": password}
        )

    def login(self, username: str = "alice", password: str = STRONG_PASSWORD) -> dict[str, Any]:
        response = self.client.post("/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def signup(self, username: str = "alice") -> dict[str, Any]:
        assert self.register(username).status_code == 201
        return self.login(username)


def add_usage_row(app: Any, user_id: int, model: str, created_at: Any, cost_usd: float | None = None) -> None:
    """A chat call recorded straight in usage_records, as if written earlier (by another instance, say)."""
    from app.models import UsageRecord

    with app.app_context():
        db.session.add(
            UsageRecord(
                user_id=user_id,
                endpoint="chat",
                model=model,
                latency_ms=1,
                status="ok",
                cost_usd=cost_usd,
                created_at=created_at,
            )
        )
        db.session.commit()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)
