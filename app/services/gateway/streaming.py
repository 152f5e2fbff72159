"""Relay a provider's chunk stream through a queue, so the request can keep time while it waits.

The producer thread (a greenlet under gevent) reads the upstream; the consumer waits with a timeout,
which enforces LLM_FIRST_TOKEN_TIMEOUT and LLM_STREAM_IDLE_TIMEOUT and emits heartbeats while the
upstream is silent. Writing a heartbeat is how a disconnected client is noticed: the write fails,
the generator is closed, and closing it closes the upstream response.

Closing the upstream response while the producer is blocked reading it fails under gevent (both run in
one thread, and the reader holds the response's buffer: "reentrant call"), and with threads it would wait
for that read. So the relay first ends the read (interrupt_upstream shuts the socket down), lets the
producer leave, and only then closes the response.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from app.errors import ProviderError
from app.utils.off_loop import start_daemon

HEARTBEAT = object()  # yielded while the upstream is silent; the route writes an SSE comment
PRODUCER_EXIT_WAIT = 5.0  # seconds the relay waits for an interrupted producer before closing anyway


def relay(
    source: Iterator[dict[str, Any]],
    *,
    provider: str,
    first_chunk_timeout: float,
    idle_timeout: float,
    heartbeat_interval: float,
    close_upstream: Callable[[], None],
    interrupt_upstream: Callable[[], bool],
) -> Iterator[Any]:
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=256)
    stopped = threading.Event()
    finished = threading.Event()

    def produce() -> None:
        try:
            for chunk in source:
                while not stopped.is_set():
                    try:
                        items.put(("chunk", chunk), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stopped.is_set():
                    return
            items.put(("end", None))
        except BaseException as error:  # handed to the consumer, which raises it in the request
            if not stopped.is_set():
                items.put(("error", error))
        finally:
            if stopped.is_set():
                close_source(source)  # left early: the upstream is let go from this side, never mid-read
            finished.set()

    start_daemon(produce, name=f"relay-{provider}")
    deadline = time.monotonic() + first_chunk_timeout
    waiting_for_first = True
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(provider, waiting_for_first, first_chunk_timeout, idle_timeout)
            try:
                kind, value = items.get(timeout=min(remaining, heartbeat_interval))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise _timeout(provider, waiting_for_first, first_chunk_timeout, idle_timeout) from None
                yield HEARTBEAT
                continue
            if kind == "chunk":
                waiting_for_first = False
                deadline = time.monotonic() + idle_timeout
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stopped.set()
        if not finished.is_set() and interrupt_upstream():
            finished.wait(PRODUCER_EXIT_WAIT)
        close_upstream()


def close_source(source: Iterator[Any]) -> None:
    """Close a generator (or anything with close()) now, rather than when it is collected."""
    close = getattr(source, "close", None)
    if close is not None:
        close()


def _timeout(provider: str, first: bool, first_timeout: float, idle_timeout: float) -> ProviderError:
    if first:
        message = f"{provider} sent no first token within {first_timeout:g} s"
    else:
        message = f"the stream from {provider} went silent for more than {idle_timeout:g} s"
    return ProviderError(message, kind="timeout", provider=provider)
