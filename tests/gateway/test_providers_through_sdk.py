"""Every provider, end to end: the official openai SDK talks to the gateway, the gateway talks to a
loopback stand-in that speaks that provider's wire format, and both ends are checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.gateway.conftest import PROVIDER_KEY, provider_config
from tests.upstreams.anthropic import anthropic_upstream
from tests.upstreams.cohere import cohere_upstream
from tests.upstreams.gemini import gemini_upstream
from tests.upstreams.ollama import ollama
from tests.upstreams.openai_like import openai_like

REPLY = "Hello from the provider"


@dataclass(frozen=True)
class Case:
    type: str
    handler: Any
    base_path: str  # appended to the stand-in's URL to form the provider's base_url
    chat_path: str  # the path the stand-in must see for a non-streaming chat, for model "m-1"
    key_header: tuple[str, str] | None  # the header carrying our provider key


CASES = [
    Case(
        "openai",
        lambda: openai_like(reply=REPLY),
        "/v1",
        "/v1/chat/completions",
        ("Authorization", f"Bearer {PROVIDER_KEY}"),
    ),
    Case(
        "openai_compatible",
        lambda: openai_like(reply=REPLY),
        "/v1",
        "/v1/chat/completions",
        ("Authorization", f"Bearer {PROVIDER_KEY}"),
    ),
    Case(
        "azure",
        lambda: openai_like(reply=REPLY),
        "",
        "/openai/deployments/m-1/chat/completions",
        ("api-key", PROVIDER_KEY),
    ),
    Case(
        "mistral",
        lambda: openai_like(reply=REPLY, usage_on_last_chunk=True),
        "/v1",
        "/v1/chat/completions",
        ("Authorization", f"Bearer {PROVIDER_KEY}"),
    ),
    Case(
        "anthropic", lambda: anthropic_upstream(text=REPLY), "", "/v1/messages", ("x-api-key", PROVIDER_KEY)
    ),
    Case(
        "gemini",
        lambda: gemini_upstream(text=REPLY),
        "",
        "/v1beta/models/m-1:generateContent",
        ("x-goog-api-key", PROVIDER_KEY),
    ),
    Case(
        "cohere",
        lambda: cohere_upstream(text=REPLY),
        "",
        "/v2/chat",
        ("Authorization", f"Bearer {PROVIDER_KEY}"),
    ),
    Case("ollama", lambda: ollama(reply=REPLY), "", "/api/chat", None),
]


@pytest.fixture(params=CASES, ids=[case.type for case in CASES])
def wired(request, upstream, gateway):
    case: Case = request.param
    standin = upstream(case.handler())
    gw = gateway(provider_config("p", case.type, standin.url + case.base_path))
    return case, standin, gw


def test_chat(wired):
    case, standin, gw = wired
    completion = gw.sdk.chat.completions.create(
        model="p/m-1",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    sent = standin.last
    assert sent.path == case.chat_path
    if case.key_header:
        name, value = case.key_header
        assert {k.lower(): v for k, v in sent.headers.items()}[name.lower()] == value
    # The caller's own token never travels to the provider.
    assert gw.token not in str(sent.headers) and gw.token not in sent.body.decode()


def test_streaming_chat(wired):
    _, _, gw = wired
    stream = gw.sdk.chat.completions.create(
        model="p/m-1",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_streaming_without_usage_option_sends_no_usage(wired):
    _, _, gw = wired
    chunks = list(
        gw.sdk.chat.completions.create(
            model="p/m-1", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


EMBEDDING_CASES = [
    ("openai", lambda: openai_like(), "/v1"),
    ("mistral", lambda: openai_like(), "/v1"),
    ("gemini", lambda: gemini_upstream(), ""),
    ("cohere", lambda: cohere_upstream(), ""),
    ("ollama", lambda: ollama(), ""),
]


@pytest.mark.parametrize(
    ("type_", "handler", "base_path"), EMBEDDING_CASES, ids=[c[0] for c in EMBEDDING_CASES]
)
def test_embeddings(upstream, gateway, type_, handler, base_path):
    standin = upstream(handler())
    gw = gateway(provider_config("p", type_, standin.url + base_path))
    # The SDK asks for base64 unless told otherwise, and decodes it: both encodings must work.
    as_base64 = gw.sdk.embeddings.create(model="p/e-1", input=["one", "two"])
    as_float = gw.sdk.embeddings.create(model="p/e-1", input=["one", "two"], encoding_format="float")
    assert len(as_base64.data) == len(as_float.data) == 2
    for decoded, plain in zip(as_base64.data, as_float.data, strict=True):
        assert decoded.embedding == pytest.approx(plain.embedding, rel=1e-6)
        assert len(plain.embedding) > 0


def test_embeddings_unsupported_provider_is_400(upstream, gateway):
    standin = upstream(anthropic_upstream())
    gw = gateway(provider_config("p", "anthropic", standin.url))
    import openai

    with pytest.raises(openai.BadRequestError):
        gw.sdk.embeddings.create(model="p/e-1", input="x")
