"""Honest streams: [DONE] only when the provider finished; cuts, stalls and silence end in an error event;
a client that goes away has its upstream closed."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from werkzeug.wrappers import Request, Response

from tests.gateway.conftest import provider_config
from tests.upstreams.openai_like import openai_like


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m-1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def slow_stream(
    *, first_delay: float = 0.0, gap: float = 0.0, words: int = 5, closed: threading.Event | None = None
):
    def handler(request: Request) -> Response:
        def events() -> Iterator[bytes]:
            try:
                time.sleep(first_delay)
                yield _chunk({"role": "assistant", "content": ""})
                for i in range(words):
                    yield _chunk({"content": f"w{i} "})
                    time.sleep(gap)
                yield _chunk({}, "stop")
                yield b"data: [DONE]\n\n"
            finally:
                if closed is not None:
                    closed.set()

        return Response(events(), mimetype="text/event-stream")

    return handler


def raw_events(gw, **body) -> list[str]:
    payload = {"model": "p/m-1", "messages": [{"role": "user", "content": "Hi"}], "stream": True, **body}
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {gw.token}"},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def test_whole_stream_ends_with_done(upstream, gateway):
    standin = upstream(openai_like(reply="one two three"))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    events = raw_events(gw)
    assert events[-1] == "[DONE]"
    assert (
        "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
        == "one two three"
    )


class KeepAliveStreams:
    """A raw HTTP/1.1 server that keeps connections open across chunked SSE answers (werkzeug's closes
    them), and sends the body's last chunk a moment after [DONE], as a slow network would."""

    def __init__(self, tail_delay: float, send_done: bool = True) -> None:
        self.tail_delay = tail_delay
        self.events = [_chunk({"content": "hi"}), _chunk({}, "stop")] + (
            [b"data: [DONE]\n\n"] if send_done else []
        )
        self.connections = 0
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                head = [reader.readline()]
                while head[-1] not in (b"\r\n", b""):
                    head.append(reader.readline())
                if head[-1] == b"":
                    return  # the client closed the connection
                length = next(
                    int(line.split(b":")[1]) for line in head if line.lower().startswith(b"content-length")
                )
                reader.read(length)
                self.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for event in self.events:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                time.sleep(self.tail_delay)
                conn.sendall(b"0\r\n\r\n")

    def stop(self) -> None:
        self.listener.close()


def test_a_finished_stream_leaves_its_connection_for_the_next_call(gateway):
    server = KeepAliveStreams(tail_delay=0.05)
    try:
        gw = gateway(provider_config("p", "openai", server.url + "/v1"))
        for _ in range(3):
            assert raw_events(gw)[-1] == "[DONE]"
            time.sleep(0.2)  # the body's last chunk, after [DONE], is read in the background
        assert server.requests == 3
        assert server.connections == 1
    finally:
        server.stop()


def test_a_stream_read_to_the_end_of_its_body_leaves_its_connection_for_the_next_call(gateway):
    # A server that ends its stream without [DONE] (allowed for openai_compatible): the body's end is
    # read by the relay itself, which gives the connection back to the pool.
    server = KeepAliveStreams(tail_delay=0.0, send_done=False)
    try:
        gw = gateway(provider_config("p", "openai_compatible", server.url + "/v1"))
        for _ in range(3):
            events = raw_events(gw)
            assert events[-1] == "[DONE]" and json.loads(events[0])["choices"][0]["delta"]["content"] == "hi"
        assert server.requests == 3
        assert server.connections == 1
    finally:
        server.stop()


def test_a_compressed_stream_is_decoded(upstream, gateway):
    # Only when an operator's provider headers ask for it; the identity fast path must not take it.
    def handler(request: Request) -> Response:
        assert request.headers["Accept-Encoding"] == "gzip"
        events = _chunk({"content": "packed "}) + _chunk({"content": "words"}) + _chunk({}, "stop")
        body = gzip.compress(events + b"data: [DONE]\n\n")
        return Response(body, mimetype="text/event-stream", headers={"Content-Encoding": "gzip"})

    standin = upstream(handler)
    config = provider_config("p", "openai", standin.url + "/v1", headers={"Accept-Encoding": "gzip"})
    events = raw_events(gateway(config))
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]) == (
        "packed words"
    )


