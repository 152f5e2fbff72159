"""GET /api/usage (own), ?user_id for admins, GET /api/admin/usage, and `flask users set-role`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.extensions import db
from app.models import User
from tests.conftest import AuthActions, add_usage_row, bearer

HI = [{"role": "user", "content": "hello there"}]


def chat(client, token: str, model: str = "mock/echo-1") -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": model, "messages": HI}, headers=bearer(token)
    )
    assert response.status_code == 200, response.get_json()


def make_admin(app, username: str) -> None:
    result = app.test_cli_runner().invoke(args=["users", "set-role", username, "admin"])
    assert result.exit_code == 0, result.output
    assert "admin" in result.output


def test_own_usage_totals_series_and_rows(app, client, auth):
    token = auth.signup("alice")["access_token"]
    other = AuthActions(client).signup("bob")["access_token"]
    for _ in range(3):
        chat(client, token)
    chat(client, other)
    body = client.get("/api/usage?per_page=2", headers=bearer(token)).get_json()
    assert body["totals"] == {
        "requests": 3,
        "failed": 0,
        "prompt_tokens": 6,
        "completion_tokens": 15,
        "cost_usd": 0.0,
    }
    assert body["series"] == [{"model": "mock/echo-1", **body["totals"]}]
    assert body["total"] == 3 and len(body["items"]) == 2
    assert body["items"][0]["id"] > body["items"][1]["id"]
    by_day = client.get("/api/usage?group_by=day", headers=bearer(token)).get_json()
    assert by_day["series"][0]["day"] == datetime.now(UTC).strftime("%Y-%m-%d")
    by_key = client.get("/api/usage?group_by=key", headers=bearer(token)).get_json()
    assert by_key["series"][0]["key"] is None and by_key["series"][0]["requests"] == 3


def test_date_range_excludes_other_periods(app, client, auth):
    signed = auth.signup("alice")
    add_usage_row(app, signed["user"]["id"], "old/model", datetime(2020, 1, 5, tzinfo=UTC))
    chat(client, signed["access_token"])
    token = bearer(signed["access_token"])
    recent = client.get("/api/usage", headers=token).get_json()
    assert [s["model"] for s in recent["series"]] == ["mock/echo-1"]
    old = client.get("/api/usage?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z", headers=token)
    assert [s["model"] for s in old.get_json()["series"]] == ["old/model"]
    backwards = client.get("/api/usage?from=2020-02-01T00:00:00Z&to=2020-01-01T00:00:00Z", headers=token)
    assert backwards.status_code == 400
    assert client.get("/api/usage?group_by=nonsense", headers=token).status_code == 400


def test_dates_with_an_offset_mean_the_same_moment_in_utc(app, client, auth):
    signed = auth.signup("alice")
    add_usage_row(app, signed["user"]["id"], "old/model", datetime(2020, 1, 5, 10, 0, tzinfo=UTC))
    token = bearer(signed["access_token"])
    # 09:30 to 10:30 UTC holds the row; 01:00 to 02:00 UTC does not, though its wall clock reads 10 to 11.
    around = client.get(
        "/api/usage?from=2020-01-05T04:30:00-05:00&to=2020-01-05T05:30:00-05:00", headers=token
    )
    assert around.get_json()["totals"]["requests"] == 1
    assert datetime.fromisoformat(around.get_json()["from"]) == datetime(2020, 1, 5, 9, 30, tzinfo=UTC)
    before = client.get(
        "/api/usage?from=2020-01-05T10:00:00%2B09:00&to=2020-01-05T11:00:00%2B09:00", headers=token
    )
    assert before.get_json()["totals"]["requests"] == 0


def test_admin_reads_anyone_and_everyone(app, client, auth):
    alice = auth.signup("alice")
    bob = AuthActions(client).signup("bob")
    chat(client, alice["access_token"])
    chat(client, bob["access_token"])
    chat(client, bob["access_token"])
    bob_id = bob["user"]["id"]
    assert (
        client.get(f"/api/usage?user_id={bob_id}", headers=bearer(alice["access_token"])).status_code == 403
    )
    assert client.get("/api/admin/usage", headers=bearer(alice["access_token"])).status_code == 403
    make_admin(app, "alice")
    with app.app_context():
        assert db.session.get(User, alice["user"]["id"]).is_admin
    as_bob = client.get(f"/api/usage?user_id={bob_id}", headers=bearer(alice["access_token"])).get_json()
    assert as_bob["totals"]["requests"] == 2
    everyone = client.get("/api/admin/usage", headers=bearer(alice["access_token"])).get_json()
    assert everyone["totals"]["requests"] == 3
    assert sorted((s["user"], s["requests"]) for s in everyone["series"]) == [
        (alice["user"]["id"], 1),
        (bob_id, 2),
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/api/usage?to=0001-01-02T00:00:00Z",  # the default from, 30 days earlier, is before year 1
        "/api/usage?from=0001-01-01T00:00:00%2B05:00",  # in UTC, before year 1
        "/api/usage?to=9999-12-31T23:59:59-05:00",  # in UTC, after year 9999
        "/api/usage?page=99999999999999999999999",
        "/api/usage?page=2147483648",
        "/api/usage?user_id=99999999999",
        "/api/admin/usage?user_id=99999999999",
        "/api/admin/usage?page=99999999999999999999999",
        "/api/usage?group_by=model%00",
        "/api/admin/usage?from=2020-01-01T00:00:00Z%00",
    ],
)
def test_out_of_range_report_parameters_are_a_400(app, client, auth, path):
    token = bearer(auth.signup("alice")["access_token"])
    make_admin(app, "alice")
    response = client.get(path, headers=token)
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and error["details"]["fields"]


def test_set_role_refuses_unknown_user(app):
    result = app.test_cli_runner().invoke(args=["users", "set-role", "ghost", "admin"])
    assert result.exit_code != 0 and "no user named" in result.output


def test_usage_needs_authentication(client):
    assert client.get("/api/usage").status_code == 401
    assert (
        client.get(f"/api/usage?from={(datetime.now(UTC) - timedelta(days=1)).isoformat()}").status_code
        == 401
    )
