"""The /api/external routes end to end: auth, body validation, the guard under the default
configuration, the response shape, and the audit history."""

from __future__ import annotations

import pytest

from tests.conftest import AuthActions, bearer
from tests.upstreams.server import Upstream, json_response

LOOPBACK = ["127.0.0.1/32"]


@pytest.fixture
def echo():
    def handler(request):
        return json_response(
            {
                "method": request.method,
                "args": request.args.to_dict(flat=False),
                "json": request.get_json(silent=True),
            },
            headers={"X-Upstream": "yes", "Set-Cookie": "tracking=1"},
        )

    with Upstream(handler) as server:
        yield server


@pytest.fixture
def proxied(make_app):
    """A client and token for an app whose guard exempts loopback (as the tests' upstreams live there)."""
    app = make_app(EXTERNAL_API_ALLOW_PRIVATE_NETWORKS=LOOPBACK)
    client = app.test_client()
    token = AuthActions(client).signup()["access_token"]
    return client, token


@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
def test_every_method_reaches_the_upstream(proxied, echo, method):
    client, token = proxied
    body = {
        "url": f"{echo.url}/things?a=1",
        "params": {"b": ["x", "y"], "flag": True},
        "headers": {"X-Api-Key": "k"},
    }
    if method != "get":
        body["payload"] = {"key": "value"}
    response = client.post(f"/api/external/{method}", json=body, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert set(result) >= {"status_code", "ok", "headers", "body", "url", "attempts", "elapsed_ms"}
    assert result["status_code"] == 200 and result["ok"] is True and result["attempts"] == 1
    assert result["body"]["method"] == method.upper()
    assert result["body"]["args"] == {"a": ["1"], "b": ["x", "y"], "flag": ["true"]}
    headers = {name.lower(): value for name, value in result["headers"].items()}
    assert headers["x-upstream"] == "yes"
    assert "set-cookie" not in headers
    sent = echo.last
    assert sent.headers.get("X-Api-Key") == "k"
    # The caller's credential for this service never travels to the upstream.
    assert token not in str(sent.headers)
    if method != "get":
        assert result["body"]["json"] == {"key": "value"}


def test_form_payload(proxied, echo):
    client, token = proxied
    body = {"url": f"{echo.url}/form", "payload": {"a": "1", "b": ["2", "3"]}, "use_json": False}
    assert client.post("/api/external/post", json=body, headers=bearer(token)).status_code == 200
    assert echo.last.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert echo.last.body == b"a=1&b=2&b=3"


def test_loopback_is_refused_under_the_default_configuration(client, auth, echo):
    token = auth.signup()["access_token"]
    for url in (
        echo.url,
        f"http://localhost:{echo.port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
    ):
        response = client.post("/api/external/get", json={"url": url}, headers=bearer(token))
        assert response.status_code == 403, url
        assert response.get_json()["error"]["code"] == "destination_not_allowed"
    assert echo.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/file"},
        {"url": "not a url"},
        {"url": "http://user:pass@example.com/"},
        {"url": "https://example.com/", "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"url": "https://example.com/", "payload": {"a": 1}},
        {"url": "https://example.com/", "surprise": True},
        {"url": "https://example.com/", "timeout": -1},
    ],
)
def test_bad_input_is_400(client, auth, body):
    token = auth.signup()["access_token"]
    response = client.post("/api/external/get", json=body, headers=bearer(token))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] in {"validation_error", "bad_request"}


def test_timeout_above_the_configured_bound_is_400(make_app):
    app = make_app(EXTERNAL_API_TIMEOUT=5.0)
    client = app.test_client()
    token = AuthActions(client).signup()["access_token"]
    response = client.post(
        "/api/external/get", json={"url": "https://example.com/", "timeout": 50}, headers=bearer(token)
    )
    assert response.status_code == 400


def test_external_calls_need_authentication(client, echo):
    assert client.post("/api/external/get", json={"url": echo.url}).status_code == 401


def test_history_is_per_user_newest_first_and_paginated(make_app, echo):
    app = make_app(EXTERNAL_API_ALLOW_PRIVATE_NETWORKS=LOOPBACK)
    client = app.test_client()
    auth = AuthActions(client)
    alice, bob = auth.signup("alice")["access_token"], auth.signup("bob")["access_token"]
    for i in range(3):
        client.post(
            "/api/external/get", json={"url": f"{echo.url}/item/{i}?secret=s3cr3t"}, headers=bearer(alice)
        )
    client.post("/api/external/get", json={"url": "http://10.0.0.1/"}, headers=bearer(alice))
    client.post("/api/external/get", json={"url": f"{echo.url}/bob"}, headers=bearer(bob))
    page = client.get("/api/external/history?per_page=2", headers=bearer(alice)).get_json()
    assert page["total"] == 4 and page["pages"] == 2 and len(page["items"]) == 2
    newest = page["items"][0]
    assert newest["outcome"] == "destination_not_allowed" and newest["status_code"] is None
    second = page["items"][1]
    assert second["path"] == "/item/2" and second["method"] == "GET" and second["status_code"] == 200
    assert second["outcome"] == "success" and second["host"] == "127.0.0.1"
    everything = str(client.get("/api/external/history?per_page=100", headers=bearer(alice)).get_json())
    assert "s3cr3t" not in everything and "/bob" not in everything
    assert client.get("/api/external/history?per_page=1000", headers=bearer(alice)).status_code == 400
