"""Stand-ins and configuration shared by the routing tests: failing, flaky, silent and resetting providers."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.gateway.conftest import PROVIDER_KEY
from tests.upstreams.openai_like import openai_like
from tests.upstreams.server import Handler, Upstream, json_response

FAST_RETRIES = {"max_per_target": 2, "backoff_base": 0.2, "backoff_cap": 0.4}


def routed_config(
    *servers: Any,
    strategy: str = "fallback",
    retries: dict[str, Any] | None = None,
    target_options: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A model "smart" whose targets are p0/m-0, p1/m-1, ... on the given servers, in order."""
    providers = {
        f"p{i}": {"type": "openai", "base_url": f"{server.url}/v1", "api_key": PROVIDER_KEY}
        for i, server in enumerate(servers)
    }
    options = target_options or [{} for _ in servers]
    targets = [{"provider": f"p{i}", "model": f"m-{i}", **options[i]} for i in range(len(servers))]
    model: dict[str, Any] = {"targets": targets, "strategy": strategy}
    if retries is not None:
        model["retries"] = retries
    return {"providers": providers, "models": {"smart": model}}


def chat_requests(server: Upstream) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def failing(status: int, headers: dict[str, str] | None = None, **error: Any) -> Handler:
    body = {"error": {"message": error.pop("message", f"failure {status}"), "type": "server_error", **error}}
    return openai_like(fail_status=status, fail_body=body, fail_headers=headers)


def flaky(failures: int, status: int, headers: dict[str, str] | None = None, **healthy: Any) -> Handler:
    """Fails its first `failures` requests with `status`, then answers like openai_like(**healthy)."""
    bad, good = failing(status, headers), openai_like(**healthy)
    seen = {"count": 0}
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            seen["count"] += 1
            fail = seen["count"] <= failures
        return bad(request) if fail else good(request)

    return handler


def switchable(**healthy: Any) -> tuple[Handler, dict[str, bool]]:
    """A handler that fails with 500 while state["down"] is True."""
    state = {"down": True}
    bad, good = failing(500), openai_like(**healthy)
    return (lambda request: bad(request) if state["down"] else good(request)), state


def silent(delay: float) -> Handler:
    """Answers only after `delay` seconds."""

    def handler(request: Request) -> Response:
        time.sleep(delay)
        return json_response({"error": {"message": "too late"}}, status=500)

    return handler


def empty_stream() -> Handler:
    """A 200 event stream that ends before any event: cut before the first chunk."""
    return lambda request: Response(iter([]), mimetype="text/event-stream")


def prefill_continuer(full: str) -> Handler:
    """Streams `full`, or, given a trailing assistant message, only what follows its text."""
    plain = openai_like(reply=full)

    def handler(request: Request) -> Response:
        messages = request.get_json()["messages"]
        if messages[-1]["role"] != "assistant":
            return plain(request)
        prefill = messages[-1]["content"]
        assert full.startswith(prefill), (full, prefill)
        rest = full[len(prefill) :]
        # openai_like splits on spaces; keep the leading space of the continuation on its first word.
        return openai_like(reply=rest)(request)

    return handler


class ResettingServer:
    """A TCP server that accepts, reads the request and resets the connection before any byte."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(1.0)
            with contextlib.suppress(OSError):
                conn.recv(65536)
            # SO_LINGER 0: close() sends RST, as a crashed or overloaded peer does.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()


def sse_data(events: Iterator[str]) -> list[str]:
    return [line[len("data: ") :] for line in events if line.startswith("data: ")]
