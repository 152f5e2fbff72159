"""Extensions are created here and bound to an app in create_app, so tests get a fresh app per config."""

from __future__ import annotations

from flask import current_app, g, request
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


def rate_limit_key() -> str:
    """Per user when the request is authenticated, else per client address."""
    identity = g.get("identity")
    if identity is not None:
        return f"user:{identity.user_id}"
    return f"ip:{request.remote_addr}"


def default_rate_limit() -> str:
    # Read per request from the app's config: one Limiter object serves every app built in a process.
    return current_app.config["RATE_LIMIT_DEFAULT"]


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
jwt = JWTManager()
limiter = Limiter(key_func=rate_limit_key, default_limits=[default_rate_limit])
cors = CORS()
