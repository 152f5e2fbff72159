from __future__ import annotations

from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag

from app.errors import Unauthorized
from app.middleware import rate_limits
from app.middleware.auth_middleware import bearer_token, current_identity, jwt_required
from app.middleware.rate_limits import client_address
from app.middleware.request_context import has_body
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


def attempted_username() -> str:
    """Login and register are also limited per target account, whichever address the attempts come from."""
    body = request.get_json(silent=True)
    name = body.get("username") if isinstance(body, dict) else None
    if isinstance(name, str) and name.strip():
        return f"name:{auth_service.login_key(name)}"
    return client_address()


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
@rate_limits.limit(auth_limit, key_func=client_address)
@rate_limits.limit(auth_limit, key_func=attempted_username)
def login(body: LoginRequest):
    user = auth_service.authenticate(body.username, body.password)
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
