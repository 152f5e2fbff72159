from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from app.extensions import db
from app.models import ExternalCall
from app.models.user import utcnow
from app.services.batch_writer import BatchWriter
from tests.conftest import AuthActions


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
