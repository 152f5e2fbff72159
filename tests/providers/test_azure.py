from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.create_embedding_response import CreateEmbeddingResponse

from app.errors import ProviderError
from app.providers.azure import DEFAULT_API_VERSION, AzureOpenAIAdapter
from app.providers.base import ProviderSettings
from tests.providers import wire
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Upstream

CHAT = {"model": "alias", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


def settings(base_url: str = "https://res.openai.azure.com/", **options: str) -> ProviderSettings:
    return ProviderSettings(name="azure", base_url=base_url, api_key="az-key", options=options)


def test_chat_request_uses_deployment_url_and_api_key_header():
    request = AzureOpenAIAdapter(settings()).chat_request(CHAT, "gpt4o-prod", stream=False)
    assert request.url == (
        "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions"
        f"?api-version={DEFAULT_API_VERSION}"
    )
    assert request.headers["api-key"] == "az-key"
    assert "Authorization" not in request.headers
    assert request.json["messages"] == CHAT["messages"]


def test_api_version_option_and_deployment_quoting():
    request = AzureOpenAIAdapter(settings(api_version="2025-04-01-preview")).embeddings_request(
        ["x"], "emb/dep", dimensions=None
    )
    assert request.url == (
        "https://res.openai.azure.com/openai/deployments/emb%2Fdep/embeddings?api-version=2025-04-01-preview"
    )


def test_content_filter_error():
    body = (
        b'{"error": {"message": "filtered", "type": null, "param": "prompt", "code": "content_filter",'
        b' "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation"}}}'
    )
    error = AzureOpenAIAdapter(settings()).parse_error(400, body, {})
    assert error.kind == "content_policy"


def test_missing_key():
    adapter = AzureOpenAIAdapter(ProviderSettings(name="azure", base_url="https://r.openai.azure.com"))
    with pytest.raises(ProviderError) as info:
        adapter.chat_request(CHAT, "d", stream=True)
    assert info.value.kind == "authentication"


def test_against_stand_in():
    with Upstream(openai_like(reply="hello azure")) as up:
        adapter = AzureOpenAIAdapter(settings(up.url))
        completion = wire.chat(adapter, CHAT, "dep1")
        assert up.last.path == "/openai/deployments/dep1/chat/completions"
        assert up.last.query == f"api-version={DEFAULT_API_VERSION}"
        assert up.last.headers["Api-Key"] == "az-key"
        ChatCompletion.model_validate(completion)
        chunks = wire.stream(adapter, CHAT, "dep1")
        for c in chunks:
            ChatCompletionChunk.model_validate(c)
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == (
            "hello azure"
        )
        out = wire.embeddings(adapter, ["a"], "emb1")
        assert up.last.path == "/openai/deployments/emb1/embeddings"
        CreateEmbeddingResponse.model_validate(out)
