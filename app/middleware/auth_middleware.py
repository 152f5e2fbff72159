"""Who is calling: read the bearer credential once per request, enforce it with decorators.

`load_identity` runs before the rate limiter (so limits are per user) and never fails the request;
the decorators below turn a missing or bad credential into a 401 on the routes that need one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from app.errors import ApiError, InvalidToken, Unauthorized
from app.services.auth_service import decode_claims

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Identity:
    user_id: int
    session_id: str | None  # the login behind a JWT; None for API keys
    via: str  # "jwt" or "api_key"


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def load_identity() -> None:
    g.identity = None
    g.auth_error = None
    token = bearer_token()
    if token is None:
        if "Authorization" in request.headers:
            g.auth_error = Unauthorized("The Authorization header must be 'Bearer <token>'.")
        return
    try:
        claims = decode_claims(token, expected_type="access")
        if current_app.extensions["revocations"].is_revoked(claims.session_id):
            raise InvalidToken("The token has been revoked.", code="token_revoked")
    except ApiError as error:
        g.auth_error = error
        return
    g.identity = Identity(user_id=claims.user_id, session_id=claims.session_id, via="jwt")


def current_identity() -> Identity:
    identity = g.get("identity")
    if identity is None:
        raise g.get("auth_error") or Unauthorized(
            "Authentication is required: send Authorization: Bearer <token>."
        )
    return identity


def login_required(func: F) -> F:
    """The route needs a valid access token (or, once they exist, an API key)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        current_identity()
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
