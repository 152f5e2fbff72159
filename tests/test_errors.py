"""Every error, from our routes and from Flask itself, is JSON of one shape."""

from __future__ import annotations

import pytest
from flask import abort

from tests.conftest import bearer


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "details"}
    return body["error"]


def test_unknown_url_is_json_404(client):
    assert_error_shape(client.get("/api/nothing-here"), 404, "not_found")


def test_wrong_method_is_json_405_with_allow(client):
    response = client.get("/api/auth/login")
    assert_error_shape(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_malformed_json_is_400(client):
    response = client.post("/api/auth/login", data="{not json", content_type="application/json")
    assert_error_shape(response, 400, "malformed_json")


@pytest.mark.parametrize("body", ["[1, 2]", '"a string"', "42", "null"])
def test_body_that_is_not_an_object_is_400(client, body):
    response = client.post("/api/auth/login", data=body, content_type="application/json")
    error = assert_error_shape(response, 400, "validation_error")
    assert error["details"]["fields"] == {"body": ["The request body must be a JSON object."]}


def test_empty_body_is_400(client):
    response = client.post("/api/auth/login")
    error = assert_error_shape(response, 400, "validation_error")
    assert "body" in error["details"]["fields"]


def test_wrong_content_type_is_415(client):
    response = client.post("/api/auth/login", data="username=a&password=b")
    assert_error_shape(response, 415, "unsupported_media_type")
    response = client.post("/api/auth/login", data='{"username": "a"}', content_type="text/plain")
    assert_error_shape(response, 415, "unsupported_media_type")


def test_body_over_max_content_length_is_413(make_app):
    client = make_app(MAX_CONTENT_LENGTH=2048).test_client()
    response = client.post("/api/auth/login", json={"username": "a" * 4096, "password": "x"})
    assert_error_shape(response, 413, "payload_too_large")


def test_invalid_field_types_are_400_per_field(client):
    response = client.post("/api/auth/login", json={"username": ["a"], "password": None})
    error = assert_error_shape(response, 400, "validation_error")
    assert set(error["details"]["fields"]) == {"username", "password"}


def test_unexpected_exception_is_json_500_without_traceback(make_app):
    app = make_app()

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    @app.get("/api/teapot")
    def teapot():
        abort(422)

    client = app.test_client()
    response = client.get("/api/boom")
    error = assert_error_shape(response, 500, "internal_error")
    assert "secret internal detail" not in response.get_data(as_text=True)
    assert "Traceback" not in error["message"]
    assert_error_shape(client.get("/api/teapot"), 422, "unprocessable_entity")


def test_conflict_and_unauthorized_shapes(client, auth):
    auth.register("dup")
    assert_error_shape(auth.register("dup"), 409, "conflict")
    assert_error_shape(client.get("/api/profile", headers=bearer("nope")), 401, "invalid_token")
