"""Relay a provider's chunk stream through a queue, so the request can keep time while it waits.

The producer thread (a greenlet under gevent) reads the upstream; the consumer waits until a time it is
due to act, which enforces LLM_FIRST_TOKEN_TIMEOUT and LLM_STREAM_IDLE_TIMEOUT and emits heartbeats while
the upstream is silent. Writing a heartbeat is how a disconnected client is noticed: the write fails,
the generator is closed, and closing it closes the upstream response.

Closing the upstream response while the producer is blocked reading it fails under gevent (both run in
one thread, and the reader holds the response's buffer: "reentrant call"), and with threads it would wait
for that read. So the relay first ends the read (interrupt_upstream shuts the socket down), lets the
producer leave, and only then closes the response.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from app.errors import ProviderError
from app.utils.off_loop import gevent_active, start_daemon

HEARTBEAT = object()  # yielded while the upstream is silent; the route writes an SSE comment
PRODUCER_EXIT_WAIT = 5.0  # seconds the relay waits for an interrupted producer before closing anyway
_ALARM = ("alarm", None)  # queued by _AlarmWait's timer: a wait is due


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
    wait = _AlarmWait(items) if gevent_active() else _TimedWait(items)
    deadline = time.monotonic() + first_chunk_timeout
    waiting_for_first = True
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise _timeout(provider, waiting_for_first, first_chunk_timeout, idle_timeout)
            if items.queue:  # already there (this is the queue's one reader): no wait to set up
                item = items.get_nowait()
                if item is _ALARM:
                    continue  # it rang while this loop was busy: the wait below starts afresh, as ever
            else:
                item = wait(min(deadline, now + heartbeat_interval))
            if item is None:
                if time.monotonic() >= deadline:
                    raise _timeout(provider, waiting_for_first, first_chunk_timeout, idle_timeout)
                yield HEARTBEAT
                continue
            kind, value = item
            if kind == "chunk":
                waiting_for_first = False
                deadline = time.monotonic() + idle_timeout
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        wait.close()
        stopped.set()
        if not finished.is_set() and interrupt_upstream():
            finished.wait(PRODUCER_EXIT_WAIT)
        close_upstream()


class _TimedWait:
    """The next item, or None once `due` (a time.monotonic() value) has passed: the queue's own timeout."""

    def __init__(self, items: queue.Queue[Any]) -> None:
        self._items = items

    def __call__(self, due: float) -> Any:
        try:
            return self._items.get(timeout=max(0.0, due - time.monotonic()))
        except queue.Empty:
            return None

    def close(self) -> None:
        pass


class _AlarmWait(_TimedWait):
    """The same under gevent, where a timeout on get() builds, starts and cancels a gevent Timeout on every
    wait: about 23 K instructions a chunk, a tenth of a stream whose chunks arrive apart (bench/README.md).

    One event-loop timer per stream instead, not moved as chunks arrive (waits are mostly due later and
    later): when it rings before the current wait is due, it sets itself for the rest; when the wait is
    due, it puts an _ALARM in the queue, which wakes the consumer. A wait due earlier than the timer (an
    idle timeout shorter than the first-token one) sets it anew. An _ALARM found too early is skipped.
    """

    def __init__(self, items: queue.Queue[Any]) -> None:
        super().__init__(items)
        self._due = 0.0
        self._timer: Any = None
        self._rings_at = 0.0

    def __call__(self, due: float) -> Any:
        self._due = due
        items = self._items
        while True:
            if not items.queue and (self._timer is None or self._rings_at > due):  # about to wait
                self._set(due)
            item = items.get()
            if item is not _ALARM:
                return item
            if time.monotonic() >= due:
                return None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _set(self, at: float) -> None:
        import gevent

        self.close()
        self._rings_at = at
        self._timer = gevent.get_hub().loop.timer(max(0.0, at - time.monotonic()))
        self._timer.start(self._ring)

    def _ring(self) -> None:  # in the event loop: nothing here may block
        if time.monotonic() < self._due:
            self._set(self._due)  # replaces the timer that rang
        else:
            self.close()
            start_daemon(self._wake, name="relay-alarm")

    def _wake(self) -> None:
        with contextlib.suppress(queue.Full):  # a full queue: the consumer is not waiting
            self._items.put_nowait(_ALARM)


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
