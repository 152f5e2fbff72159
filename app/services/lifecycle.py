"""Draining: after SIGTERM a worker answers /api/ready with 503 for DRAIN_DELAY seconds (so a load
balancer stops sending), then stops taking requests and lets in-flight ones finish (gunicorn's
graceful_timeout); queued rows are flushed on the way out. A SIGKILL skips all of this: rows in the usage
stream are then written by another worker's consumer (stream_writer.py), rows in memory are lost."""

from __future__ import annotations

import gc
import signal
import sys
import threading
from typing import Any

from app.utils.off_loop import gevent_active

_draining = threading.Event()


def is_draining() -> bool:
    return _draining.is_set()


def begin_draining() -> None:
    _draining.set()


def install_drain_handler(worker: Any, delay: float, in_flight_timeout: float | None = None) -> None:
    """Replace gunicorn's worker SIGTERM handler: mark draining now, stop the worker `delay` seconds later,
    then give in-flight requests `in_flight_timeout` seconds. The master's graceful_timeout (which it
    counts from the signal) covers the delay and the flush too, so the worker's own wait is set here."""
    if in_flight_timeout is not None:
        worker.cfg.set("graceful_timeout", in_flight_timeout)  # this worker process's copy only

    def stop() -> None:
        worker.alive = False  # gunicorn's own graceful path: close the socket, finish in-flight requests

    def on_term(signum: int, frame: Any) -> None:
        begin_draining()
        if gevent_active():
            # Under gevent this handler runs in the event loop, where nothing may block: schedule instead.
            import gevent

            gevent.spawn_later(delay, stop)
        else:
            timer = threading.Timer(delay, stop)
            timer.daemon = True
            timer.start()

    signal.signal(signal.SIGTERM, on_term)


def start_writers(app: Any) -> None:
    """Start the usage stream's consumer as the worker starts, not at its first LLM call: a worker that
    serves none still writes the rows of a killed one."""
    for extension in list(app.extensions.values()):
        if isinstance(extension, _stream_writer_classes()):
            extension.start()


def keep_startup_objects_out_of_gc() -> None:
    """Once the worker has loaded the app: leave the objects alive now (modules, classes, the app, its
    schemas, ~130,000 of them) out of every later garbage collection. They live as long as the worker, yet
    each full collection walked them all: 85 to 110 ms with the event loop stopped, about every 10 s under
    load, which the calls in flight waited out (bench/README.md). Collections now walk what came after."""
    gc.freeze()


def flush_writers(app: Any) -> None:
    """Write every queued row (audit, usage) before the process exits."""
    from app.services.batch_writer import BatchWriter

    for extension in list(app.extensions.values()):
        if isinstance(extension, (BatchWriter, *_stream_writer_classes())):
            extension.flush()


def _stream_writer_classes() -> tuple[type, ...]:
    """StreamWriter, if it was loaded: only an app with Redis loads it (and the Redis client with it)."""
    module = sys.modules.get("app.services.stream_writer")
    return (module.StreamWriter,) if module else ()
