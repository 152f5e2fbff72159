"""Who is calling: read the bearer credential once per request, enforce it with decorators.

The bearer credential is a JWT access token or an API key ("mla-..."). `load_identity` runs before the
rate limiter (so limits are per user) and never fails the request; the decorators below turn a missing
or bad credential into a 401 on the routes that need one, and a key on a login-only route into a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from app.errors import ApiError, Forbidden, InvalidToken, Unauthorized
from app.extensions import db
from app.services.api_key_verifier import API_KEY_PREFIX
from app.services.auth_service import decode_claims

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Identity:
    user_id: int
    session_id: str | None  # the login behind a JWT; None for API keys
    via: str  # "jwt" or "api_key"
    api_key_id: int | None = None
    allowed_models: tuple[str, ...] | None = None  # None: every model (always None for a JWT)


def bearer_token() -> str | None:
    header = request.environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def load_identity() -> None:
    try:
        _load_identity()
    finally:
        # The lookups above may have checked out a database connection; hand it back now. Otherwise the
        # request keeps it while it waits on a provider, and the pool (15 connections) caps how many
        # slow calls a worker can hold at once. (A request answered from the caches opened no session.)
        if db.session.registry.has():
            db.session.close()


def _load_identity() -> None:
    state = g._get_current_object()  # once: each use of the proxy looks the context up again
    state.identity = None
    state.auth_error = None
    token = bearer_token()
    if token is None:
        if "HTTP_AUTHORIZATION" in request.environ:
            state.auth_error = Unauthorized("The Authorization header must be 'Bearer <token>'.")
        return
    if token.startswith(API_KEY_PREFIX):
        _load_api_key(state, token)
        return
    try:
        claims = decode_claims(token, expected_type="access")
        if current_app.extensions["revocations"].is_revoked(claims.session_id):
            raise InvalidToken("The token has been revoked.", code="token_revoked")
    except ApiError as error:
        state.auth_error = error
        return
    state.identity = Identity(user_id=claims.user_id, session_id=claims.session_id, via="jwt")


def _load_api_key(state: Any, secret: str) -> None:
    try:
        key = current_app.extensions["api_keys"].verify(secret)
    except ApiError as error:
        state.auth_error = error
        return
    state.identity = Identity(
        user_id=key.user_id,
        session_id=None,
        via="api_key",
        api_key_id=key.key_id,
        allowed_models=key.models,
    )


def current_identity() -> Identity:
    state = g._get_current_object()
    identity = state.get("identity")
    if identity is None:
        raise state.get("auth_error") or Unauthorized(
            "Authentication is required: send Authorization: Bearer <token>."
        )
    return identity


def login_required(func: F) -> F:
    """The route needs a valid access token or API key."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        current_identity()
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def jwt_required(func: F) -> F:
    """The route needs a login's access token: API keys get 403, so a leaked key cannot mint others."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_identity().via != "jwt":
            raise Forbidden("API keys cannot be used here: this endpoint needs the access token of a login.")
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def model_allowed(identity: Identity, model_name: str) -> bool:
    """Whether the caller may use this model: keys can be limited to a list; logins cannot."""
    return identity.allowed_models is None or model_name in identity.allowed_models


def admin_required(func: F) -> F:
    """The route needs a login whose user is an admin (`flask users set-role NAME admin`)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from app.extensions import db
        from app.models import User

        identity = current_identity()
        if identity.via != "jwt":
            raise Forbidden("API keys cannot be used here: this endpoint needs the access token of a login.")
        user = db.session.get(User, identity.user_id)
        if user is None or not user.is_admin:
            raise Forbidden("This endpoint is for administrators.", code="admin_required")
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
