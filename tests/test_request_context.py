from __future__ import annotations

import json
import logging


def test_request_id_is_generated_and_echoed(client):
    response = client.get("/api/health")
    assert len(response.headers["X-Request-ID"]) == 32


def test_safe_request_id_is_kept_and_unsafe_one_replaced(client):
    assert client.get("/api/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    replaced = client.get("/api/health", headers={"X-Request-ID": "bad id\twith spaces"}).headers[
        "X-Request-ID"
    ]
    assert replaced != "bad id\twith spaces" and len(replaced) == 32


def test_access_log_is_json_with_the_request_id(client, caplog):
    from app.logging_setup import JsonFormatter

    with caplog.at_level(logging.INFO, logger="app.access"):
        response = client.get("/api/health", headers={"X-Request-ID": "trace-me"})
        # The line is written once the response has been sent: the server closes it then.
        assert not [r for r in caplog.records if r.name == "app.access"]
        response.close()
    record = next(r for r in caplog.records if r.name == "app.access")
    line = json.loads(JsonFormatter().format(record))  # outside the request, as when it is written
    assert line["status"] == 200 and line["path"] == "/api/health" and line["request_id"] == "trace-me"
    assert line["duration_ms"] >= 0


def test_log_records_do_not_look_up_the_thread(client, caplog):
    # Under gevent, each request greenlet that asked would get a dummy Thread object made for it.
    with caplog.at_level(logging.INFO, logger="app.access"):
        client.get("/api/health").close()
    record = next(r for r in caplog.records if r.name == "app.access")
    assert record.thread is None and record.threadName is None


def test_cors_headers(client):
    response = client.options(
        "/api/auth/login",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.headers["Access-Control-Allow-Origin"] in {"*", "https://app.example"}
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_cors_headers_answer_browsers_only(client, monkeypatch):
    # A browser sends Origin with every cross-origin request; it is told which headers it may read.
    browser = client.get("/api/health", headers={"Origin": "https://app.example"})
    assert browser.headers["Access-Control-Allow-Origin"] in {"*", "https://app.example"}
    assert "x-multillm-provider" in browser.headers["Access-Control-Expose-Headers"]
    refused = client.get("/api/profile", headers={"Origin": "https://app.example"})  # and on errors
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"]
    # A program sends none and gets none, without flask-cors matching the path against its resources:
    # that was a measurable share of a proxied call.
    import flask_cors.extension

    def no_matching(*args):
        raise AssertionError("flask-cors matched a request without an Origin")

    monkeypatch.setattr(flask_cors.extension, "try_match_pattern", no_matching)
    program = client.get("/api/health")
    assert program.status_code == 200
    assert not [name for name, _ in program.headers if name.startswith("Access-Control-")]


def test_cors_origins_are_configurable(make_app):
    client = make_app(CORS_ORIGINS=["https://good.example"]).test_client()
    good = client.get("/api/health", headers={"Origin": "https://good.example"})
    bad = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert good.headers["Access-Control-Allow-Origin"] == "https://good.example"
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_openapi_document_is_generated_from_the_schemas(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
        "/api/profile",
    ):
        assert path in spec["paths"], path
    register = spec["paths"]["/api/auth/register"]["post"]
    schema_ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"username", "email", "password"}
    assert schema["additionalProperties"] is False


def test_interactive_docs_are_served(client):
    index = client.get("/docs/")
    assert index.status_code == 200
    swagger = client.get("/docs/swagger")
    assert swagger.status_code == 200
    assert b"swagger" in swagger.data.lower()


def test_no_cookie_session_is_opened_or_set(app, client):
    from flask import session
    from flask.sessions import NullSession

    with app.test_request_context("/api/health"):
        app.preprocess_request()
        assert isinstance(session._get_current_object(), NullSession)
    response = client.get("/api/health")
    assert "Set-Cookie" not in response.headers
