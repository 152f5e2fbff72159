"""Write rows in batches from a background thread, so the request path never waits on an INSERT.

Rows are queued in memory and inserted every `interval` seconds (or as soon as `max_batch` are waiting),
one transaction per batch. A failed insert keeps the rows for the next try, up to `max_pending`; beyond
that the oldest are dropped and counted, so a dead database cannot exhaust memory. A row the database
refuses for itself (IntegrityError, DataError: a value too long, say) is dropped and counted instead, so
it cannot block the rows behind it; the others of its batch are written one at a time. `flush()` writes
what is waiting now; it runs at exit and on SIGTERM through the server's shutdown hook. What a SIGKILL can
lose is what was queued and not yet flushed: at most `interval` seconds of rows. Usage rows take this path
only without Redis (or while Redis fails); with Redis they go through stream_writer.py, which survives
a SIGKILL.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask
from sqlalchemy.exc import DataError, IntegrityError

from app.extensions import db
from app.utils.off_loop import run_off_loop

logger = logging.getLogger(__name__)

# Rows per insert. A flush's CPU comes in one burst on the worker's core (its own thread still needs the
# GIL): 100 rows are ~1 ms on SQLite, so requests arriving meanwhile wait less than behind 500
# (bench/README.md). The Redis stream's consumer reads and inserts as many at a time.
MAX_BATCH = 100


def commit_each(
    commit: Callable[[list[dict[str, Any]]], None], rows: Sequence[dict[str, Any]], table: str
) -> tuple[list[int], int | None]:
    """Commit rows one at a time, after their batch failed: (indexes of the rows the database refused,
    index where another failure stopped). The refused rows are logged for the caller to drop; on any other
    failure (the database gone meanwhile) that row and the ones after it are left unwritten (None: all tried).
    """
    refused: list[int] = []
    for index, row in enumerate(rows):
        try:
            commit([row])
        except (IntegrityError, DataError):
            logger.exception("dropping a %s row the database refuses: %r", table, row)
            refused.append(index)
        except Exception:
            logger.exception("insert into %s failed; %d rows left unwritten", table, len(rows) - index)
            return refused, index
    return refused, None


class BatchWriter:
    def __init__(
        self,
        app: Flask,
        model: type[Any],
        *,
        interval: float = 0.5,
        max_batch: int = MAX_BATCH,
        max_pending: int = 100_000,
        insert: Callable[[Any], Any] = db.insert,  # the INSERT statement for the model's table
    ) -> None:
        self.app = app
        self.model = model
        self.interval = interval
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.insert = insert
        self.dropped = 0
        self.observers: list[Callable[[dict[str, Any]], None]] = []  # told of each row (metrics)
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None
        atexit.register(self.flush)

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row; never blocks on the database. Every row of a writer has the same keys: a batch
        is one executemany."""
        for observe in self.observers:
            observe(row)
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(row)
            full = len(self._pending) >= self.max_batch
        self._ensure_thread()
        if full:
            self._wake.set()

    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Insert everything queued now; returns the number of rows written."""
        written = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                if not batch:
                    return written
                try:
                    self._commit(batch)
                except (IntegrityError, DataError):
                    # The database refuses some row for itself (a value too long, say): kept, it would fail
                    # every later flush too, so write the others and drop that one.
                    refused, stopped = commit_each(self._commit, batch, self.model.__tablename__)
                    with self._lock:
                        self.dropped += len(refused)
                    written += (len(batch) if stopped is None else stopped) - len(refused)
                    if stopped is not None:
                        self._keep(batch[stopped:])
                        return written
                    continue
                except Exception:
                    logger.exception(
                        "batch insert into %s failed; keeping %d rows", self.model.__tablename__, len(batch)
                    )
                    self._keep(batch)
                    return written
                written += len(batch)

    def _commit(self, rows: list[dict[str, Any]]) -> None:
        with self.app.app_context():
            # Core's executemany on the table: the ORM's bulk insert maps every row first (~20 % more CPU).
            db.session.execute(self.insert(self.model.__table__), rows)
            db.session.commit()

    def _keep(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pending.extendleft(reversed(rows))

    def _ensure_thread(self) -> None:
        # One flusher per process; a writer inherited through fork starts its own.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        threading.Thread(target=self._run, name=f"batch-{self.model.__tablename__}", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            run_off_loop(self.flush, background=True)  # under gevent, the INSERT does not hold the requests
