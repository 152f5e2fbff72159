from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.models.user import User
from app.schemas.common import NulFreeStr, StrictModel
from app.utils import validators

USERNAME_KEY_LENGTH = User.__table__.c.username_key.type.length


def _username_with_a_key_that_fits(raw: str) -> str:
    username = validators.normalise_username(raw)
    # Case folding can lengthen a name (U+0390 becomes three characters); the unique key must fit its column.
    if len(validators.username_key(username)) > USERNAME_KEY_LENGTH:
        raise ValueError("Username is too long once case is folded; choose a shorter one.")
    return username


class RegisterRequest(StrictModel):
    username: NulFreeStr = Field(examples=["usuario"])
    email: NulFreeStr = Field(examples=["usuario@example.com"])
    password: str = Field(examples=["Password123"])

    _username = field_validator("username")(_username_with_a_key_that_fits)
    _email = field_validator("email")(validators.normalise_email)
    _password = field_validator("password")(validators.check_password_strength)


class LoginRequest(StrictModel):
    username: NulFreeStr = Field(
        min_length=1, max_length=320, description="The username or the email address."
    )
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(StrictModel):
    refresh_token: str | None = Field(
        default=None, description="Optional when the refresh token is sent as Authorization: Bearer."
    )


class ProfileUpdateRequest(StrictModel):
    current_password: str = Field(min_length=1, max_length=1024)
    email: NulFreeStr | None = None
    new_password: str | None = None

    _email = field_validator("email")(
        lambda value: value if value is None else validators.normalise_email(value)
    )
    _new_password = field_validator("new_password")(
        lambda value: value if value is None else validators.check_password_strength(value)
    )


class UserOut(BaseModel):
    id: int
    username: str
    email: str
    created_at: str


class UserResponse(BaseModel):
    user: UserOut


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class LoginResponse(TokenPair):
    user: UserOut


class MessageResponse(BaseModel):
    message: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"] | None = Field(
        default=None, description="Present when REDIS_URL is set."
    )


class ReadyResponse(BaseModel):
    status: Literal["ready", "draining"]
