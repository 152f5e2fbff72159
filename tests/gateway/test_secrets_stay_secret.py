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
