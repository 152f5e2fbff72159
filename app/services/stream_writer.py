"""Write rows through a Redis stream, so a row survives the process that served the call being killed.

With Redis configured, the request path appends each row to a stream (one XADD) and every worker of
every instance runs a consumer (stream_consumer.py) in one group that writes them to the database in
batches. A row XADDed by a process that is then SIGKILLed, or read by its consumer and not yet
written, is written by another consumer: at once if still unread, after USAGE_CLAIM_IDLE_SECONDS if
the dead consumer had read it. Each row carries an idempotency key, so it lands exactly once.

The stream is capped near USAGE_STREAM_MAXLEN entries (XADD MAXLEN ~): while the database is down rows
pile up there, and past the cap the oldest are trimmed and counted as dropped, so a dead database cannot
fill Redis. If Redis itself fails at XADD the row goes to an in-process BatchWriter instead (written
from memory, lost by a SIGKILL within BATCH_FLUSH_INTERVAL, like without Redis), and Redis is tried
again after a few seconds.

Same interface as BatchWriter: `add(row)`, `flush()`, `pending()`, `observers`, `dropped`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask

from app.services.batch_writer import BatchWriter
from app.services.stream_consumer import FIELD, StreamConsumer, StreamSettings, consumer_name
from app.services.stream_rows import IDEMPOTENCY_KEY, encode_row, insert_once

logger = logging.getLogger(__name__)

_REDIS_RETRY_AFTER = 5.0  # seconds rows go to memory after a failed XADD, so calls do not each wait on Redis


class StreamWriter:
    def __init__(self, app: Flask, model: type[Any], client: redis.Redis, settings: StreamSettings) -> None:
        self.app = app
        self.model = model
        self.client = client
        self.settings = settings
        self.observers: list[Callable[[dict[str, Any]], None]] = []  # told of each row (metrics)
        # Where rows go while Redis fails; its insert skips keys already written from the stream.
        self.memory = BatchWriter(
            app, model, interval=settings.interval, max_batch=settings.max_batch, insert=insert_once
        )
        self._consumer: StreamConsumer | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._redis_down = False
        self._retry_redis_at = 0.0

    @property
    def dropped(self) -> int:
        consumer = self._consumer
        return self.memory.dropped + (consumer.dropped if consumer is not None else 0)

    def add(self, row: dict[str, Any]) -> None:
        """Append one row to the stream (one round trip); to memory if Redis fails."""
        for observe in self.observers:
            observe(row)
        row = {**row, IDEMPOTENCY_KEY: uuid.uuid4().hex}
        if time.monotonic() >= self._retry_redis_at:
            try:
                self.client.xadd(
                    self.settings.key,
                    {FIELD: encode_row(row)},
                    maxlen=self.settings.maxlen,
                    approximate=True,
                )
            except redis.RedisError as error:
                self._redis_failed(error)
            else:
                self._redis_answered()
                self.start()
                return
        # The same key as above: if that XADD did land after all, the row is still written once.
        self.memory.add(row)

    def flush(self) -> int:
        """Write every row waiting now, in memory and in the stream (whichever process read it)."""
        written = self.memory.flush()
        try:
            written += self._process_consumer().drain()
        except redis.RedisError as error:
            logger.warning("%s stream unavailable, its rows are written later: %s", self.settings.rows, error)
        return written

    def pending(self) -> int:
        """Rows not yet written: this process's in memory, and everyone's in the stream."""
        try:
            in_stream = int(self.client.xlen(self.settings.key))
        except redis.RedisError:
            in_stream = 0
        return self.memory.pending() + in_stream

    def start(self) -> None:
        """Run this process's consumer in the background; once per process (after fork, a new one)."""
        self._process_consumer()

    def close(self) -> None:
        """Stop this process's consumer and write what waits (tests; servers flush on exit)."""
        self._stop.set()
        self.flush()

    def _process_consumer(self) -> StreamConsumer:
        consumer = self._consumer
        if consumer is not None and self._pid == os.getpid():
            return consumer
        with self._lock:
            if self._consumer is None or self._pid != os.getpid():
                self._consumer = StreamConsumer(
                    self.app, self.model, self.client, self.settings, consumer_name()
                )
                self._pid = os.getpid()
                threading.Thread(
                    target=self._consumer.run,
                    args=(self._stop,),
                    name=f"{self.settings.rows}-stream",
                    daemon=True,
                ).start()
            return self._consumer

    def _redis_failed(self, error: redis.RedisError) -> None:
        self._retry_redis_at = time.monotonic() + _REDIS_RETRY_AFTER
        if not self._redis_down:
            self._redis_down = True
            logger.warning(
                "%s stream unavailable, keeping %s rows in memory meanwhile: %s",
                self.settings.rows,
                self.settings.rows,
                error,
            )

    def _redis_answered(self) -> None:
        if self._redis_down:
            self._redis_down = False
            logger.info("%s stream reachable again", self.settings.rows)
