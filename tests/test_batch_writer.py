from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from app.extensions import db
from app.models import ExternalCall, UsageRecord
from app.models.user import utcnow
from app.services.batch_writer import BatchWriter
from app.utils.off_loop import BACKGROUND_NICENESS
from tests.conftest import AuthActions
from tests.fresh_app import run_in_fresh_app
from tests.test_usage_stream import usage_row


def _row(user_id: int, i: int) -> dict:
    return dict(
        user_id=user_id,
        api_key_id=None,
        method="GET",
        scheme="https",
        host="example.com",
        path=f"/{i}",
        status_code=200,
        outcome="success",
        attempts=1,
        bytes_received=1,
        elapsed_ms=1,
        created_at=utcnow(),
    )


def _count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(ExternalCall))


def test_rows_from_many_threads_are_written_once_each(app):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    writer = BatchWriter(app, ExternalCall, interval=0.05, max_batch=50)

    def add(offset: int) -> None:
        for i in range(100):
            writer.add(_row(user_id, offset + i))

    threads = [threading.Thread(target=add, args=(n * 1000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 5
    while _count(app) < 800 and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.flush()
    assert _count(app) == 800
    with app.app_context():
        assert db.session.scalar(select(func.count(func.distinct(ExternalCall.path)))) == 800


def _unreachable_database(backend: dict, tmp_path: Path) -> str:
    if backend["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        (tmp_path / "a-file").write_text("not a directory")
        return f"sqlite:///{tmp_path}/a-file/nothing.db"
    return "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"  # nothing listens on port 1


def test_a_failed_insert_keeps_the_rows_for_the_next_flush(app, make_app, backend, tmp_path):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    down = make_app(SQLALCHEMY_DATABASE_URI=_unreachable_database(backend, tmp_path))
    writer = BatchWriter(down, ExternalCall, interval=60)
    writer.add(_row(user_id, 1))
    writer.add(_row(user_id, 2))
    assert writer.flush() == 0
    assert writer.pending() == 2 and writer.dropped == 0  # the database is down, the rows are fine
    writer.app = app  # the database is back
    assert writer.flush() == 2 and _count(app) == 2 and writer.pending() == 0


def test_a_row_the_database_refuses_is_dropped_and_the_others_written(app):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    writer = BatchWriter(app, ExternalCall, interval=60)
    writer.add(_row(user_id, 1))
    writer.add({**_row(user_id, 2), "method": None})  # violates NOT NULL on every backend
    writer.add(_row(user_id, 3))
    assert writer.flush() == 2
    assert writer.pending() == 0 and writer.dropped == 1
    writer.add(_row(user_id, 4))  # later flushes are not blocked by it
    assert writer.flush() == 1
    with app.app_context():
        assert set(db.session.scalars(select(ExternalCall.path))) == {"/1", "/3", "/4"}


def test_an_overlong_usage_row_does_not_block_the_usage_writes(app, backend):
    # The chat schema admits model names longer than usage_records.model holds; PostgreSQL refuses them.
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    writer = BatchWriter(app, UsageRecord, interval=60)
    writer.add(usage_row(user_id, 1, request_id="req-ok-1"))
    writer.add(usage_row(user_id, 2, request_id="req-long", model="mock/" + "x" * 240))
    writer.add(usage_row(user_id, 3, request_id="req-ok-3"))
    postgres = backend["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    assert writer.flush() == (2 if postgres else 3)  # SQLite does not enforce a VARCHAR's length
    assert writer.pending() == 0 and writer.dropped == (1 if postgres else 0)
    writer.add(usage_row(user_id, 4, request_id="req-ok-4"))
    assert writer.flush() == 1
    with app.app_context():
        written = set(db.session.scalars(select(UsageRecord.request_id)))
    assert {"req-ok-1", "req-ok-3", "req-ok-4"} <= written and ("req-long" in written) is not postgres


def test_pending_rows_are_bounded(app):
    writer = BatchWriter(app, ExternalCall, interval=60, max_pending=3)
    for i in range(5):
        writer.add(_row(1, i))
    assert writer.pending() == 3 and writer.dropped == 2
    writer._pending.clear()


_FLUSH_UNDER_GEVENT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import os
    import threading

    import gevent
    from app import create_app
    from app.extensions import db
    from app.models import ExternalCall, UsageRecord
    from app.services.batch_writer import BatchWriter
    from tests.test_batch_writer import _count, _row

    block = monkey.get_original("time", "sleep")  # holds the OS thread, as a driver waiting on a disk does
    clock = monkey.get_original("time", "monotonic")
    app = create_app()
    with app.app_context():
        db.create_all()
    inserting = []
    niceness = []  # the flushing thread's, the main thread's, then another native thread's

    def slow_insert(model):
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        inserting.append(clock())
        block(0.3)
        inserting.append(clock())
        return db.insert(model)

    ticks = []

    def tick():
        while True:
            ticks.append(clock())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    writer = BatchWriter(app, ExternalCall, interval=0.05, insert=slow_insert)
    writer.add(_row(1, 1))
    while _count(app) < 1:
        gevent.sleep(0.05)
    ticker.kill()
    start, end = inserting
    print(sum(start < t < end for t in ticks))
    niceness.append(os.getpriority(os.PRIO_PROCESS, os.getpid()))
    # Other work sent off the loop (a host name to resolve, say) keeps the worker's priority.
    from app.utils.off_loop import run_off_loop
    niceness.append(run_off_loop(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    print(*niceness)

    # Greenlets queueing rows while native threads take them: each row written once, nothing stuck.
    writer = BatchWriter(app, ExternalCall, interval=0.01, max_batch=50)

    def add(offset):
        for i in range(200):
            writer.add(_row(1, offset + i))
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(add, n * 1000) for n in range(1, 21)], timeout=20)
    deadline = clock() + 20
    while _count(app) < 4001 and clock() < deadline:
        gevent.sleep(0.05)
    writer.flush()
    print(_count(app))
    """
)


def test_under_gevent_a_flush_runs_beside_the_greenlets_at_a_lower_priority(tmp_path: Path) -> None:
    # A worker's requests are greenlets on one OS thread: an INSERT run on it would hold all of them.
    ticks, niceness, rows = run_in_fresh_app(_FLUSH_UNDER_GEVENT, tmp_path).splitlines()
    assert int(ticks) >= 10  # ~30 ticks of 10 ms while the insert blocked for 0.3 s; 0 before
    flushing, main, other = map(int, niceness.split())
    # The flush yields the core to the requests' thread, which keeps its own priority, as do other threads.
    assert flushing == min(19, main + BACKGROUND_NICENESS) and flushing > main
    assert other == main
    assert int(rows) == 1 + 20 * 200
