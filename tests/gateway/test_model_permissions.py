"""An API key limited to some models can use only those, and sees only those."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import bearer
from tests.gateway.conftest import provider_config
from tests.upstreams.openai_like import openai_like


def test_key_limited_to_models(upstream, gateway):
    standin = upstream(openai_like(reply="allowed"))
    config = provider_config("p", "openai", standin.url + "/v1", models=["m-1", "m-2"])
    gw = gateway(config)
    created = gw.app.test_client().post(
        "/api/keys", json={"name": "limited", "models": ["p/m-1"]}, headers=bearer(gw.token)
    )
    assert created.status_code == 201, created.get_json()
    key = created.get_json()["key"]
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    assert client.chat.completions.create(model="p/m-1", messages=hi).choices[0].message.content == "allowed"
    for forbidden in ("p/m-2", "mock/echo-1"):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model=forbidden, messages=hi)
        assert caught.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        list(client.chat.completions.create(model="p/m-2", messages=hi, stream=True))
    assert [model.id for model in client.models.list()] == ["p/m-1"]
    # The account's own token is not limited.
    assert {model.id for model in gw.sdk.models.list()} >= {"p/m-1", "p/m-2", "mock/echo-1"}
    assert len(standin.requests) == 1
