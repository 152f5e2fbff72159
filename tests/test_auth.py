from __future__ import annotations

import io
import json
import threading
import time
import unicodedata
from datetime import timedelta

import jwt as pyjwt
import pytest

from app.services.api_key_verifier import LOCAL_CACHE_TTL
from tests.conftest import STRONG_PASSWORD, bearer


def test_register_returns_the_user_without_secrets(client, auth):
    response = auth.register("Alice", "Alice@Example.com")
    assert response.status_code == 201
    user = response.get_json()["user"]
    assert set(user) == {"id", "username", "email", "created_at"}
    assert user["username"] == "Alice"
    assert user["email"] == "Alice@example.com"  # the domain is normalised, the local part kept
    assert "password" not in response.get_data(as_text=True)


def test_documented_example_registers(client):
    body = {"username": "usuario", "email": "usuario@example.com", "password": "Password123"}
    assert client.post("/api/auth/register", json=body).status_code == 201


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "ab"),
        ("username", "a" * 33),
        ("username", "bad name"),
        ("username", "semi;colon"),
        ("username", "\u0390" * 32),  # 32 letters, but 96 once case-folded: too long for the unique key
        ("email", "not-an-email"),
        ("email", "a@"),
        ("password", "Short1"),
        ("password", "alllowercase1"),
        ("password", "ALLUPPERCASE1"),
        ("password", "NoDigitsHere"),
        ("password", "Password1"),  # on the shipped list of common passwords
        ("password", "A1a" * 43),  # 129 characters
    ],
)
def test_register_rejects_invalid_fields(client, field, value):
    body = {"username": "valid_name", "email": "valid@example.com", "password": STRONG_PASSWORD, field: value}
    response = client.post("/api/auth/register", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert list(error["details"]["fields"]) == [field]


@pytest.mark.parametrize("field", ["username", "email"])
def test_register_refuses_a_nul_character(client, field):
    body = {"username": "valid_name", "email": "valid@example.com", "password": STRONG_PASSWORD}
    body[field] = body[field].replace("_", "\x00").replace("@", "\x00@")
    response = client.post("/api/auth/register", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert list(error["details"]["fields"]) == [field]


def test_login_refuses_a_nul_character_without_reaching_the_database(client):
    # PostgreSQL text cannot hold U+0000: the query itself would fail.
    response = client.post("/api/auth/login", json={"username": "alice\x00", "password": "x"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert list(error["details"]["fields"]) == ["username"]


def test_register_rejects_wrong_types_and_unknown_fields(client):
    body = {"username": 12345, "email": "x@example.com", "password": STRONG_PASSWORD, "is_admin": True}
    error = client.post("/api/auth/register", json=body).get_json()["error"]
    assert set(error["details"]["fields"]) == {"username", "is_admin"}
    assert error["details"]["fields"]["is_admin"] == ["Unknown field."]


def test_register_requires_every_field(client):
    error = client.post("/api/auth/register", json={}).get_json()["error"]
    assert set(error["details"]["fields"]) == {"username", "email", "password"}


def test_username_and_email_are_unique_case_insensitively(client, auth):
    assert auth.register("bob", "bob@example.com").status_code == 201
    taken_name = auth.register("BOB", "other@example.com")
    assert taken_name.status_code == 409
    assert taken_name.get_json()["error"]["details"]["fields"] == {
        "username": ["This username is already taken."]
    }
    taken_email = auth.register("robert", "BOB@EXAMPLE.COM")
    assert taken_email.status_code == 409
    assert list(taken_email.get_json()["error"]["details"]["fields"]) == ["email"]


def test_username_is_nfkc_normalised(client, auth):
    assert auth.register("ｃａｒｏｌ", "carol@example.com").status_code == 201  # fullwidth letters
    assert auth.register("carol", "carol2@example.com").status_code == 409


def test_concurrent_duplicate_registrations_give_one_201_and_one_409(app):
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def register(email: str) -> None:
        client = app.test_client()
        barrier.wait()
        body = {"username": "racer", "email": email, "password": STRONG_PASSWORD}
        statuses.append(client.post("/api/auth/register", json=body).status_code)

    threads = [threading.Thread(target=register, args=(f"racer{i}@example.com",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409]


def test_login_returns_a_token_pair_and_the_user(client, auth):
    auth.register("dave")
    body = auth.login("dave")
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["user"]["username"] == "dave"
    assert body["access_token"] != body["refresh_token"]


def test_login_accepts_the_email(client, auth):
    auth.register("erin", "erin@example.com")
    assert auth.login("ERIN@example.com")["user"]["username"] == "erin"


@pytest.mark.parametrize("username", ["ｂｏｂ", "jose\u0301"])  # fullwidth letters; e + combining acute
def test_login_accepts_the_username_as_registered(client, auth, username):
    assert auth.register(username, "someone@example.com").status_code == 201
    assert auth.login(username)["user"]["username"] == unicodedata.normalize("NFKC", username)


def test_wrong_username_and_wrong_password_look_the_same(client, auth):
    auth.register("frank")
    timings = {}
    bodies = {}
    for case, username in (("unknown", "nobody"), ("wrong", "frank")):
        started = time.perf_counter()
        response = client.post("/api/auth/login", json={"username": username, "password": "Wrong-pass1"})
        timings[case] = time.perf_counter() - started
        assert response.status_code == 401
        bodies[case] = response.get_json()
    assert bodies["unknown"] == bodies["wrong"]
    assert bodies["wrong"]["error"]["code"] == "invalid_credentials"
    # Both paths verify one password hash; an unknown user must not answer measurably faster.
    assert timings["unknown"] > timings["wrong"] / 3


def test_profile_needs_a_token(client):
    response = client.get("/api/profile")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_profile_with_access_token(client, auth):
    tokens = auth.signup("gina")
    response = client.get("/api/profile", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.get_json()["user"]["username"] == "gina"


def test_refresh_token_is_refused_by_protected_routes(client, auth):
    tokens = auth.signup()
    response = client.get("/api/profile", headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "wrong_token_type"


def test_access_token_is_refused_by_refresh(client, auth):
    tokens = auth.signup()
    response = client.post("/api/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "wrong_token_type"


def test_refresh_rotates_and_accepts_a_bearer_header(client, auth):
    tokens = auth.signup()
    first = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    rotated = first.get_json()
    assert set(rotated) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert rotated["refresh_token"] != tokens["refresh_token"]
    second = client.post("/api/auth/refresh", headers=bearer(rotated["refresh_token"]))
    assert second.status_code == 200
    assert client.get("/api/profile", headers=bearer(second.get_json()["access_token"])).status_code == 200


def test_refresh_reuse_revokes_the_whole_login(client, auth):
    tokens = auth.signup()
    rotated = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).get_json()
    reuse = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.get_json()["error"]["code"] == "token_reused"
    # Everything of that login is dead now, including the tokens the thief or the owner holds.
    assert (
        client.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]}).status_code == 401
    )
    assert client.get("/api/profile", headers=bearer(rotated["access_token"])).status_code == 401
    assert client.get("/api/profile", headers=bearer(tokens["access_token"])).status_code == 401


def test_reuse_does_not_touch_other_logins(client, auth):
    first = auth.signup()
    second = auth.login()
    client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert client.get("/api/profile", headers=bearer(second["access_token"])).status_code == 200


def test_refresh_reads_a_chunked_body(client, auth):
    tokens = auth.signup()
    body = json.dumps({"refresh_token": tokens["refresh_token"]}).encode()
    # Transfer-Encoding: chunked and no Content-Length, as a streaming client sends it.
    response = client.post(
        "/api/auth/refresh",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["refresh_token"] != tokens["refresh_token"]


def test_refresh_without_a_token(client):
    response = client.post("/api/auth/refresh")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_refresh_rejects_unknown_fields(client):
    response = client.post("/api/auth/refresh", json={"refresh_token": "x", "extra": 1})
    assert response.status_code == 400


def test_logout_revokes_access_and_refresh_tokens(client, auth):
    tokens = auth.signup()
    response = client.post("/api/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert client.get("/api/profile", headers=bearer(tokens["access_token"])).status_code == 401
    refresh = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    assert refresh.get_json()["error"]["code"] == "token_revoked"


def test_revocation_holds_across_app_instances(make_app, backend):
    first_app, second_app = make_app(), make_app()
    first, second = first_app.test_client(), second_app.test_client()
    from tests.conftest import AuthActions

    tokens = AuthActions(first).signup()
    assert second.get("/api/profile", headers=bearer(tokens["access_token"])).status_code == 200
    assert first.post("/api/auth/logout", headers=bearer(tokens["access_token"])).status_code == 200
    assert first.get("/api/profile", headers=bearer(tokens["access_token"])).status_code == 401
    if not backend["REDIS_URL"]:
        # Without Redis another process remembers a live session for at most LOCAL_CACHE_TTL.
        deadline = time.monotonic() + LOCAL_CACHE_TTL + 0.2
        while second.get("/api/profile", headers=bearer(tokens["access_token"])).status_code == 200:
            assert time.monotonic() < deadline, "still accepted after the local cache's lifetime"
            time.sleep(0.05)
    assert second.get("/api/profile", headers=bearer(tokens["access_token"])).status_code == 401
    assert (
        second.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    )


def _forge(app, claims: dict, key: str | None = None, algorithm: str = "HS256") -> str:
    return pyjwt.encode(claims, key or app.config["JWT_SECRET_KEY"], algorithm=algorithm)


def _claims_of(app, token: str) -> dict:
    # Not checking expiry: a test with a 1 s token on a busy machine may read it after it has expired.
    return pyjwt.decode(
        token, app.config["JWT_SECRET_KEY"], algorithms=["HS256"], options={"verify_exp": False}
    )


def test_expired_token_is_refused(make_app):
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=1))
    client = app.test_client()
    from tests.conftest import AuthActions

    tokens = AuthActions(client).signup()
    claims = _claims_of(app, tokens["access_token"])
    claims["exp"] = claims["iat"] - 10
    response = client.get("/api/profile", headers=bearer(_forge(app, claims)))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "token_expired"


def test_tampered_unsigned_and_foreign_tokens_are_refused(app, client, auth):
    tokens = auth.signup()
    claims = _claims_of(app, tokens["access_token"])
    header, payload, signature = tokens["access_token"].split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    unsigned = pyjwt.encode(claims, key=None, algorithm="none")
    foreign = _forge(app, claims, key="another-deployment-secret-of-32-bytes!!")
    for token in (tampered, unsigned, foreign, "garbage", "a.b.c"):
        response = client.get("/api/profile", headers=bearer(token))
        assert response.status_code == 401, token
        assert response.is_json
        assert response.get_json()["error"]["code"] == "invalid_token"


def test_malformed_authorization_header(client):
    response = client.get("/api/profile", headers={"Authorization": "Token abc"})
    assert response.status_code == 401
    assert "Bearer" in response.get_json()["error"]["message"]
