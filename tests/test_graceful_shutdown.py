"""The production server on SIGTERM: /api/ready turns 503, in-flight streams finish, queued rows are
written, and the process exits 0. Runs gunicorn for real, as a separate process."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.gateway.test_streaming import slow_stream
from tests.production_server import start_server
from tests.upstreams.server import Upstream, json_response


@pytest.fixture
def server(tmp_path):
    stream_upstream = Upstream(slow_stream(gap=0.4, words=6)).start()
    api_upstream = Upstream(lambda request: json_response({"ok": True})).start()
    server = start_server(
        tmp_path,
        OPENAI_API_KEY="k",
        OPENAI_BASE_URL=stream_upstream.url + "/v1",
        EXTERNAL_API_ALLOW_PRIVATE_NETWORKS="127.0.0.1/32",
        DRAIN_DELAY="1.5",
        GRACEFUL_TIMEOUT="15",
        BATCH_FLUSH_INTERVAL="3600",  # nothing is written before shutdown unless shutdown writes it
    )
    yield server.process, server.url, server.database, api_upstream
    server.stop()
    stream_upstream.stop()
    api_upstream.stop()


def test_sigterm_drains_finishes_streams_flushes_rows_and_exits_0(server):
    process, url, database, api_upstream = server
    body = {"username": "drainer", "email": "drainer@example.com", "password": "Drain-Pass-123"}
    httpx.post(f"{url}/api/auth/register", json=body).raise_for_status()
    login = {"username": body["username"], "password": body["password"]}
    token = httpx.post(f"{url}/api/auth/login", json=login).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    call = httpx.post(f"{url}/api/external/get", json={"url": api_upstream.url + "/x"}, headers=headers)
    assert call.status_code == 200

    lines: list[str] = []
    first_chunk = threading.Event()

    def read_stream() -> None:
        payload = {"model": "openai/m-1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=payload, headers=headers, timeout=30
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    lines.append(line)
                    first_chunk.set()

    reader = threading.Thread(target=read_stream)
    reader.start()
    assert first_chunk.wait(10)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    ready = httpx.get(f"{url}/api/ready", timeout=5)
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}

    reader.join(timeout=20)
    assert lines[-1] == "data: [DONE]"  # the stream in flight finished whole
    assert process.wait(timeout=20) == 0
    with create_engine(f"sqlite:///{database}").connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM external_calls")).scalar() == 1


def test_a_drain_longer_than_the_graceful_timeout_still_writes_the_queued_rows(tmp_path):
    # gunicorn's master kills a worker graceful_timeout after the SIGTERM; counted as GRACEFUL_TIMEOUT
    # alone, it killed the worker during its DRAIN_DELAY, before it wrote the rows it had queued.
    api_upstream = Upstream(lambda request: json_response({"ok": True})).start()
    server = start_server(
        tmp_path,
        EXTERNAL_API_ALLOW_PRIVATE_NETWORKS="127.0.0.1/32",
        DRAIN_DELAY="2.5",
        GRACEFUL_TIMEOUT="1",
        BATCH_FLUSH_INTERVAL="3600",
    )
    try:
        body = {"username": "drainer", "email": "drainer@example.com", "password": "Drain-Pass-123"}
        httpx.post(f"{server.url}/api/auth/register", json=body).raise_for_status()
        login = {"username": body["username"], "password": body["password"]}
        token = httpx.post(f"{server.url}/api/auth/login", json=login).json()["access_token"]
        call = httpx.post(
            f"{server.url}/api/external/get",
            json={"url": api_upstream.url + "/x"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert call.status_code == 200

        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # past GRACEFUL_TIMEOUT, within DRAIN_DELAY: still up, and draining
        ready = httpx.get(f"{server.url}/api/ready", timeout=5)
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        assert server.process.wait(timeout=30) == 0
        with create_engine(f"sqlite:///{server.database}").connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM external_calls")).scalar() == 1
    finally:
        server.stop()
        api_upstream.stop()
