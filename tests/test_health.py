from __future__ import annotations

from app import create_app
from app.config import TestingConfig
from app.version import __version__


def test_health_is_public_and_checks_the_database_and_redis(client, backend):
    response = client.get("/api/health")
    assert response.status_code == 200
    expected = {"status": "ok", "version": __version__, "database": "ok"}
    if backend["REDIS_URL"]:
        expected["redis"] = "ok"
    assert response.get_json() == expected


def test_health_is_503_when_redis_is_unreachable(make_app):
    client = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.get_json()["redis"] == "unavailable" and response.get_json()["status"] == "degraded"


def test_ready_turns_503_while_draining(client, monkeypatch):
    from app.services import lifecycle

    assert client.get("/api/ready").get_json() == {"status": "ready"}
    monkeypatch.setattr(lifecycle, "_draining", __import__("threading").Event())
    lifecycle.begin_draining()
    response = client.get("/api/ready")
    assert response.status_code == 503 and response.get_json() == {"status": "draining"}


def test_health_is_503_degraded_when_the_database_is_unreachable(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    for unreachable in (
        f"sqlite:///{tmp_path}/a-file/nothing.db",
        "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2",
    ):
        config = TestingConfig()
        config.SQLALCHEMY_DATABASE_URI = unreachable
        response = create_app(config).test_client().get("/api/health")
        assert response.status_code == 503, unreachable
        assert response.get_json() == {
            "status": "degraded",
            "version": __version__,
            "database": "unavailable",
        }


def test_health_is_not_rate_limited(make_app):
    client = make_app(RATE_LIMIT_DEFAULT="2 per minute").test_client()
    assert all(client.get("/api/health").status_code == 200 for _ in range(5))
