"""One process's member of the consumer group that moves rows from a Redis stream into the database.

Each gunicorn worker of each instance runs one, under a name of its own (host:pid:random). It reads
new entries with XREADGROUP, inserts them in one transaction, then acknowledges and deletes them
(XACK, XDEL), so the stream holds only rows not yet written. Entries another consumer read and left
unacknowledged for `claim_idle` seconds (its process was killed) are taken over with XAUTOCLAIM and
written here. The insert skips keys already in the table, so an entry written twice (a crash between
COMMIT and XACK, a claim racing a slow writer) still makes one row.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask
from sqlalchemy.exc import DataError, IntegrityError

from app.extensions import db
from app.services.batch_writer import MAX_BATCH, commit_each
from app.services.stream_rows import IDEMPOTENCY_KEY, decode_row, insert_once
from app.utils.off_loop import run_off_loop

logger = logging.getLogger(__name__)

GROUP = "db-writers"
FIELD = b"row"  # each entry holds one field: the row as JSON
_FORGET_AFTER_MS = 3_600_000  # a consumer with nothing pending and silent this long is gone for good
_FORGET_EVERY = 600.0  # seconds between such clean-ups

Entry = tuple[Any, dict[Any, Any]]


@dataclass(frozen=True)
class StreamSettings:
    key: str  # the stream
    maxlen: int  # about how many unwritten rows it keeps; past that the oldest are trimmed
    claim_idle: float  # seconds an entry stays with a consumer that does not acknowledge it
    interval: float  # seconds between batch inserts
    max_batch: int = MAX_BATCH  # rows per read and insert
    rows: str = "usage"  # what the rows are, in log lines and the consumer thread's name

    @property
    def claim_every(self) -> float:
        """Seconds between looks for a dead consumer's entries: a row waits at most claim_idle plus this."""
        return min(max(self.claim_idle / 2, 0.5), 2.0)

    @property
    def block_ms(self) -> int:
        # Below the client's socket timeout (2 s, utils/redis_client.py), so a quiet stream is no error.
        return max(10, round(min(self.interval, 1.0) * 1000))


