"""Usage rows through the Redis stream: types survive, batches are acknowledged, a dead consumer's rows
are taken over, a replay writes nothing twice, a Redis outage falls back to memory, and under gevent the
inserts run beneath the requests."""

from __future__ import annotations

import contextlib
import logging
import textwrap
import time
from datetime import UTC, datetime

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select

from app.extensions import db
from app.models import UsageRecord
from app.services.stream_consumer import FIELD, GROUP, StreamConsumer, StreamSettings
from app.services.stream_rows import decode_row, encode_row, insert_once
from app.services.stream_writer import StreamWriter
from app.utils.off_loop import BACKGROUND_NICENESS
from scripts.cluster import free_port
from tests.conftest import AuthActions
from tests.fresh_app import run_in_fresh_app

STREAM = "multillm:usage"


def usage_row(user_id: int, n: int, **changes) -> dict:
    return {
        "user_id": user_id,
        "api_key_id": None,
        "request_id": f"req-{n}",
        "endpoint": "chat",
        "model": "mock/echo-1",
        "provider": "mock",
        "upstream_model": "echo-1",
        "prompt_tokens": 3,
        "completion_tokens": n,
        "tokens_estimated": False,
        "cost_usd": 0.25 * n,
        "latency_ms": 12,
        "time_to_first_token_ms": None,
        "status": "ok",
        "error_code": None,
        "created_at": datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=UTC),
        **changes,
    }


def test_a_row_decodes_to_what_was_encoded():
    row = usage_row(7, 3, tokens_estimated=True, cost_usd=None, time_to_first_token_ms=40)
    assert decode_row(UsageRecord, encode_row(row)) == row
    assert decode_row(UsageRecord, encode_row(usage_row(7, 0, cost_usd=0.0)))["cost_usd"] == 0.0


stream_only = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
def stream_app(make_app):
    """An app whose usage goes through the stream, with short intervals and a one-second claim idle."""
    app = make_app(BATCH_FLUSH_INTERVAL=0.05, USAGE_CLAIM_IDLE_SECONDS=1.0)
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    return app, user_id, redis.Redis.from_url(app.config["REDIS_URL"])


def stored(app) -> list[UsageRecord]:
    with app.app_context():
        rows = list(db.session.scalars(select(UsageRecord).order_by(UsageRecord.completion_tokens)))
        db.session.expunge_all()
        return rows


def count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(UsageRecord))


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def queue_as_another_process(client: redis.Redis, rows: list[dict], consumer: str) -> None:
    """XADD rows as a writer would, and read them into `consumer`'s pending list, as its consumer would."""
    for row in rows:
        client.xadd(STREAM, {FIELD: encode_row(row)})
    with contextlib.suppress(redis.ResponseError):  # the app's consumer may have made it already
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    client.xreadgroup(GROUP, consumer, {STREAM: ">"})


def keyed(rows: list[dict]) -> list[dict]:
    return [{**row, "idempotency_key": f"key-{row['completion_tokens']}"} for row in rows]


@stream_only
def test_rows_round_trip_with_their_types_and_observers_see_each_once(stream_app):
    app, user_id, _ = stream_app
    writer = app.extensions["usage_writer"]
    assert isinstance(writer, StreamWriter)
    seen = []
    writer.observers.append(seen.append)
    rows = [
        usage_row(user_id, 1),
        usage_row(user_id, 2, cost_usd=None, tokens_estimated=True, status="error"),
    ]
    for row in rows:
        writer.add(row)
    writer.flush()
    assert seen == rows  # on the process that served the call, once each, without the stream's key
    written = stored(app)
    assert [
        (r.request_id, r.cost_usd, r.tokens_estimated, r.status, r.time_to_first_token_ms) for r in written
    ] == [("req-1", 0.25, False, "ok", None), ("req-2", None, True, "error", None)]
    assert all(r.created_at.replace(tzinfo=UTC) == rows[0]["created_at"] for r in written)
    assert all(len(r.idempotency_key) == 32 for r in written)


@stream_only
def test_the_background_consumer_writes_batches_and_acknowledges_them(stream_app):
    app, user_id, client = stream_app
    writer = app.extensions["usage_writer"]
    for n in range(120):
        writer.add(usage_row(user_id, n))
    assert wait_for(lambda: count(app) == 120)  # no flush: the consumer thread wrote them
    assert wait_for(lambda: client.xpending(STREAM, GROUP)["pending"] == 0)
    assert client.xlen(STREAM) == 0  # written entries are deleted, so the stream holds only backlog
    assert writer.pending() == 0


@stream_only
def test_a_dead_consumers_rows_are_written_by_another_after_the_idle_time(stream_app):
    app, user_id, client = stream_app
    rows = keyed([usage_row(user_id, n) for n in range(5)])
    queue_as_another_process(client, rows, consumer="dead-host:1:abc")
    app.extensions["usage_writer"].start()
    time.sleep(0.4)
    assert count(app) == 0  # read by the dead consumer: nobody else touches them before the idle time
    assert wait_for(lambda: count(app) == 5, timeout=5)
    assert wait_for(lambda: client.xpending(STREAM, GROUP)["pending"] == 0)
    assert [r.request_id for r in stored(app)] == [f"req-{n}" for n in range(5)]


