"""The benchmark's own tools: the mock upstream answers as OpenAI does and the stream client counts right."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import mock_upstream
import report
import targets
from stream_client import run_streams


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    task: list[asyncio.Task] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        task.append(loop.create_task(mock_upstream.serve("127.0.0.1", port)))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    loop.call_soon_threadsafe(task[0].cancel)
    thread.join(timeout=5)


def test_profile_comes_from_model_name_and_headers_override_it() -> None:
    assert mock_upstream.parse_profile("openai/mock-d500-c7-i3", {}) == (0.5, 7, 0.003)
    assert mock_upstream.parse_profile("mock-d500", {"x-mock-delay-ms": "0"})[0] == 0


def test_completion_carries_usage(mock_url: str) -> None:
    response = httpx.post(f"{mock_url}/chat/completions", json={"model": "mock", "messages": []})
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "chat.completion"
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


def test_delay_is_honoured(mock_url: str) -> None:
    started = time.perf_counter()
    response = httpx.post(f"{mock_url}/chat/completions", json={"model": "mock-d200", "messages": []})
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.2


def test_stream_client_sees_every_chunk_and_usage_chunk_is_last(mock_url: str) -> None:
    outcome = asyncio.run(run_streams(f"{mock_url}/chat/completions", {}, "mock-c5-i1", 4, 2))
    assert len(outcome.results) == 8
    assert outcome.complete(mock_upstream.expected_stream_text(5)) == 8
    assert all(r.content_events == 5 and r.ttft_s is not None for r in outcome.results)
    with httpx.stream(
        "POST",
        f"{mock_url}/chat/completions",
        json={"model": "mock-c2-i1", "stream": True, "stream_options": {"include_usage": True}},
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"choices": []' in events[-2] and '"completion_tokens": 2' in events[-2]


def test_stream_client_reports_a_short_stream_as_incomplete(mock_url: str) -> None:
    outcome = asyncio.run(run_streams(f"{mock_url}/chat/completions", {}, "mock-c3-i1", 2, 1))
    assert outcome.complete(mock_upstream.expected_stream_text(4)) == 0


def test_flask_floor_relays_calls_and_streams_under_the_production_server(
    mock_url: str, tmp_path: Path
) -> None:
    upstream = targets.Target("direct", "mock", base_url=mock_url)
    floor = targets.start_flask_floor(tmp_path, upstream, sys.executable, 1, ["mock"])  # waits for a 200
    try:
        assert "gevent_worker.Worker" in (tmp_path / "flask.log").read_text()
        outcome = asyncio.run(run_streams(floor.chat_url, {}, "mock-c5-i1", 4, 1))
        assert outcome.complete(mock_upstream.expected_stream_text(5)) == 4
        assert all(r.content_events == 5 for r in outcome.results)
    finally:
        floor.stop()
    assert not floor.root_pids()


def test_report_ratios_and_added_latency() -> None:
    sweep = {
        "direct": {"a_p50_ms": 0.1, "a_p99_ms": 0.2, "c_rps": 500.0},
        "gateway": {"a_p50_ms": 1.1, "a_p99_ms": 2.2, "c_rps": 495.0},
        "litellm": {"a_p50_ms": 10.1, "a_p99_ms": 20.2, "c_rps": 80.0},
    }
    page = report.render([sweep], {n: n for n in report.ORDER}, {}, {}, [], [], [])
    assert sweep["gateway"]["a_added_p50_ms"] == pytest.approx(1.0)
    assert sweep["gateway"]["c_pct_of_direct"] == pytest.approx(99.0)
    assert "| 0.10x |" in page  # added p50: 1.0 over LiteLLM's 10.0


@pytest.mark.parametrize("extra", [[], ["--stream", "3"], ["--stream", "3", "--interval", "5"]])
def test_call_cost_drives_real_calls_through_the_gateway(extra: list[str]) -> None:
    # Without valgrind it times the calls instead; either way every call must come back 200.
    script = Path(__file__).resolve().parent.parent / "bench" / "call_cost.py"
    done = subprocess.run(
        [sys.executable, str(script), "--cpu", "--calls", "5", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.fullmatch(r"\d+\.\d{3} ms CPU per call\n", done.stdout)
