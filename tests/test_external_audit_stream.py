"""External-call audit rows through their own Redis stream when Redis is set: written once, and the rows
of an instance killed before writing them are written by another."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import select

from app.extensions import db
from app.models import ExternalCall
from app.services.stream_consumer import FIELD, GROUP
from app.services.stream_rows import encode_row
from app.services.stream_writer import StreamWriter
from tests.conftest import AuthActions, bearer
from tests.test_external_routes import LOOPBACK, echo  # noqa: F401  (the upstream fixture)
from tests.test_usage_stream import wait_for

AUDIT_STREAM = "multillm:external_calls"
stream_only = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def audit_row(user_id: int, n: int) -> dict:
    return {
        "user_id": user_id,
        "api_key_id": None,
        "method": "GET",
        "scheme": "https",
        "host": "api.example.com",
        "path": f"/items/{n}",
        "status_code": 200,
        "outcome": "success",
        "attempts": 1,
        "bytes_received": 10 * n,
        "elapsed_ms": 5,
        "created_at": datetime(2026, 12, 3, 9, 0, n, tzinfo=UTC),
        "idempotency_key": f"audit-key-{n}",
    }


def stored(app) -> list[ExternalCall]:
    with app.app_context():
        rows = list(db.session.scalars(select(ExternalCall).order_by(ExternalCall.id)))
        db.session.expunge_all()
        return rows


@stream_only
def test_a_proxied_call_is_audited_once_through_the_stream(make_app, echo):  # noqa: F811
    app = make_app(EXTERNAL_API_ALLOW_PRIVATE_NETWORKS=LOOPBACK, BATCH_FLUSH_INTERVAL=0.05)
    writer = app.extensions["external_audit"]
    assert isinstance(writer, StreamWriter) and writer.settings.key == AUDIT_STREAM
    assert app.extensions["usage_writer"].settings.key != AUDIT_STREAM
    client = app.test_client()
    token = AuthActions(client).signup()["access_token"]
    response = client.post("/api/external/get", json={"url": f"{echo.url}/things"}, headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    # No flush: this worker's consumer moves the row from the stream to the table on its own.
    assert wait_for(lambda: len(stored(app)) == 1)
    (row,) = stored(app)
    assert (row.method, row.path, row.status_code, row.outcome) == ("GET", "/things", 200, "success")
    assert len(row.idempotency_key) == 32
    assert wait_for(lambda: redis.Redis.from_url(app.config["REDIS_URL"]).xlen(AUDIT_STREAM) == 0)
    history = client.get("/api/external/history", headers=bearer(token)).get_json()
    assert history["total"] == 1 and "idempotency_key" not in history["items"][0]


@stream_only
def test_a_killed_instances_audit_rows_are_written_once_by_another(make_app):
    app = make_app(BATCH_FLUSH_INTERVAL=0.05, USAGE_CLAIM_IDLE_SECONDS=2.0)
    user_id = AuthActions(app.test_client()).signup()["user"]["id"]
    client = redis.Redis.from_url(app.config["REDIS_URL"])
    rows = [audit_row(user_id, n) for n in range(6)]
    # The killed process XADDed six rows; its consumer had read the oldest three and written none.
    for row in rows:
        client.xadd(AUDIT_STREAM, {FIELD: encode_row(row)})
    with contextlib.suppress(redis.ResponseError):
        client.xgroup_create(AUDIT_STREAM, GROUP, id="0", mkstream=True)
    client.xreadgroup(GROUP, "killed-host:1:abc", {AUDIT_STREAM: ">"}, count=3)
    client.xadd(AUDIT_STREAM, {FIELD: encode_row(rows[0])})  # and one row came twice (a retried XADD)
    app.extensions["external_audit"].start()
    # The unread ones at once, long before the dead consumer's entries may be claimed (2 s idle).
    assert wait_for(lambda: len(stored(app)) == 4, timeout=1.5)
    assert {r.path for r in stored(app)} == {"/items/0", "/items/3", "/items/4", "/items/5"}
    assert wait_for(lambda: len(stored(app)) == 6, timeout=6.0)
    assert wait_for(lambda: client.xpending(AUDIT_STREAM, GROUP)["pending"] == 0)
    assert sorted(r.idempotency_key for r in stored(app)) == sorted(r["idempotency_key"] for r in rows)
