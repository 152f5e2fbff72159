from __future__ import annotations

from tests.conftest import STRONG_PASSWORD, bearer

NEW_PASSWORD = "An0ther-strong-pass"


def test_change_email(client, auth):
    tokens = auth.signup("hana")
    response = client.patch(
        "/api/profile",
        json={"current_password": STRONG_PASSWORD, "email": "Hana.New@Example.com"},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 200
    assert response.get_json()["user"]["email"] == "Hana.New@example.com"
    assert client.get("/api/profile", headers=bearer(tokens["access_token"])).get_json()["user"]["email"] == (
        "Hana.New@example.com"
    )


def test_change_password_revokes_other_logins_only(client, auth):
    current = auth.signup("ivan")
    other = auth.login("ivan")
    response = client.patch(
        "/api/profile",
        json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )
    assert response.status_code == 200
    assert client.get("/api/profile", headers=bearer(current["access_token"])).status_code == 200
    assert client.get("/api/profile", headers=bearer(other["access_token"])).status_code == 401
    assert client.post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 401
    old = client.post("/api/auth/login", json={"username": "ivan", "password": STRONG_PASSWORD})
    assert old.status_code == 401
    assert auth.login("ivan", NEW_PASSWORD)["user"]["username"] == "ivan"


def test_wrong_current_password_changes_nothing(client, auth):
    tokens = auth.signup("jane")
    response = client.patch(
        "/api/profile",
        json={"current_password": "Wrong-pass1", "email": "evil@example.com"},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 401
    assert client.get("/api/profile", headers=bearer(tokens["access_token"])).get_json()["user"]["email"] == (
        "jane@example.com"
    )


def test_profile_update_validation(client, auth):
    tokens = auth.signup("kim")
    headers = bearer(tokens["access_token"])
    nothing = client.patch("/api/profile", json={"current_password": STRONG_PASSWORD}, headers=headers)
    assert nothing.status_code == 400
    weak = client.patch(
        "/api/profile", json={"current_password": STRONG_PASSWORD, "new_password": "weak"}, headers=headers
    )
    assert weak.status_code == 400
    assert "new_password" in weak.get_json()["error"]["details"]["fields"]
    missing = client.patch("/api/profile", json={"email": "x@example.com"}, headers=headers)
    assert missing.status_code == 400
    assert "current_password" in missing.get_json()["error"]["details"]["fields"]


def test_profile_update_to_a_taken_email_is_409(client, auth):
    auth.register("lena", "lena@example.com")
    tokens = auth.signup("mona")
    response = client.patch(
        "/api/profile",
        json={"current_password": STRONG_PASSWORD, "email": "LENA@example.com"},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 409
    assert client.get("/api/profile", headers=bearer(tokens["access_token"])).get_json()["user"]["email"] == (
        "mona@example.com"
    )


def test_profile_update_needs_auth_before_validation(client):
    response = client.patch("/api/profile", json={"bogus": 1})
    assert response.status_code == 401
