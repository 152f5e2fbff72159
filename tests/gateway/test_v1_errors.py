"""Errors on /v1 come in OpenAI's shape with the matching status, so SDKs raise the right exception."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.conftest import provider_config
from tests.upstreams.anthropic import anthropic_upstream
from tests.upstreams.openai_like import openai_like

HI = [{"role": "user", "content": "Hi"}]


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("upstream_status", "body", "headers", "status", "exception"),
    [
        (
            429,
            {"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}},
            {"Retry-After": "7"},
            429,
            openai.RateLimitError,
        ),
        (
            401,
            {"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}},
            {},
            502,
            openai.InternalServerError,
        ),
        (
            503,
            {"error": {"message": "overloaded", "type": "server_error"}},
            {},
            503,
            openai.InternalServerError,
        ),
        (500, {"error": {"message": "boom", "type": "server_error"}}, {}, 502, openai.InternalServerError),
        (
            400,
            {
                "error": {
                    "message": "too long",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
            },
            {},
            400,
            openai.BadRequestError,
        ),
    ],
)
def test_provider_errors_map_to_openai_errors(
    upstream, gateway, upstream_status, body, headers, status, exception
):
    standin = upstream(openai_like(fail_status=upstream_status, fail_body=body, fail_headers=headers))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    with pytest.raises(exception) as caught:
        gw.sdk.chat.completions.create(model="p/m-1", messages=HI)
    assert caught.value.status_code == status
    if status == 429:
        assert caught.value.response.headers["Retry-After"] == "7"
    # A streaming request that fails before its first chunk gets the same HTTP error, not a 200.
    with pytest.raises(exception):
        gw.sdk.chat.completions.create(model="p/m-1", messages=HI, stream=True)


def test_anthropic_overloaded_is_503(upstream, gateway):
    standin = upstream(
        anthropic_upstream(
            error_status=529,
            error_body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    )
    gw = gateway(provider_config("p", "anthropic", standin.url))
    with pytest.raises(openai.InternalServerError) as caught:
        gw.sdk.chat.completions.create(model="p/m-1", messages=HI)
    assert caught.value.status_code == 503
    assert "Overloaded" in caught.value.message


def test_unreachable_provider_is_502(gateway):
    gw = gateway(provider_config("p", "openai", "http://127.0.0.1:1/v1"))
    with pytest.raises(openai.InternalServerError) as caught:
        gw.sdk.chat.completions.create(model="p/m-1", messages=HI)
    assert caught.value.status_code == 502


def test_unknown_model_is_404(gateway):
    gw = gateway()
    with pytest.raises(openai.NotFoundError) as caught:
        gw.sdk.chat.completions.create(model="nobody/nothing", messages=HI)
    assert caught.value.code == "model_not_found"


def test_missing_or_bad_credentials_are_401(gateway):
    gw = gateway()
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="mock/echo-1", messages=HI)
    response = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "mock/echo-1", "messages": HI})
    assert assert_openai_error(response, 401)["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "mock/echo-1", "messages": []}, "messages"),
        ({"model": "mock/echo-1", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0"),
        ({"model": "mock/echo-1", "messages": [{"role": "user"}]}, "messages.0.user.content"),
        ({"model": "mock/echo-1", "messages": HI, "temperature": 7}, "temperature"),
        ({"model": "mock/echo-1", "messages": HI, "base_url": "http://169.254.169.254"}, "base_url"),
        (
            {"model": "mock/echo-1", "messages": [{"role": "user", "content": "x", "api_key": "k"}]},
            "messages.0.user.api_key",
        ),
        (
            {
                "model": "mock/echo-1",
                "messages": HI,
                "tools": [{"type": "function", "function": {"name": "bad name!"}}],
            },
            "tools.0.function.name",
        ),
        (
            {
                "model": "mock/echo-1",
                "messages": HI,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
            },
            "tools.0.function.parameters",
        ),
        (
            {
                "model": "mock/echo-1",
                "messages": HI,
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "body",
        ),
        ({"messages": HI}, "model"),
        ({"model": "m" * 201, "messages": HI}, "model"),  # longer than a usage row holds
        # Strict types, as OpenAI has them: `true` is not 1 and "0.5" is not a number.
        ({"model": "mock/echo-1", "messages": HI, "max_tokens": True}, "max_tokens"),
        ({"model": "mock/echo-1", "messages": HI, "max_tokens": 2**31}, "max_tokens"),
        ({"model": "mock/echo-1", "messages": HI, "temperature": "0.5"}, "temperature"),
        ({"model": "mock/echo-1", "messages": HI, "stream": "yes"}, "stream"),
        ({"model": "mock/echo-1", "messages": HI, "tool_choice": "required"}, "body"),
        ({"model": "mock/echo-1", "messages": HI, "stream_options": {"include_usage": True}}, "body"),
    ],
)
def test_bad_requests_are_400_naming_the_field(gateway, body, param):
    gw = gateway()
    response = httpx.post(
        f"{gw.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {gw.token}"}
    )
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_oversized_request_is_413(gateway):
    gw = gateway(MAX_CONTENT_LENGTH=4096)
    with pytest.raises(openai.APIStatusError) as caught:
        gw.sdk.chat.completions.create(
            model="mock/echo-1", messages=[{"role": "user", "content": "x" * 10_000}]
        )
    assert caught.value.status_code == 413


def test_models_lists_what_the_caller_may_use(upstream, gateway):
    standin = upstream(openai_like())
    config = provider_config("p", "openai", standin.url + "/v1", models=["m-1", "m-2"])
    config["models"] = {"fast": {"provider": "p", "model": "m-1", "input_price": 0.5, "output_price": 1.5}}
    gw = gateway(config)
    models = {model.id: model.owned_by for model in gw.sdk.models.list()}
    assert models["fast"] == "p"
    assert models["p/m-1"] == "p" and models["p/m-2"] == "p"
    assert "mock" in models["mock/echo-1"]
    assert gw.sdk.chat.completions.create(model="fast", messages=HI).choices[0].message.content


def test_a_replayed_assistant_message_is_accepted_and_its_output_fields_stay_here(upstream, gateway):
    # The openai SDK's tool loop appends `completion.choices[0].message` to the messages as it came:
    # with annotations, refusal, audio and function_call. A tool call id may be long (Gemini's carries a
    # thought signature).
    standin = upstream(openai_like(reply="done"))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    call_id = "call_" + "s" * 600
    replayed = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    messages = [*HI, replayed, {"role": "tool", "tool_call_id": call_id, "content": "42"}]
    completion = gw.sdk.chat.completions.create(model="p/gpt-x", messages=messages, temperature=1)
    assert completion.choices[0].message.content == "done"
    sent = standin.last.json["messages"][1]
    assert sent["tool_calls"][0]["id"] == call_id
    assert not {"annotations", "audio", "function_call"} & set(sent)
