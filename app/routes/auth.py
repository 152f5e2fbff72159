from __future__ import annotations

from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag

from app.errors import Unauthorized
from app.middleware import rate_limits
from app.middleware.auth_middleware import bearer_token, current_identity, jwt_required
from app.middleware.rate_limits import client_address
from app.middleware.request_context import has_body
from app.models import User
from app.routes.docs import BEARER
from app.schemas.auth import (
    LoginRequest,
    LoginResponse,
    MessageResponse,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    UserResponse,
)
from app.schemas.common import ErrorResponse
from app.services import auth_service

bp = APIBlueprint("auth", __name__, url_prefix="/api/auth", abp_tags=[Tag(name="auth")])


def auth_limit() -> str:
    return current_app.config["AUTH_RATE_LIMIT"]


def account_limit() -> str:
    return current_app.config["AUTH_ACCOUNT_RATE_LIMIT"]


def _account(name: str) -> str:
    return f"name:{auth_service.login_key(name)}"


def _attempted_account() -> str | None:
    body = request.get_json(silent=True)
    name = body.get("username") if isinstance(body, dict) else None
    return _account(name) if isinstance(name, str) and name.strip() else None


def attempted_username() -> str:
    """Register is also limited per target username, whichever address the attempts come from."""
    return _attempted_account() or client_address()


def attempted_account_from_a_new_address() -> str | None:
    """Login is also limited per target account across addresses, which bounds a brute force spread over
    many addresses. Addresses that have logged in to the account are left out of that count, so a
    stranger's guesses cannot lock the owner out; they still face the per-address limit."""
    account = _attempted_account()
    if account is None or current_app.extensions["rate_limits"].remembers(_from_here(account)):
        return None
    return account


def _remember_this_address(user: User) -> None:
    # Either name may be typed at the next login; remembered as long as the login this opens can live.
    lifetime = int(current_app.config["JWT_REFRESH_TOKEN_EXPIRES"].total_seconds())
    for name in (user.username, user.email):
        current_app.extensions["rate_limits"].remember(_from_here(_account(name)), lifetime)


def _from_here(account: str) -> str:
    return f"{account}|{client_address()}"


@bp.post(
    "/register",
    responses={201: UserResponse, 400: ErrorResponse, 409: ErrorResponse, 429: ErrorResponse},
)
@rate_limits.limit(auth_limit, key_func=client_address)
@rate_limits.limit(auth_limit, key_func=attempted_username)
def register(body: RegisterRequest):
    user = auth_service.register_user(body.username, body.email, body.password)
    return {"user": user.to_public()}, 201


@bp.post("/login", responses={200: LoginResponse, 400: ErrorResponse, 401: ErrorResponse, 429: ErrorResponse})
@rate_limits.limit(account_limit, key_func=attempted_account_from_a_new_address)
@rate_limits.limit(auth_limit, key_func=client_address)
def login(body: LoginRequest):
    user = auth_service.authenticate(body.username, body.password)
    _remember_this_address(user)
    return {**auth_service.start_session(user), "user": user.to_public()}


@bp.post(
    "/refresh",
    responses={200: TokenPair, 400: ErrorResponse, 401: ErrorResponse},
    openapi_extensions={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": RefreshRequest.model_json_schema()}},
        }
    },
)
def refresh():
    """Trade a refresh token for a new pair; the old refresh token stops working."""
    # The body is optional (the token may come as a bearer header), so it is validated here.
    # has_body, not content_length: a chunked body has no Content-Length.
    body = RefreshRequest.model_validate(request.get_json()) if has_body(request) else None
    token = (body.refresh_token if body else None) or bearer_token()
    if not token:
        raise Unauthorized('Send the refresh token as {"refresh_token": ...} or as Authorization: Bearer.')
    return auth_service.rotate_refresh_token(token)


@bp.post("/logout", responses={200: MessageResponse, 401: ErrorResponse, 403: ErrorResponse}, security=BEARER)
@jwt_required
def logout():
    identity = current_identity()
    if identity.session_id:
        auth_service.revoke_sessions([identity.session_id], reason="logout")
    return {"message": "Logged out."}
