from __future__ import annotations

import logging

from tests.conftest import STRONG_PASSWORD, AuthActions, bearer


def test_default_limit_is_per_user_with_headers(make_app):
    app = make_app(RATE_LIMIT_DEFAULT="3 per minute")
    client = app.test_client()
    auth = AuthActions(client)
    alice, bob = auth.signup("alice"), auth.signup("bob")
    for _ in range(3):
        response = client.get("/api/profile", headers=bearer(alice["access_token"]))
        assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    limited = client.get("/api/profile", headers=bearer(alice["access_token"]))
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    # Bob has his own budget even from the same address.
    assert client.get("/api/profile", headers=bearer(bob["access_token"])).status_code == 200


def test_anonymous_requests_are_limited_per_address(make_app):
    client = make_app(RATE_LIMIT_DEFAULT="2 per minute").test_client()
    here = {"REMOTE_ADDR": "203.0.113.7"}
    there = {"REMOTE_ADDR": "203.0.113.8"}
    statuses = [client.get("/api/profile", environ_base=here).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert client.get("/api/profile", environ_base=there).status_code == 401


def guesses_from_many_addresses(client, usernames: list[str]) -> list[int]:
    """One login with a wrong password per username, each from another address: the statuses."""
    return [
        client.post(
            "/api/auth/login",
            json={"username": name, "password": "Guess-1234"},
            environ_base={"REMOTE_ADDR": f"198.51.100.{i}"},
        ).status_code
        for i, name in enumerate(usernames)
    ]


def test_login_is_limited_per_username_across_addresses(make_app):
    client = make_app(AUTH_ACCOUNT_RATE_LIMIT="2 per minute").test_client()
    assert guesses_from_many_addresses(client, ["victim"] * 3) == [401, 401, 429]


def test_login_counts_every_spelling_of_a_username_as_one_account(make_app):
    client = make_app(AUTH_ACCOUNT_RATE_LIMIT="2 per minute").test_client()
    # Registration keys the fullwidth and upper-case spellings as "victim": so does the limit.
    assert guesses_from_many_addresses(client, ["victim", "ｖｉｃｔｉｍ", "VICTIM"]) == [401, 401, 429]


def test_strangers_guesses_do_not_lock_the_owner_out(make_app):
    client = make_app(AUTH_RATE_LIMIT="3 per minute", AUTH_ACCOUNT_RATE_LIMIT="3 per minute").test_client()
    owner, new_device = {"REMOTE_ADDR": "10.0.0.9"}, {"REMOTE_ADDR": "10.0.0.10"}
    body = {"username": "alice", "email": "alice@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=body, environ_base=owner).status_code == 201

    def login(username: str, password: str, where: dict[str, str]) -> int:
        body = {"username": username, "password": password}
        return client.post("/api/auth/login", json=body, environ_base=where).status_code

    assert login("alice", STRONG_PASSWORD, owner) == 200
    for account in ("alice", "alice@example.com"):
        guesses = [login(account, "Guess-1234", {"REMOTE_ADDR": f"203.0.113.{i}"}) for i in range(4)]
        assert 429 in guesses  # guessing from many addresses is still bounded per account
    # The owner's address has logged in to the account, by either name; a new one waits like a stranger.
    assert login("alice", STRONG_PASSWORD, owner) == 200
    assert login("alice@example.com", STRONG_PASSWORD, owner) == 200
    assert login("alice", STRONG_PASSWORD, new_device) == 429


def test_an_accounts_login_limit_is_separate_from_the_address_limit(make_app):
    client = make_app(AUTH_RATE_LIMIT="2 per minute", AUTH_ACCOUNT_RATE_LIMIT="5 per minute").test_client()
    assert guesses_from_many_addresses(client, ["victim"] * 6) == [401] * 5 + [429]


def test_login_is_limited_per_address_across_usernames(make_app):
    client = make_app(AUTH_RATE_LIMIT="2 per minute").test_client()
    statuses = [
        client.post("/api/auth/login", json={"username": f"user{i}", "password": "Guess-1234"}).status_code
        for i in range(3)
    ]
    assert statuses == [401, 401, 429]


def test_register_is_limited(make_app):
    client = make_app(AUTH_RATE_LIMIT="1 per minute").test_client()
    body = {"username": "first", "email": "first@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=body).status_code == 201
    body = {"username": "second", "email": "second@example.com", "password": STRONG_PASSWORD}
    assert client.post("/api/auth/register", json=body).status_code == 429


def test_limits_can_be_switched_off(make_app):
    client = make_app(RATE_LIMIT_DEFAULT="1 per minute", RATELIMIT_ENABLED=False).test_client()
    assert [client.get("/api/profile").status_code for _ in range(3)] == [401, 401, 401]


def test_probes_are_never_limited(make_app):
    client = make_app(RATE_LIMIT_DEFAULT="1 per minute").test_client()
    for path in ("/api/health", "/api/ready", "/api/health"):
        response = client.get(path)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers


PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_cors_preflights_are_not_counted(make_app):
    client = make_app(RATE_LIMIT_DEFAULT="2 per minute", AUTH_RATE_LIMIT="1 per minute").test_client()
    for path in ("/api/profile", "/api/auth/login"):
        for _ in range(3):
            response = client.options(path, headers=PREFLIGHT)
            assert response.status_code == 200
            assert "Access-Control-Allow-Origin" in response.headers
    # The requests the preflights announced still have their whole budget.
    first = client.get("/api/profile")
    assert first.status_code == 401
    assert first.headers["X-RateLimit-Remaining"] == "1"
    login = client.post("/api/auth/login", json={"username": "alice", "password": "Guess-1234"})
    assert login.status_code == 401


def test_a_refusal_reports_the_limit_and_when_to_retry(make_app):
    client = make_app(RATE_LIMIT_DEFAULT="1 per minute").test_client()
    assert client.get("/api/profile").status_code == 401
    refused = client.get("/api/profile")
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Limit"] == "1"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["message"] == "Rate limit exceeded: 1 per 1 minute."


def test_an_unreachable_limit_store_lets_requests_through_with_a_warning(make_app):
    client = make_app(
        RATE_LIMIT_DEFAULT="1 per minute", RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0"
    ).test_client()
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append  # type: ignore[method-assign]
    logger = logging.getLogger("app.middleware.rate_limits")
    logger.addHandler(handler)
    try:
        statuses = [client.get("/api/profile").status_code for _ in range(3)]
    finally:
        logger.removeHandler(handler)
    assert statuses == [401, 401, 401]  # not 429, not 500
    assert [r.getMessage() for r in warnings] == ["rate-limit storage unavailable; requests pass unlimited"]
