"""A fast OpenAI-compatible upstream for the benchmarks: raw asyncio, standard library only.

Behaviour is chosen per request, so one port serves every scenario through any gateway (they all
forward the model name, few forward headers or query strings):
  model name tokens, split on '-':  d<ms> delay before answering,  c<n> stream chunks,
                                    i<ms> gap between chunks       e.g. "mock-d500", "mock-c50-i20"
  headers (override the name):      x-mock-delay-ms, x-mock-chunks, x-mock-interval-ms
Streamed content is "w0 w1 ... w<n-1> " split one word per chunk, so a client can check that every
chunk arrived by comparing the joined text. Usage is in every non-stream answer, and in a last
chunk with empty choices when stream_options.include_usage is set, as OpenAI does.

Run: python bench/mock_upstream.py --port 18100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

DEFAULT_CHUNKS = 50
DEFAULT_INTERVAL_MS = 20
PROMPT_TOKENS = 9
MAX_HEADER_BYTES = 64 * 1024

_TASKS: set[asyncio.Future] = set()
_TASKS: set[asyncio.Future] = set()
_MODELS_BODY = json.dumps(
    {"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "bench"}]}
).encode()


def expected_stream_text(chunks: int) -> str:
    """The text a complete stream of `chunks` chunks joins to."""
    return "".join(f"w{i} " for i in range(chunks))


def parse_profile(model: str, headers: dict[str, str]) -> tuple[float, int, float]:
    """Delay (s), chunk count and chunk gap (s) for one request."""
    delay_ms, chunks, interval_ms = 0.0, DEFAULT_CHUNKS, float(DEFAULT_INTERVAL_MS)
    for token in model.replace("/", "-").split("-"):
        if len(token) < 2 or not token[1:].isdigit():
            continue
        if token[0] == "d":
            delay_ms = float(token[1:])
        elif token[0] == "c":
            chunks = int(token[1:])
        elif token[0] == "i":
            interval_ms = float(token[1:])
    delay_ms = float(headers.get("x-mock-delay-ms", delay_ms))
    chunks = int(headers.get("x-mock-chunks", chunks))
    interval_ms = float(headers.get("x-mock-interval-ms", interval_ms))
    return delay_ms / 1000.0, chunks, interval_ms / 1000.0


def _usage(completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }


def completion_body(model: str, request_id: str) -> bytes:
    """A non-streamed chat completion."""
    return json.dumps(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the mock upstream."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(6),
        }
    ).encode()


def _chunk(request_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None) -> bytes:
    payload = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class MockProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; requests are answered in order."""

    counter = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while not self.busy and not self.closed:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._send_simple(431, b'{"error":"headers too large"}', close=True)
                return
            lines = self.buffer[:head_end].decode("latin-1").split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                self._send_simple(400, b'{"error":"bad request line"}', close=True)
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._send_simple(411, b'{"error":"send a content-length"}', close=True)
                return
            body_end = head_end + 4 + length
            if len(self.buffer) < body_end:
                return
            body = self.buffer[head_end + 4 : body_end]
            self.buffer = self.buffer[body_end:]
            close = headers.get("connection", "").lower() == "close"
            self._route(method, target.split("?", 1)[0], headers, body, close)

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes, close: bool) -> None:
        if method == "POST" and path.endswith("/chat/completions"):
            try:
                request = json.loads(body)
                model = str(request.get("model", "mock"))
            except (ValueError, AttributeError):
                self._send_simple(400, b'{"error":{"message":"body is not JSON","type":"invalid"}}', close)
                return
            delay, chunks, interval = parse_profile(model, headers)
            stream = bool(request.get("stream"))
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            if not stream and delay <= 0:
                self._send_completion(model, close)
                return
            self.busy = True
            task = asyncio.ensure_future(
                self._answer_later(model, stream, include_usage, delay, chunks, interval, close)
            )
            _TASKS.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(_TASKS.discard)
        elif method == "GET" and path.endswith("/models"):
            self._send_simple(200, _MODELS_BODY, close)
        elif method == "GET" and path in ("/health", "/"):
            self._send_simple(200, b'{"status":"ok"}', close)
        else:
            self._send_simple(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}', close)

    def _next_id(self) -> str:
        MockProtocol.counter += 1
        return f"chatcmpl-mock{MockProtocol.counter}"

    def _send_simple(self, status: int, body: bytes, close: bool) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required"}.get(
            status, "Error"
        )
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        )
        self._write(head.encode() + body, close)

    def _send_completion(self, model: str, close: bool) -> None:
        self._send_simple(200, completion_body(model, self._next_id()), close)

    def _write(self, data: bytes, close: bool = False) -> None:
        if self.transport is None or self.closed:
            return
        self.transport.write(data)
        if close:
            self.transport.close()
            self.closed = True

    async def _answer_later(
        self,
        model: str,
        stream: bool,
        include_usage: bool,
        delay: float,
        chunks: int,
        interval: float,
        close: bool,
    ) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            if not stream:
                self._send_completion(model, close)
            else:
                await self._stream(model, include_usage, chunks, interval, close)
        finally:
            self.busy = False
        if self.buffer and not self.closed:
            self._process()

    async def _stream(
        self, model: str, include_usage: bool, chunks: int, interval: float, close: bool
    ) -> None:
        request_id, created = self._next_id(), int(time.time())
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            f"Transfer-Encoding: chunked\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        )
        first = _chunk(request_id, model, created, {"role": "assistant", "content": ""}, None)
        self._write(head.encode() + _http_chunk(first))
        for i in range(chunks):
            if i and interval > 0:
                await asyncio.sleep(interval)
            if self.closed:
                return
            self._write(_http_chunk(_chunk(request_id, model, created, {"content": f"w{i} "}, None)))
        tail = _chunk(request_id, model, created, {}, "stop")
        if include_usage:
            usage = {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(chunks),
            }
            tail += b"data: " + json.dumps(usage).encode() + b"\n\n"
        tail += b"data: [DONE]\n\n"
        self._write(_http_chunk(tail) + b"0\r\n\r\n", close)


async def serve(host: str, port: int) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    print(f"mock upstream listening on http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18100)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
