"""app/services/gateway/streaming.py's relay keeps time the same way with threads and under gevent: chunks
in order, heartbeats while the provider is silent, the first-token and idle deadlines."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import ProviderError
from app.services.gateway.streaming import HEARTBEAT, relay
from tests.fresh_app import run_in_fresh_app


def _relay(
    source: Iterator[dict[str, Any]], *, first: float = 1.0, idle: float = 1.0, heartbeat: float = 0.1
):
    return relay(
        source,
        provider="p",
        first_chunk_timeout=first,
        idle_timeout=idle,
        heartbeat_interval=heartbeat,
        close_upstream=lambda: None,
        interrupt_upstream=lambda: False,
    )


def _seen(events: Iterator[Any]) -> dict[str, Any]:
    items: list[Any] = []
    error = ""
    started = time.monotonic()
    try:
        for event in events:
            items.append("heartbeat" if event is HEARTBEAT else event["n"])
    except ProviderError as failure:
        error = f"{failure.kind}: {failure.message}"
    return {"items": items, "error": error, "seconds": time.monotonic() - started}


def _paced() -> Iterator[dict[str, Any]]:
    for n in range(20):
        time.sleep(0.003)  # each chunk arrives apart: the relay waits for every one
        yield {"n": n}
    time.sleep(0.35)
    yield {"n": 20}


def _late() -> Iterator[dict[str, Any]]:
    time.sleep(0.6)
    yield {"n": 0}


def _stalls() -> Iterator[dict[str, Any]]:
    yield {"n": 0}
    time.sleep(0.6)
    yield {"n": 1}


def scenarios() -> dict[str, dict[str, Any]]:
    """Each scenario's events, error and duration (run here, and in a process under gevent)."""
    return {
        "paced": _seen(_relay(_paced(), heartbeat=0.1)),
        "late": _seen(_relay(_late(), first=0.15, heartbeat=0.05)),
        "stalls": _seen(_relay(_stalls(), idle=0.2, heartbeat=0.05)),
        # The idle deadline comes before the wait set for the first token would end.
        "stalls_early": _seen(_relay(_stalls(), first=5.0, idle=0.2, heartbeat=5.0)),
    }


def _check(seen: dict[str, dict[str, Any]]) -> None:
    paced = seen["paced"]
    assert paced["error"] == ""
    assert paced["items"][:20] == list(range(20)) and paced["items"][-1] == 20
    assert 2 <= paced["items"].count("heartbeat") <= 4  # 0.35 s of silence, one every 0.1 s

    late = seen["late"]
    assert late["error"] == "timeout: p sent no first token within 0.15 s"
    assert set(late["items"]) <= {"heartbeat"} and late["items"]
    assert 0.1 <= late["seconds"] < 0.5

    stalls = seen["stalls"]
    assert stalls["error"] == "timeout: the stream from p went silent for more than 0.2 s"
    assert stalls["items"][0] == 0 and set(stalls["items"][1:]) == {"heartbeat"}
    assert 0.15 <= stalls["seconds"] < 0.55

    early = seen["stalls_early"]
    assert early["error"] == "timeout: the stream from p went silent for more than 0.2 s"
    assert early["items"] == [0]
    assert early["seconds"] < 1.0


def test_with_threads_the_relay_keeps_time():
    _check(scenarios())


_UNDER_GEVENT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import json

    import gevent.timeout

    timeouts_started = []
    start_new_or_dummy = gevent.timeout.Timeout._start_new_or_dummy

    def counting(timeout=None, *args, **kwargs):
        if timeout is not None and timeout != -1:
            timeouts_started.append(timeout)
        return start_new_or_dummy(timeout, *args, **kwargs)

    gevent.timeout.Timeout._start_new_or_dummy = staticmethod(counting)

    from tests.gateway.test_relay import scenarios

    print(json.dumps({"seen": scenarios(), "timeouts": len(timeouts_started)}))
    """
)


def test_under_gevent_the_relay_keeps_the_same_time_without_a_timeout_per_wait(tmp_path: Path):
    outcome = json.loads(run_in_fresh_app(_UNDER_GEVENT, tmp_path))
    _check(outcome["seen"])
    # A gevent Timeout per wait was ~23 K instructions a chunk; one event-loop timer per stream now.
    # (Before: at least one per chunk of the paced stream, 20 and more.)
    assert outcome["timeouts"] < 5