def test_a_stream_whose_body_never_ends_after_done_still_ends_for_the_client(gateway):
    server = KeepAliveStreams(tail_delay=3.0)  # the last chunk comes long after [DONE]
    try:
        gw = gateway(provider_config("p", "openai", server.url + "/v1"))
        started = time.monotonic()
        assert raw_events(gw)[-1] == "[DONE]"
        assert time.monotonic() - started < 1.0  # [DONE] is not held back for the body's end
    finally:
        server.stop()


def test_cut_stream_ends_with_an_error_event_and_no_done(upstream, gateway):
    standin = upstream(openai_like(reply="one two three four", cut_after=2))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    events = raw_events(gw)
    assert "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert error["code"] == "stream_interrupted" and error["message"]
    with pytest.raises(openai.APIError):
        list(
            gw.sdk.chat.completions.create(
                model="p/m-1", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
        )


def test_error_event_from_the_provider_is_forwarded_as_an_error(upstream, gateway):
    standin = upstream(openai_like(stream_error={"message": "overloaded right now", "type": "server_error"}))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    events = raw_events(gw)
    assert "[DONE]" not in events
    assert "overloaded right now" in json.loads(events[-1])["error"]["message"]


def test_malformed_event_is_dropped_not_forwarded(upstream, gateway):
    standin = upstream(openai_like(reply="fine answer", garbage_line=True))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"))
    events = raw_events(gw)
    assert events[-1] == "[DONE]"
    assert all(e == "[DONE]" or json.loads(e) for e in events)


def test_stalled_stream_ends_with_an_error_event(upstream, gateway):
    standin = upstream(slow_stream(gap=3.0, words=3))
    gw = gateway(
        provider_config("p", "openai", standin.url + "/v1"),
        LLM_STREAM_IDLE_TIMEOUT=0.5,
        LLM_STREAM_HEARTBEAT=0.2,
    )
    started = time.monotonic()
    events = raw_events(gw)
    assert time.monotonic() - started < 2.5
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "timeout"


def test_no_first_token_in_time_is_a_504_before_any_byte(upstream, gateway):
    standin = upstream(slow_stream(first_delay=3.0))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"), LLM_FIRST_TOKEN_TIMEOUT=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        gw.sdk.chat.completions.create(
            model="p/m-1", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    assert caught.value.status_code == 504
    assert time.monotonic() - started < 2.0


def test_client_disconnect_closes_the_upstream_stream(upstream, gateway):
    closed = threading.Event()
    standin = upstream(slow_stream(gap=0.2, words=100, closed=closed))
    gw = gateway(provider_config("p", "openai", standin.url + "/v1"), LLM_STREAM_HEARTBEAT=0.2)
    payload = {"model": "p/m-1", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with httpx.stream(
        "POST", f"{gw.url}/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {gw.token}"}
    ) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        left_at = time.monotonic()
    # 100 words 0.2 s apart would take 20 s; the upstream must be let go within about a second.
    assert closed.wait(timeout=3.0)
    assert time.monotonic() - left_at < 2.0


def test_mock_provider_streams_tools_and_usage(gateway):
    gw = gateway()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    stream = gw.sdk.chat.completions.create(
        model="mock/echo-1",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].choices[0].delta.tool_calls[0].function.name == "get_weather"
    assert chunks[-1].usage.total_tokens > 0
    plain = gw.sdk.chat.completions.create(
        model="mock/echo-1", messages=[{"role": "user", "content": "hello"}]
    )
    assert plain.choices[0].message.content == "Mock reply to: hello"
