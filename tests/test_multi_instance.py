"""Two instances as separate processes sharing one PostgreSQL and one Redis: limits, revocations and
keys hold across them. Runs on the PostgreSQL+Redis backend only."""

from __future__ import annotations

import os
import secrets
import time

import httpx
import pytest

from scripts.cluster import free_port, start_instance, stop, wait_healthy

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
def instances(make_app, backend, tmp_path):
    make_app()  # a fresh schema in the test database
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": backend["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": backend["REDIS_URL"],
        "RATE_LIMIT_STORAGE_URL": backend["REDIS_URL"],
        "RATE_LIMIT_PER_MINUTE": "10",
        "AUTH_RATE_LIMIT": "1000 per minute",
        "GUNICORN_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
    }
    ports = [free_port(), free_port()]
    processes = [start_instance(port, env, tmp_path / f"{port}.log") for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            wait_healthy(url)
        yield urls
    finally:
        stop(processes)


def signup(url: str, name: str = "shared") -> str:
    body = {"username": name, "email": f"{name}@example.com", "password": "Shared-Pass-123"}
    assert httpx.post(f"{url}/api/auth/register", json=body).status_code == 201
    login = httpx.post(f"{url}/api/auth/login", json={"username": name, "password": body["password"]})
    return login.json()["access_token"]


def test_a_limit_of_10_a_minute_lets_10_through_in_total(instances):
    headers = {"Authorization": f"Bearer {signup(instances[0])}"}
    statuses = [
        httpx.get(f"{url}/api/profile", headers=headers).status_code for _ in range(10) for url in instances
    ]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 10


def test_logout_through_one_is_refused_by_the_other(instances):
    first, second = instances
    token = signup(first)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{second}/api/profile", headers=headers).status_code == 200
    assert httpx.post(f"{first}/api/auth/logout", headers=headers).status_code == 200
    assert httpx.get(f"{second}/api/profile", headers=headers).status_code == 401


def test_a_key_revoked_through_one_is_refused_by_the_other_within_a_second(instances):
    first, second = instances
    token = signup(first)
    created = httpx.post(
        f"{first}/api/keys", json={"name": "shared"}, headers={"Authorization": f"Bearer {token}"}
    )
    key = created.json()["key"]
    key_headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{second}/api/profile", headers=key_headers).status_code == 200  # now cached there
    revoked = httpx.delete(
        f"{first}/api/keys/{created.json()['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert revoked.status_code == 200
    deadline = time.monotonic() + 1.0
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = httpx.get(f"{second}/api/profile", headers=key_headers).status_code
    assert status == 401
