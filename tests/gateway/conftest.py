"""Fixtures for the gateway: provider stand-ins on loopback, a MODELS_CONFIG pointing at them, and the
gateway itself served on loopback so the official openai SDK can talk to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import AuthActions
from tests.upstreams.server import LiveServer, Upstream

PROVIDER_KEY = "sk-provider-secret-0123456789"


@pytest.fixture
def upstream() -> Iterator[Callable[..., Upstream]]:
    """Start stand-in servers: upstream(handler) -> a running Upstream, stopped after the test."""
    started: list[Upstream] = []

    def start(handler: Any) -> Upstream:
        server = Upstream(handler).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def models_file(tmp_path: Path) -> Callable[[dict[str, Any]], str]:
    def write(config: dict[str, Any]) -> str:
        path = tmp_path / "models.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    return write


class Gateway:
    """A running gateway with one signed-up user; `sdk` is an openai.OpenAI client pointed at it."""

    def __init__(self, app: Any, server: LiveServer, token: str) -> None:
        self.app = app
        self.server = server
        self.url = server.url
        self.token = token
        self.sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0, timeout=20)


@pytest.fixture
def gateway(
    make_app: Callable[..., Any], models_file: Callable[..., str]
) -> Iterator[Callable[..., Gateway]]:
    servers: list[LiveServer] = []

    def start(config: dict[str, Any] | None = None, **overrides: Any) -> Gateway:
        if config is not None:
            overrides["MODELS_CONFIG"] = models_file(config)
        app = make_app(**overrides)
        tokens = AuthActions(app.test_client()).signup("sdkuser")
        server = LiveServer(app).start()
        servers.append(server)
        return Gateway(app, server, tokens["access_token"])

    yield start
    for server in servers:
        server.stop()


def provider_config(name: str, type_: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {"providers": {name: {"type": type_, "base_url": base_url, "api_key": PROVIDER_KEY, **extra}}}
