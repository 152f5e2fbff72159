"""API keys: created once-shown, listed without secrets, revoked at once in every instance."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import g
from sqlalchemy import event, select, text, update

from app.extensions import db
from app.middleware.auth_middleware import Identity, load_identity, model_allowed
from app.models import ApiKey
from app.services.api_key_verifier import CACHE_TTL, LOCAL_CACHE_TTL, ApiKeyVerifier
from app.utils.ttl_cache import TTLCache
from tests.conftest import STRONG_PASSWORD, bearer


def create_key(client, access_token, **body):
    response = client.post("/api/keys", json={"name": "ci", **body}, headers=bearer(access_token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def tokens(auth):
    return auth.signup("alice")


def test_create_returns_the_secret_once(client, tokens):
    created = create_key(client, tokens["access_token"], models=["gpt-4o-mini", "gpt-4o-mini", "llama3"])
    assert created["key"].startswith("mla-")
    assert len(created["key"]) > 40
    assert created["prefix"] == created["key"][:12]
    assert created["name"] == "ci"
    assert created["models"] == ["gpt-4o-mini", "llama3"]
    assert created["expires_at"] is None
    assert created["last_used_at"] is None
    listing = client.get("/api/keys", headers=bearer(tokens["access_token"]))
    assert listing.status_code == 200
    assert created["key"] not in listing.get_data(as_text=True)
    (listed,) = listing.get_json()["keys"]
    assert set(listed) == {"id", "name", "prefix", "models", "created_at", "expires_at", "last_used_at"}
    assert listed["id"] == created["id"]


def test_two_keys_differ_and_are_listed_newest_first(client, auth, tokens):
    first = create_key(client, tokens["access_token"], name="first")
    second = create_key(client, tokens["access_token"], name="second", expires_at="2999-01-01T00:00:00+02:00")
    assert first["key"] != second["key"]
    assert second["expires_at"] == "2998-12-31T22:00:00+00:00"
    other = auth.signup("bob")
    create_key(client, other["access_token"], name="bob's")
    keys = client.get("/api/keys", headers=bearer(tokens["access_token"])).get_json()["keys"]
    assert [key["name"] for key in keys] == ["second", "first"]


def test_a_key_authenticates_like_an_access_token(client, tokens):
    secret = create_key(client, tokens["access_token"])["key"]
    response = client.get("/api/profile", headers=bearer(secret))
    assert response.status_code == 200
    assert response.get_json()["user"]["username"] == "alice"


def test_unknown_and_malformed_keys_are_refused(client, tokens):
    secret = create_key(client, tokens["access_token"])["key"]
    for wrong in ("mla-" + "A" * 43, secret[:-1], "mla-"):
        response = client.get("/api/profile", headers=bearer(wrong))
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] in {"invalid_token", "unauthorized"}


def test_the_database_holds_only_a_hash(app, client, tokens):
    created = create_key(client, tokens["access_token"])
    secret = created["key"]
    with app.app_context():
        row = db.session.execute(text("SELECT * FROM api_keys")).mappings().one()
    assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    stored = " ".join(str(value) for value in row.values())
    assert secret not in stored
    assert secret[12:] not in stored  # not even the part after the shown prefix


def test_revoked_key_is_refused_by_every_instance(make_app, backend):
    first, second = make_app(), make_app()
    one, two = first.test_client(), second.test_client()
    assert (
        one.post(
            "/api/auth/register",
            json={"username": "alice", "email": "a@example.com", "password": STRONG_PASSWORD},
        ).status_code
        == 201
    )
    login = one.post("/api/auth/login", json={"username": "alice", "password": STRONG_PASSWORD}).get_json()
    created = create_key(one, login["access_token"])
    # Both instances have verified (and, with Redis, cached) the key before it is revoked.
    assert one.get("/api/profile", headers=bearer(created["key"])).status_code == 200
    assert two.get("/api/profile", headers=bearer(created["key"])).status_code == 200

    revoked = one.delete(f"/api/keys/{created['id']}", headers=bearer(login["access_token"]))
    assert revoked.status_code == 200
    assert revoked.get_json() == {"message": "The API key is revoked."}
    # With Redis every instance refuses at once; without it another process's cache entry lives at
    # most LOCAL_CACHE_TTL, so the other instance refuses within that.
    if not backend["REDIS_URL"]:
        deadline = time.monotonic() + LOCAL_CACHE_TTL + 0.2
        while two.get("/api/profile", headers=bearer(created["key"])).status_code == 200:
            assert time.monotonic() < deadline, "still accepted after the local cache's lifetime"
            time.sleep(0.05)
    for client in (one, two):
        response = client.get("/api/profile", headers=bearer(created["key"]))
        assert response.status_code == 401
        assert response.get_json()["error"] == {
            "code": "invalid_token",
            "message": "The API key has been revoked.",
        }
    assert one.get("/api/keys", headers=bearer(login["access_token"])).get_json()["keys"] == []
    again = one.delete(f"/api/keys/{created['id']}", headers=bearer(login["access_token"]))
    assert again.status_code == 404
    with first.app_context():
        assert db.session.scalar(select(ApiKey.revoked_at)) is not None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_with_redis_a_cached_key_is_checked_against_the_revoked_marker(app, client, backend, tokens):
    created = create_key(client, tokens["access_token"])
    assert client.get("/api/profile", headers=bearer(created["key"])).status_code == 200
    key_hash = hashlib.sha256(created["key"].encode()).hexdigest()
    # Another instance's revocation, seen only through Redis: the row here still says active.
    redis.Redis.from_url(backend["REDIS_URL"]).set(ApiKeyVerifier.REVOKED_PREFIX + key_hash, 1, ex=60)
    response = client.get("/api/profile", headers=bearer(created["key"]))
    assert response.status_code == 401
    assert "revoked" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_revoking_sets_a_marker_in_redis_that_outlives_the_cache(client, backend, tokens):
    created = create_key(client, tokens["access_token"])
    assert (
        client.delete(f"/api/keys/{created['id']}", headers=bearer(tokens["access_token"])).status_code == 200
    )
    key_hash = hashlib.sha256(created["key"].encode()).hexdigest()
    ttl = redis.Redis.from_url(backend["REDIS_URL"]).ttl(ApiKeyVerifier.REVOKED_PREFIX + key_hash)
    assert ttl > 30


def test_expired_key_is_refused(app, client, tokens):
    created = create_key(client, tokens["access_token"], expires_at="2999-01-01T00:00:00Z")
    assert client.get("/api/profile", headers=bearer(created["key"])).status_code == 200
    with app.app_context():
        db.session.execute(update(ApiKey).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        db.session.commit()
    # The cached entry still holds the old expiry (a change of expiry is not a revocation); drop it.
    app.extensions["api_keys"].cache.discard(hashlib.sha256(created["key"].encode()).hexdigest())
    response = client.get("/api/profile", headers=bearer(created["key"]))
    assert response.status_code == 401
    assert response.get_json()["error"] == {"code": "invalid_token", "message": "The API key has expired."}


def test_a_cached_key_expires_on_time(app, client, tokens, monkeypatch):
    created = create_key(client, tokens["access_token"], expires_at="2999-01-01T00:00:00Z")
    assert client.get("/api/profile", headers=bearer(created["key"])).status_code == 200

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2999, 1, 1, 0, 0, 1, tzinfo=UTC)

    monkeypatch.setattr("app.services.api_key_verifier.datetime", Later)
    response = client.get("/api/profile", headers=bearer(created["key"]))
    assert response.status_code == 401
    assert "expired" in response.get_json()["error"]["message"]


def test_a_key_cannot_manage_keys_or_the_login(client, tokens):
    created = create_key(client, tokens["access_token"])
    headers = bearer(created["key"])
    attempts = [
        client.post("/api/keys", json={"name": "minted"}, headers=headers),
        client.get("/api/keys", headers=headers),
        client.delete(f"/api/keys/{created['id']}", headers=headers),
        client.post("/api/auth/logout", headers=headers),
        client.patch(
            "/api/profile",
            json={"current_password": STRONG_PASSWORD, "email": "x@example.com"},
            headers=headers,
        ),
    ]
    for response in attempts:
        assert response.status_code == 403
        error = response.get_json()["error"]
        assert error["code"] == "forbidden"
        assert "API keys cannot be used here" in error["message"]
    # Nothing happened: the key still works and is still the only one.
    assert client.get("/api/profile", headers=headers).status_code == 200
    assert len(client.get("/api/keys", headers=bearer(tokens["access_token"])).get_json()["keys"]) == 1


def test_keys_routes_need_authentication(client):
    assert client.get("/api/keys").status_code == 401
    assert client.post("/api/keys", json={"bogus": 1}).status_code == 401
    assert client.delete("/api/keys/1").status_code == 401


def test_someone_elses_key_is_not_found(client, auth, tokens):
    created = create_key(client, tokens["access_token"])
    other = auth.signup("bob")
    for key_id in (created["id"], 999_999):
        response = client.delete(f"/api/keys/{key_id}", headers=bearer(other["access_token"]))
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    assert client.get("/api/profile", headers=bearer(created["key"])).status_code == 200


@pytest.mark.parametrize("key_id", [2**31, 2**63, 10**30])
def test_an_id_too_large_for_the_column_is_not_found(client, tokens, key_id):
    # No key can have it: PostgreSQL's INTEGER ends at 2**31 - 1, SQLite's at 2**63 - 1.
    response = client.delete(f"/api/keys/{key_id}", headers=bearer(tokens["access_token"]))
    assert response.status_code == 404
    assert response.get_json()["error"] == {"code": "not_found", "message": "No such API key."}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": 7}, "name"),
        ({"name": "ci", "models": []}, "models"),
        ({"name": "ci", "models": "gpt-4o"}, "models"),
        ({"name": "ci", "models": ["gpt-4o", " "]}, "models"),
        ({"name": "ci", "models": [f"m{i}" for i in range(101)]}, "models"),
        ({"name": "ci", "models": [1]}, "models.0"),
        ({"name": "ci", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "ci", "expires_at": "2999-01-01T00:00:00"}, "expires_at"),
        ({"name": "ci", "expires_at": "next week"}, "expires_at"),
        ({"name": "ci", "expires_at": "9999-12-31T23:00:00-05:00"}, "expires_at"),  # past year 9999 in UTC
        ({"name": "ci", "expires_at": 4102444800}, "expires_at"),
        ({"name": "ci", "key": "mla-chosen-by-me"}, "key"),
        ({"name": "ci\x00"}, "name"),  # PostgreSQL text cannot hold U+0000
        ({"name": "ci", "models": ["gpt-4o\x00"]}, "models.0"),
    ],
)
def test_create_validation(client, tokens, body, field):
    response = client.post("/api/keys", json=body, headers=bearer(tokens["access_token"]))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]["fields"]
    assert client.get("/api/keys", headers=bearer(tokens["access_token"])).get_json()["keys"] == []


def last_used(app):
    with app.app_context():
        value = db.session.scalar(select(ApiKey.last_used_at))
        db.session.remove()
        return value


def test_last_used_at_is_written_at_first_use_then_at_most_once_a_minute(app, client, tokens):
    created = create_key(client, tokens["access_token"])
    assert last_used(app) is None
    client.get("/api/profile", headers=bearer(created["key"]))
    first = last_used(app)
    assert first is not None
    client.get("/api/profile", headers=bearer(created["key"]))
    assert last_used(app) == first  # the second use is only noted in memory
    with app.app_context():
        assert app.extensions["api_keys"].flush_usage(force=True) == 1
    assert last_used(app) > first
    listed = client.get("/api/keys", headers=bearer(tokens["access_token"])).get_json()["keys"][0]
    assert listed["last_used_at"] is not None


def count_statements(app, client, secret):
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get("/api/profile", headers=bearer(secret))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200
    return statements


def test_verifying_a_known_key_costs_no_sql_while_cached(app, client, backend, tokens, monkeypatch):
    """A cached key runs no statement on api_keys (only the route's own user lookup). Once the entry
    has expired (at once here), exactly one: the indexed SELECT by hash. Never a write."""
    secret = create_key(client, tokens["access_token"])["key"]
    count_statements(app, client, secret)  # first use: loads, caches, writes last_used_at
    assert [s for s in count_statements(app, client, secret) if "api_keys" in s] == []
    monkeypatch.setattr(app.extensions["api_keys"].cache, "ttl", 0.0)
    app.extensions["api_keys"].cache.discard(hashlib.sha256(secret.encode()).hexdigest())
    statements = [s for s in count_statements(app, client, secret) if "api_keys" in s]
    assert len(statements) == 1
    assert statements[0].lstrip().upper().startswith("SELECT")
    assert "key_hash =" in statements[0]


def test_without_redis_a_key_is_cached_for_a_second_only(app, backend):
    assert app.extensions["api_keys"].cache.ttl == (CACHE_TTL if backend["REDIS_URL"] else LOCAL_CACHE_TTL)
    assert LOCAL_CACHE_TTL <= 1.0


def test_identity_carries_the_key_and_its_models(app, client, tokens):
    created = create_key(client, tokens["access_token"], models=["gpt-4o-mini"])
    with app.test_request_context("/api/profile", headers=bearer(created["key"])):
        load_identity()
        identity = g.identity
    assert identity.via == "api_key"
    assert identity.api_key_id == created["id"]
    assert identity.session_id is None
    assert identity.allowed_models == ("gpt-4o-mini",)
    assert model_allowed(identity, "gpt-4o-mini")
    assert not model_allowed(identity, "gpt-4o")
    assert model_allowed(Identity(user_id=1, session_id="s", via="jwt"), "anything")


def test_ttl_cache_expires_and_stays_bounded():
    now = [0.0]
    cache: TTLCache[str, int] = TTLCache(ttl=30, max_size=2, clock=lambda: now[0])
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("c", 3)  # evicts "a", the oldest
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
    now[0] = 30.0
    assert cache.get("b") is None
    assert len(cache) == 1


def test_documented_example_creates_a_key(client, tokens):
    body = {"name": "ci", "expires_at": "2030-01-01T00:00:00Z", "models": ["gpt-4o-mini"]}
    created = create_key(client, tokens["access_token"], **body)
    assert created["expires_at"] == "2030-01-01T00:00:00+00:00"
    assert created["models"] == ["gpt-4o-mini"]
