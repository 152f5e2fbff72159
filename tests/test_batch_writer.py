from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from app.extensions import db
from app.models import ExternalCall
from app.models.user import utcnow
from app.services.batch_writer import BatchWriter
from app.utils.off_loop import BACKGROUND_NICENESS
from tests.conftest import AuthActions
from tests.fresh_app import run_in_fresh_app


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


def test_a_failed_insert_keeps_the_rows_for_the_next_flush(app):
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    writer = BatchWriter(app, ExternalCall, interval=60)
    writer.add({**_row(user_id, 1), "method": None})  # violates NOT NULL: the batch fails
    assert writer.flush() == 0
    assert writer.pending() == 1
    writer._pending.clear()
    writer.add(_row(user_id, 2))
    assert writer.flush() == 1 and _count(app) == 1


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
    from app.models import ExternalCall
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
