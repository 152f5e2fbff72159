"""The request bodies of /api/external/<method>: every 400 case the issue lists, and what passes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.schemas.external import ExternalGetRequest, ExternalRequest, request_model

URL = "https://api.example.com/v1/items"


def test_request_model_per_method() -> None:
    assert request_model("get") is ExternalGetRequest
    for method in ("POST", "put", "Delete"):
        assert request_model(method) is ExternalRequest
    with pytest.raises(KeyError):
        request_model("PATCH")


def test_a_full_body_validates() -> None:
    body = ExternalRequest.model_validate(
        {
            "url": URL,
            "headers": {"Authorization": "Bearer x", "X-Latin": "caf\u00e9"},
            "params": {"q": "x", "n": 2, "f": 1.5, "b": True, "tags": ["a", 1, False]},
            "payload": {"nested": [{"any": None}]},
            "use_json": True,
            "timeout": 2.5,
        }
    )
    assert body.params["b"] is True and body.params["tags"] == ["a", 1, False]
    assert body.timeout == 2.5
    form = ExternalRequest.model_validate({"url": URL, "payload": {"a": "1", "b": [1, 2]}, "use_json": False})
    assert form.use_json is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "https://user:pw@example.com/"}, "url"),
        ({"url": "https://user@example.com/"}, "url"),
        ({"url": "https:///nohost"}, "url"),
        ({"url": "https://example.com:70000/"}, "url"),
        ({"url": "https://exa mple.com/"}, "url"),
        ({"url": "https://example.com/\r\nX: 1"}, "url"),
        ({"url": ""}, "url"),
        ({"url": 5}, "url"),
        ({}, "url"),
        ({"url": URL, "headers": {"X-A": "a\r\nX-B: b"}}, "headers"),
        ({"url": URL, "headers": {"X-A": "a\nb"}}, "headers"),
        ({"url": URL, "headers": {"X-A": "a\rb"}}, "headers"),
        ({"url": URL, "headers": {"X-A": "\u20ac"}}, "headers"),
        ({"url": URL, "headers": {"X A": "x"}}, "headers"),
        ({"url": URL, "headers": {"X-\u00e9": "x"}}, "headers"),
        ({"url": URL, "headers": {"X-A": 1}}, "headers"),
        ({"url": URL, "params": {"a": {"b": 1}}}, "params"),
        ({"url": URL, "params": {"a": None}}, "params"),
        ({"url": URL, "params": {"a": [[1]]}}, "params"),
        ({"url": URL, "timeout": 0}, "timeout"),
        ({"url": URL, "timeout": -1}, "timeout"),
        ({"url": URL, "use_json": "yes"}, "use_json"),
        ({"url": URL, "payload": [1], "use_json": False}, None),
        ({"url": URL, "payload": {"a": {"b": 1}}, "use_json": False}, None),
        ({"url": URL, "base_url": "http://127.0.0.1/"}, "base_url"),
        ({"url": URL, "method": "PATCH"}, "method"),
    ],
)
def test_bad_bodies(body: dict[str, Any], field: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        ExternalRequest.model_validate(body)
    locations = {error["loc"][0] if error["loc"] else None for error in caught.value.errors()}
    assert field in locations


@pytest.mark.parametrize("payload", [{"a": 1}, None, [], "x", 0])
def test_get_takes_no_payload(payload: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        ExternalGetRequest.model_validate({"url": URL, "payload": payload})
    assert caught.value.errors()[0]["loc"] == ("payload",)
    ExternalGetRequest.model_validate({"url": URL})


def test_timeout_bound_from_context() -> None:
    ExternalRequest.model_validate({"url": URL, "timeout": 30}, context={"max_timeout": 30})
    with pytest.raises(ValidationError):
        ExternalRequest.model_validate({"url": URL, "timeout": 30.5}, context={"max_timeout": 30})


@given(st.text(min_size=1, max_size=20))
def test_header_values_with_line_breaks_never_validate(text: str) -> None:
    for breaker in ("\r", "\n", "\x00"):
        with pytest.raises(ValidationError):
            ExternalRequest.model_validate({"url": URL, "headers": {"X-A": text + breaker + text}})
