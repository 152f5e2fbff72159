"""Streams under the production server (gunicorn, gevent): a client that leaves mid-stream and an upstream
that stalls. Under gevent the relay's reader and the request share one thread, so closing the upstream
response from the request while the reader waits inside it must not fail; the call must still be recorded.
Runs gunicorn for real, as a separate process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from tests.gateway.test_streaming import slow_stream
from tests.production_server import start_server
from tests.upstreams.server import Upstream


@pytest.fixture
def served(request, tmp_path):
    closed = threading.Event()
    upstream = Upstream(slow_stream(closed=closed, **request.param)).start()
    server = start_server(
        tmp_path,
        OPENAI_API_KEY="k",
        OPENAI_BASE_URL=upstream.url + "/v1",
        LLM_STREAM_IDLE_TIMEOUT="1",
        LLM_STREAM_HEARTBEAT="5",
        BATCH_FLUSH_INTERVAL="0.1",
        LOG_LEVEL="INFO",  # with the access lines
    )
    url = server.url
    account = {"username": "streamer", "email": "streamer@example.com", "password": "Stream-Pass-123"}
    httpx.post(f"{url}/api/auth/register", json=account).raise_for_status()
    login = {"username": account["username"], "password": account["password"]}
    token = httpx.post(f"{url}/api/auth/login", json=login).json()["access_token"]
    yield server.port, token, server.database, server.log, closed
    server.stop()
    upstream.stop()


def _stream_request(token: str) -> bytes:
    body = orjson.dumps(
        {"model": "openai/m-1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _read_stream(port: int, token: str, until: Callable[[bytes], bool]) -> bytes:
    """Send one streamed chat request; what arrived by the time `until` said enough (or the server closed)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_stream_request(token))
        sock.settimeout(15)
        received = b""
        while not until(received) and (part := sock.recv(65536)):
            received += part
    return received


def _body_ended(received: bytes) -> bool:
    return received.endswith(b"0\r\n\r\n")  # the chunked body's last chunk


def _usage_status(database, timeout: float = 5.0) -> str | None:
    deadline = time.monotonic() + timeout
    with create_engine(f"sqlite:///{database}").connect() as connection:
        while time.monotonic() < deadline:
            status = connection.execute(text("SELECT status FROM usage_records")).scalar()
            if status is not None:
                return status
            time.sleep(0.1)
    return None


@pytest.mark.parametrize("served", [{"gap": 0.3, "words": 30}], indirect=True)
def test_a_client_that_leaves_mid_stream_is_recorded_and_the_upstream_released(served):
    port, token, database, log, upstream_closed = served
    received = _read_stream(port, token, until=lambda received: b"data: " in received)  # then leaves
    assert received.startswith(b"HTTP/1.1 200")
    # The next heartbeat or chunk written to the closed connection fails, and the gateway lets go.
    assert upstream_closed.wait(10)
    assert _usage_status(database) == "client_closed"
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    "served", [{"gap": 2.0, "words": 30}], indirect=True
)  # silent past the 1 s idle limit
def test_a_stalled_upstream_ends_the_stream_with_a_timeout_event(served):
    port, token, database, log, upstream_closed = served
    started = time.monotonic()
    received = _read_stream(port, token, until=_body_ended)
    assert time.monotonic() - started < 10
    assert b'"code":"timeout"' in received  # the error event, in place of [DONE]
    assert b"[DONE]" not in received
    assert _usage_status(database) == "error"
    assert upstream_closed.wait(10)
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("served", [{"gap": 0.1, "words": 10}], indirect=True)
def test_a_streams_access_line_is_written_when_it_ends_with_its_whole_duration(served):
    port, token, _, log, _ = served
    assert b"[DONE]" in _read_stream(port, token, until=_body_ended)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        access = [
            line
            for line in lines
            if line.get("logger") == "app.access" and line.get("path") == "/v1/chat/completions"
        ]
        if access:
            break
        time.sleep(0.1)
    assert len(access) == 1 and access[0]["status"] == 200 and access[0]["request_id"]
    assert access[0]["duration_ms"] >= 900  # ten words 0.1 s apart: the line waited for the stream's end