@stream_only
def test_a_batch_replayed_after_a_crash_between_commit_and_ack_is_not_written_twice(stream_app):
    app, user_id, client = stream_app
    rows = keyed([usage_row(user_id, n) for n in range(4)])
    queue_as_another_process(client, rows, consumer="crashed:2:def")
    with app.app_context():  # what the crashed consumer got done: the COMMIT, not the XACK
        db.session.execute(insert_once(UsageRecord), rows)
        db.session.commit()
    app.extensions["usage_writer"].flush()  # takes the pending entries and writes them again
    assert count(app) == 4
    assert client.xpending(STREAM, GROUP)["pending"] == 0


@stream_only
def test_a_row_queued_twice_is_written_once(stream_app):
    # An XADD the client retried after a timeout can land twice, with one idempotency key.
    app, user_id, client = stream_app
    row = keyed([usage_row(user_id, 1)])[0]
    for _ in range(2):
        client.xadd(STREAM, {FIELD: encode_row(row)})
    app.extensions["usage_writer"].flush()
    assert count(app) == 1


@stream_only
def test_a_row_the_database_refuses_is_dropped_and_the_others_are_written(stream_app):
    app, user_id, client = stream_app
    writer = app.extensions["usage_writer"]
    writer.add(usage_row(user_id, 1))
    writer.add(usage_row(user_id + 1000, 2))  # no such user: the foreign key refuses it
    writer.add(usage_row(user_id, 3))
    writer.flush()
    assert [r.request_id for r in stored(app)] == ["req-1", "req-3"]
    assert writer.dropped == 1
    assert client.xlen(STREAM) == 0  # nothing left to block the stream


@stream_only
def test_a_refused_row_two_consumers_hold_is_counted_as_dropped_once(stream_app):
    # A drain takes pending entries at once, so a consumer that read the same entry may write it too:
    # the rows are inserted once (idempotency key), and the drop must be counted once as well.
    app, user_id, client = stream_app
    settings = StreamSettings(key=STREAM, maxlen=1000, claim_idle=60.0, interval=0.05)
    reader = StreamConsumer(app, UsageRecord, client, settings, "reader-1")
    drainer = StreamConsumer(app, UsageRecord, client, settings, "drainer-1")
    reader._ensure_group()
    rows = keyed([usage_row(user_id, 1), usage_row(user_id + 1000, 2)])  # no such user: refused
    queue_as_another_process(client, rows, "reader-1")
    held = client.xrange(STREAM)
    drainer.drain()
    assert reader._write(held)  # the reader gets to its batch after the drain wrote it
    assert [r.request_id for r in stored(app)] == ["req-1"]
    assert reader.dropped + drainer.dropped == 1


@stream_only
def test_with_redis_down_rows_go_to_memory_and_are_written_from_there(stream_app, caplog):
    app, user_id, _ = stream_app
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    settings = StreamSettings(key=STREAM, maxlen=1000, claim_idle=1.0, interval=0.05)
    writer = StreamWriter(app, UsageRecord, dead, settings)
    seen = []
    writer.observers.append(seen.append)
    with caplog.at_level(logging.WARNING, logger="app.services.stream_writer"):
        writer.add(usage_row(user_id, 1))
        writer.add(usage_row(user_id, 2))
    assert len(seen) == 2
    assert len([r for r in caplog.records if "keeping usage rows in memory" in r.message]) == 1
    assert writer.memory.pending() + count(app) == 2
    writer.close()
    assert [r.request_id for r in stored(app)] == ["req-1", "req-2"]


_CONSUMER_UNDER_GEVENT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import os
    import threading
    import time

    import gevent
    from app import create_app
    from app.extensions import db
    from app.services.stream_consumer import StreamConsumer
    from tests.conftest import AuthActions
    from tests.test_usage_stream import count, usage_row

    app = create_app()
    with app.app_context():
        db.create_all()
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    niceness = []
    insert_now = StreamConsumer._insert_now

    def recording(self, rows):
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        insert_now(self, rows)

    StreamConsumer._insert_now = recording
    app.extensions["usage_writer"].add(usage_row(user_id, 1))
    deadline = time.monotonic() + 20
    while count(app) < 1 and time.monotonic() < deadline:
        gevent.sleep(0.05)
    print(count(app), niceness[0], os.getpriority(os.PRIO_PROCESS, os.getpid()))
    """
)


@stream_only
def test_under_gevent_the_consumer_inserts_from_a_thread_at_a_lower_priority(backend, tmp_path):
    # The worker's requests keep the core first; the batch insert runs in a native thread beneath them.
    output = run_in_fresh_app(_CONSUMER_UNDER_GEVENT, tmp_path, redis_url=backend["REDIS_URL"])
    written, inserting, main = map(int, output.split())
    assert written == 1
    assert inserting == min(19, main + BACKGROUND_NICENESS) and inserting > main
