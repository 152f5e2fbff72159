"""Provider keys and user tokens never appear in logs or error messages, whatever happens."""

from __future__ import annotations

import logging
import time

import httpx
import openai
import pytest

from tests.gateway.conftest import PROVIDER_KEY, provider_config
from tests.upstreams.gemini import gemini_upstream
from tests.upstreams.openai_like import openai_like

HI = [{"role": "user", "content": "hi"}]


def test_a_full_run_logs_no_secret(upstream, gateway, caplog, capfd):
    gemini = upstream(gemini_upstream())
    failing = upstream(
        openai_like(fail_status=401, fail_body={"error": {"message": "Incorrect API key provided"}})
    )
    config = provider_config("g", "gemini", gemini.url)
    config["providers"]["bad"] = {"type": "openai", "base_url": failing.url + "/v1", "api_key": PROVIDER_KEY}
    with caplog.at_level(logging.DEBUG):
        gw = gateway(config, LOG_LEVEL="DEBUG")
        gw.sdk.chat.completions.create(
            model="g/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}]
        )
        list(
            gw.sdk.chat.completions.create(
                model="g/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        gw.sdk.embeddings.create(model="g/text-embedding-004", input="hi")
        with pytest.raises(openai.APIStatusError) as caught:
            gw.sdk.chat.completions.create(model="bad/m", messages=[{"role": "user", "content": "hi"}])
        httpx.get(f"{gw.url}/api/profile", headers={"Authorization": f"Bearer {gw.token}x"})
        created = httpx.post(
            f"{gw.url}/api/keys", json={"name": "logged?"}, headers={"Authorization": f"Bearer {gw.token}"}
        )
        api_key = created.json()["key"]
        keyed = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0)
        keyed.chat.completions.create(
            model="g/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}]
        )
        httpx.get(f"{gw.url}/api/profile", headers={"Authorization": f"Bearer {api_key}x"})
        # A request's access line is written after its response went out: wait for the last one's, at
        # this log level.
        output = ""
        deadline = time.monotonic() + 5
        while output.count('"path":"/api/profile"') < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
            output += "".join(capfd.readouterr())
    assert output.count('"path":"/api/profile"') == 2
    logs = caplog.text + output
    assert "/v1/chat/completions" in logs  # the access log was captured, so the check below means something
    for secret in (PROVIDER_KEY, gw.token, gw.token.split(".")[2], api_key, api_key[len("mla-") :]):
        assert secret not in logs
        assert secret not in str(caught.value.body)
    # Gemini's key travels in a header, never in the URL where proxies and logs would keep it.
    assert all("key=" not in request.query for request in gemini.requests)


@pytest.mark.parametrize(("status", "expected_status"), [(401, 502), (400, 400)])
def test_a_provider_message_quoting_our_key_reaches_neither_the_caller_nor_the_log(
    upstream, gateway, caplog, capfd, status, expected_status
):
    echo = upstream(
        openai_like(
            fail_status=status,
            fail_body={"error": {"message": f"Incorrect API key provided: {PROVIDER_KEY}."}},
        )
    )
    gw = gateway(provider_config("p", "openai", echo.url + "/v1"), LLM_MAX_RETRIES_PER_TARGET=0)
    headers = {"Authorization": f"Bearer {gw.token}"}
    with caplog.at_level(logging.DEBUG):
        chat = httpx.post(
            f"{gw.url}/v1/chat/completions", json={"model": "p/m", "messages": HI}, headers=headers
        )
        compare = httpx.post(
            f"{gw.url}/api/llm/compare",
            json={"models": ["p/m", "mock/echo-1"], "messages": HI},
            headers=headers,
        )
    assert chat.status_code == expected_status and compare.status_code == 200
    message = chat.json()["error"]["message"]
    assert compare.json()["results"][0]["error"]["message"] == message
    # The access line is written after the response went out: wait for it, within the capture.
    output = ""
    deadline = time.monotonic() + 5
    while '"path":"/api/llm/compare"' not in output and time.monotonic() < deadline:
        time.sleep(0.01)
        output += "".join(capfd.readouterr())
    logs = caplog.text + output
    if status == 401:  # about the gateway's key: none of the provider's text
        assert message == "p refused the gateway's credentials (HTTP 401)"
        assert "request failed" in logs  # logged with its message, so the check below means something
    else:
        assert message == "Incorrect API key provided: [redacted]."
    assert PROVIDER_KEY not in logs + chat.text + compare.text
