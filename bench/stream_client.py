"""Concurrent streaming client: time to first token and whether every chunk arrived.

Raw asyncio sockets and a small HTTP/1.1 reader (chunked or close-delimited), so the client costs
little and measures the wire, not a library. One connection per stream, all opened at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class StreamResult:
    """What one streamed request saw."""

    status: int = 0
    ttft_s: float | None = None
    total_s: float = 0.0
    text: str = ""
    content_events: int = 0
    done: bool = False
    error: str = ""


@dataclass
class StreamRound:
    """All streams of a run."""

    results: list[StreamResult] = field(default_factory=list)

    def complete(self, expected_text: str) -> int:
        """How many streams got status 200, every chunk's text in order, and [DONE]."""
        return sum(1 for r in self.results if r.status == 200 and r.done and r.text == expected_text)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body_pieces(reader: asyncio.StreamReader, headers: dict[str, str]):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | Exception:
    parts = urlsplit(url)
    try:
        return await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
    except OSError as exc:
        return exc


async def stream_once(
    url: str,
    headers: dict[str, str],
    model: str,
    timeout_s: float,
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | Exception | None = None,
) -> StreamResult:
    """POST one streamed chat completion and read it to the end; the clock starts at the request."""
    parts = urlsplit(url)
    result = StreamResult()
    if isinstance(connection, Exception):
        result.error = f"connect: {type(connection).__name__}: {connection}"[:200]
        return result
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json"]
    head += ["Accept: text/event-stream", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            if connection is None:
                connection = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
            reader, writer = connection
            writer.write(request)
            await writer.drain()
            result.status, response_headers = await _read_head(reader)
            pending = b""
            texts: list[str] = []
            async for piece in _body_pieces(reader, response_headers):
                pending += piece
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        result.done = True
                        continue
                    if result.status != 200:
                        continue
                    event = json.loads(data)
                    for choice in event.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            if result.ttft_s is None:
                                result.ttft_s = time.perf_counter() - started
                            texts.append(content)
                            result.content_events += 1
            result.text = "".join(texts)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        result.total_s = time.perf_counter() - started
        if writer is not None:
            writer.close()
    return result


async def run_streams(
    url: str, headers: dict[str, str], model: str, concurrency: int, rounds: int, timeout_s: float = 60.0
) -> StreamRound:
    """`rounds` times, start `concurrency` streams at once and wait for all of them.

    The connections are opened first, so the time to first token measures the target's work on the
    request, not this client's burst of connects (which, on the shared core, would slow the mock too).
    """
    outcome = StreamRound()
    for _ in range(rounds):
        connections = await asyncio.gather(*(_connect(url) for _ in range(concurrency)))
        outcome.results += await asyncio.gather(
            *(stream_once(url, headers, model, timeout_s, c) for c in connections)
        )
    return outcome