def consumer_name() -> str:
    """Unique per process, and readable in XINFO CONSUMERS: which host and pid held an entry."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class StreamConsumer:
    def __init__(
        self, app: Flask, model: type[Any], client: redis.Redis, settings: StreamSettings, name: str
    ) -> None:
        self.app = app
        self.model = model
        self.client = client
        self.settings = settings
        self.name = name
        self.dropped = 0  # rows trimmed before they were written, or refused by the database
        self._group_ready = False
        self._failing = False

    def run(self, stop: threading.Event) -> None:
        """The background loop, until `stop` is set."""
        backlog = False  # entries of ours a failed write left pending: written before new ones
        next_claim = next_forget = 0.0
        while not stop.is_set():
            try:
                self._ensure_group()
                now = time.monotonic()
                if now >= next_claim:
                    next_claim = now + self.settings.claim_every
                    backlog = not self.claim_idle() or backlog
                if now >= next_forget:
                    next_forget = now + _FORGET_EVERY
                    self._forget_dead_consumers()
                entries = self._read("0" if backlog else ">", None if backlog else self.settings.block_ms)
                if stop.is_set():
                    return  # what was just read stays pending, and is claimed by another consumer
                written = not entries or self._write(entries)
                backlog = (backlog and bool(entries)) or not written  # a backlog is read until empty
                self._recovered()
                if not written or 0 < len(entries) < self.settings.max_batch:
                    stop.wait(self.settings.interval)  # let the next batch gather; a full one says more wait
            except redis.RedisError as error:
                if stop.is_set():
                    return
                backlog = True
                self._failed(error)
                stop.wait(max(self.settings.interval, 1.0))

    def drain(self) -> int:
        """Write every row the stream held when called, whoever has read it; returns the number written.

        New entries first, then every pending one, taken at once (min-idle 0): in that order an entry
        another consumer reads meanwhile is still pending, so caught. Its consumer may be writing it
        too, which the idempotent insert makes harmless; this way a read right after a call sees it.
        """
        self._ensure_group()
        written = 0
        newest = self.client.xrevrange(self.settings.key, count=1)
        last = _sort_key(newest[0][0]) if newest else None
        while last is not None:
            entries = self._read(">", None)
            if not entries:
                break
            if not self._write(entries):
                return written
            written += len(entries)
            if _sort_key(entries[-1][0]) >= last:
                break  # the rest came after this drain began
        cursor: Any = "0-0"
        while True:
            cursor, entries = self._autoclaim(0, cursor)
            if entries and not self._write(entries):
                return written
            written += len(entries)
            if _id(cursor) == "0-0":
                return written

    def claim_idle(self) -> bool:
        """Write the entries other consumers read and left unacknowledged past `claim_idle` (they died).

        Returns False when a write failed: the claimed entries are then ours, pending, to write later.
        """
        cursor: Any = "0-0"
        idle_ms = round(self.settings.claim_idle * 1000)
        while True:
            cursor, entries = self._autoclaim(idle_ms, cursor)
            if entries:
                logger.warning(
                    "took over %d unwritten %s rows from a consumer gone silent",
                    len(entries),
                    self.settings.rows,
                )
                if not self._write(entries):
                    return False
            if _id(cursor) == "0-0":
                return True

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From id 0: rows added before any consumer existed are read too.
            self.client.xgroup_create(self.settings.key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        try:
            response = self.client.xreadgroup(
                GROUP,
                self.name,
                {self.settings.key: start},
                count=self.settings.max_batch,
                block=block_ms,
            )
        except redis.ResponseError as error:
            self._group_lost(error)
            raise
        return list(response[0][1]) if response else []

    def _autoclaim(self, min_idle_ms: int, cursor: Any) -> tuple[Any, list[Entry]]:
        try:
            response = self.client.xautoclaim(
                self.settings.key,
                GROUP,
                self.name,
                min_idle_time=min_idle_ms,
                start_id=cursor,
                count=self.settings.max_batch,
            )
        except redis.ResponseError as error:
            self._group_lost(error)
            raise
        # Entries trimmed (MAXLEN) while pending are dropped from the list by Redis and named in
        # response[2]; they are gone, counted as dropped.
        if len(response) > 2 and response[2]:
            self._count_lost(len(response[2]))
        return response[0], list(response[1])

    def _group_lost(self, error: redis.ResponseError) -> None:
        # The stream or its group vanished (Redis restarted without persistence, or was flushed); a
        # blocked XREADGROUP then answers UNBLOCKED, the next command NOGROUP.
        if str(error).startswith(("NOGROUP", "UNBLOCKED")):
            self._group_ready = False

    def _write(self, entries: Sequence[Entry]) -> bool:
        """Insert the entries' rows, then acknowledge and delete them; False (and still pending) on failure.

        Rows that cannot be written (unreadable, or refused by the database) are dropped. Two consumers
        can hold the same entry (a drain claims pending ones at once), so a drop is counted by the one
        whose XACK acknowledged it, once.
        """
        rows: list[tuple[Any, dict[str, Any]]] = []
        dropped: list[Any] = []
        for entry_id, fields in entries:
            raw = fields.get(FIELD) if fields else None
            if raw is None:
                self._count_lost(1)  # trimmed while pending: XREADGROUP 0 returns it empty
                continue
            try:
                rows.append((entry_id, decode_row(self.model, raw)))
            except ValueError:
                logger.error(
                    "dropping an unreadable entry on the %s stream: %r", self.settings.rows, raw[:200]
                )
                dropped.append(entry_id)
        # One lock order for every writer of the same rows (a claim racing a slow consumer): no deadlock.
        rows.sort(key=lambda item: item[1].get(IDEMPOTENCY_KEY) or "")
        if rows and not self._insert(rows, dropped):
            return False
        ids = [entry_id for entry_id, _ in entries]
        pipe = self.client.pipeline(transaction=True)
        if dropped:
            pipe.xack(self.settings.key, GROUP, *dropped)  # answers how many were still pending
        pipe.xack(self.settings.key, GROUP, *ids)
        pipe.xdel(self.settings.key, *ids)
        answers = pipe.execute()  # if this fails the entries stay pending and are written again: a no-op
        if dropped:
            self.dropped += answers[0]
        return True

    def _commit(self, rows: list[dict[str, Any]]) -> None:
        run_off_loop(lambda: self._insert_now(rows), background=True)  # the INSERT does not hold requests

    def _insert_now(self, rows: list[dict[str, Any]]) -> None:
        with self.app.app_context():
            db.session.execute(insert_once(self.model.__table__), rows)  # Core: see batch_writer.py
            db.session.commit()

    def _insert(self, rows: list[tuple[Any, dict[str, Any]]], dropped: list[Any]) -> bool:
        """Insert (entry id, row) pairs; the ids of rows the database refuses go to `dropped`."""
        try:
            self._commit([row for _, row in rows])
            return True
        except (IntegrityError, DataError):
            # The database refuses some row for itself (a value out of range, say): retrying would
            # block the stream for good, so write the others and drop that one.
            refused, stopped = commit_each(self._commit, [row for _, row in rows], self.settings.rows)
            dropped += [rows[index][0] for index in refused]
            return stopped is None  # else every entry stays pending; those written are written again: no-ops
        except Exception:
            logger.exception(
                "writing %d %s rows failed; they stay on the stream", len(rows), self.settings.rows
            )
            return False

    def _forget_dead_consumers(self) -> None:
        """Remove consumers long silent with nothing pending, so restarts do not pile up names."""
        for consumer in self.client.xinfo_consumers(self.settings.key, GROUP):
            name = consumer["name"]
            if consumer["pending"] == 0 and consumer["idle"] > _FORGET_AFTER_MS and _id(name) != self.name:
                self.client.xgroup_delconsumer(self.settings.key, GROUP, name)

    def _count_lost(self, count: int) -> None:
        logger.error(
            "%d %s rows were trimmed from the stream before they were written (USAGE_STREAM_MAXLEN)",
            count,
            self.settings.rows,
        )
        self.dropped += count

    def _failed(self, error: redis.RedisError) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "%s stream consumer %s: Redis failed, retrying: %s", self.settings.rows, self.name, error
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("%s stream consumer %s: Redis answers again", self.settings.rows, self.name)


def _id(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sort_key(entry_id: Any) -> tuple[int, int]:
    milliseconds, _, sequence = _id(entry_id).partition("-")
    return int(milliseconds), int(sequence or 0)
