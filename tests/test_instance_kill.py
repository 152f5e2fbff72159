"""SIGKILL one of two instances behind nginx under load: the service keeps answering, and every call
answered 200 has exactly one usage row, written by the survivor when the dead instance could not.

Two production servers (gunicorn, one gevent worker each) share PostgreSQL and Redis behind nginx.
Fifty clients call /v1/chat/completions for 20 s. Usage batches are written every second, so rows sit
in the stream when the kill comes. Before it, 4 s in, the test locks the usage table and waits until
the victim's consumer is caught holding a batch it read and cannot write (a second or two), then kills. That batch is
taken over by the survivor's consumer once USAGE_CLAIM_IDLE_SECONDS (10 here) have passed.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from app.services.stream_consumer import GROUP
from scripts.cluster import free_port, migrate, start_instance, start_nginx, stop, wait_healthy

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

STREAM = "multillm:usage"
CLIENTS = 50
LOAD_SECONDS = 20.0
LOCK_AT = 4.0  # seconds into the load; the kill follows as soon as the victim holds a batch
CATCH_WITHIN = 8.0  # seconds the lock waits for that at most (a starved worker reads late)
# Longer than the lock is held, so no consumer takes over another's batch before the kill.
CLAIM_IDLE = 10


@dataclass
class Call:
    request_id: str  # sent as X-Request-ID
    status: int | None  # None: no HTTP answer at all
    echoed: str | None  # the X-Request-ID the gateway answered with
    ended: float


@pytest.fixture
def cluster(make_app, backend, tmp_path):
    """Two instances on a schema built by the migrations, and nginx in front; yields what the test needs."""
    app = make_app()
    database = backend["SQLALCHEMY_DATABASE_URI"]
    engine = create_engine(database)
    _drop_schema(app, engine)
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": database,
        "REDIS_URL": backend["REDIS_URL"],
        "RATE_LIMIT_STORAGE_URL": backend["REDIS_URL"],
        "RATE_LIMIT_ENABLED": "false",
        "AUTH_RATE_LIMIT": "1000 per minute",
        "TRUSTED_PROXIES": "1",
        "GUNICORN_WORKERS": "1",
        "BATCH_FLUSH_INTERVAL": "1",  # a second of rows waits in the stream between batches
        "USAGE_CLAIM_IDLE_SECONDS": str(CLAIM_IDLE),
        "LOG_LEVEL": "WARNING",
    }
    migrate(env)
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"instance-{port}.log" for port in ports]
    instances = [start_instance(port, env, log) for port, log in zip(ports, logs, strict=True)]
    processes = list(instances)
    try:
        for port in ports:
            wait_healthy(f"http://127.0.0.1:{port}")
        nginx_port = free_port()
        processes.append(start_nginx(tmp_path / "nginx", nginx_port, ports))
        url = f"http://127.0.0.1:{nginx_port}"
        wait_healthy(url)
        nginx_log = tmp_path / "nginx" / "error.log"  # where a 502 is explained
        yield url, instances, logs, nginx_log, engine, redis.Redis.from_url(backend["REDIS_URL"])
    finally:
        stop(processes)
        _drop_schema(app, engine)
        engine.dispose()


def _drop_schema(app, engine) -> None:
    from app.extensions import db

    with app.app_context():
        db.drop_all()
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


def api_key(url: str) -> str:
    body = {"username": "killer", "email": "killer@example.com", "password": "Kill-Pass-123"}
    assert httpx.post(f"{url}/api/auth/register", json=body).status_code == 201
    login = httpx.post(f"{url}/api/auth/login", json={"username": "killer", "password": body["password"]})
    token = login.json()["access_token"]
    created = httpx.post(
        f"{url}/api/keys", json={"name": "load"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert created.status_code == 201, created.text
    return created.json()["key"]


def held_by(client: redis.Redis, pids: set[int]) -> int:
    """Stream entries read, and not yet acknowledged, by the consumers of these processes."""
    consumers = client.xpending(STREAM, GROUP)["consumers"] or []
    # Consumer names are host:pid:random.
    return sum(
        int(consumer["pending"])
        for consumer in consumers
        if int(consumer["name"].decode().rsplit(":", 2)[1]) in pids
    )


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (a gunicorn master's workers), read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name is in parentheses and may hold spaces; the parent pid follows it.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def test_killing_an_instance_loses_no_usage_row_of_a_call_answered_200(cluster):
    url, instances, logs, nginx_log, engine, client = cluster
    headers = {"Authorization": f"Bearer {api_key(url)}"}
    body = {"model": "mock/echo-1", "messages": [{"role": "user", "content": "count me once"}]}
    calls: list[Call] = []
    started = time.monotonic()
    deadline = started + LOAD_SECONDS

    def call_until_deadline() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            while time.monotonic() < deadline:
                request_id = f"kill-{uuid.uuid4().hex}"
                try:
                    response = http.post(
                        "/v1/chat/completions", json=body, headers={"X-Request-ID": request_id}
                    )
                    status, echoed = response.status_code, response.headers.get("X-Request-ID")
                except httpx.HTTPError:
                    status = echoed = None
                calls.append(Call(request_id, status, echoed, time.monotonic()))

    threads = [threading.Thread(target=call_until_deadline) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, started + LOCK_AT - time.monotonic()))
    victim = instances[0]
    victim_workers = children_of(victim.pid)
    with engine.connect() as lock:  # held until the block ends
        # Writers now block on the usage table, so the victim's consumer is soon caught holding a batch.
        lock.execute(text("LOCK TABLE usage_records IN EXCLUSIVE MODE"))
        while held_by(client, victim_workers) == 0 and time.monotonic() < started + LOCK_AT + CATCH_WITHIN:
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)  # the master and its worker at once: nothing is flushed
        killed_at = time.monotonic()
        victim.wait()
        held_by_the_dead = held_by(client, victim_workers)
    for thread in threads:
        thread.join()

    answered = {call.echoed for call in calls if call.status == 200}
    failed = [call for call in calls if call.status != 200]
    assert all(call.echoed == call.request_id for call in calls if call.status == 200)
    assert len(answered) > 500
    # The service kept answering: plenty of 200s after the kill, failures only around it.
    assert sum(1 for call in calls if call.status == 200 and call.ended > killed_at + 1) > 100
    assert len(failed) <= CLIENTS + 10, Counter(call.status for call in failed)
    assert all(killed_at - 1 <= call.ended <= killed_at + 5 for call in failed), (
        [(call.status, round(call.ended - killed_at, 2)) for call in failed],
        nginx_log.read_text()[-3000:],
    )
    # The killed worker had read rows from the stream and not written them when it died.
    assert victim_workers and held_by_the_dead > 0, "the victim was never caught holding a batch"

    def rows_by_request() -> Counter:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT request_id, count(*) FROM usage_records GROUP BY request_id")
            )
            return Counter({request_id: count for request_id, count in found})

    wait_until = time.monotonic() + CLAIM_IDLE + 10
    rows = rows_by_request()
    while not answered <= set(rows) and time.monotonic() < wait_until:
        time.sleep(0.25)
        rows = rows_by_request()
    missing = answered - set(rows)
    assert not missing, f"{len(missing)} calls answered 200 have no usage row"
    assert all(rows[request_id] == 1 for request_id in answered)
    # Rows for calls without a 200 exist only for calls in flight at the kill, and once each too.
    assert set(rows) - answered <= {call.request_id for call in failed}
    assert max(rows.values()) == 1
    assert client.xpending(STREAM, GROUP)["pending"] == 0
    survivor_log = logs[1].read_text()
    assert "took over" in survivor_log and "unwritten usage rows" in survivor_log
