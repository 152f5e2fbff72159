from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from app.schemas.common import NulFreeStr, StrictModel

MAX_MODELS = 100


class ApiKeyCreateRequest(StrictModel):
    name: NulFreeStr = Field(min_length=1, max_length=64, examples=["ci-pipeline"])
    expires_at: datetime | None = Field(
        default=None,
        description="ISO 8601 with a time zone, in the future; omit for a key that does not expire.",
        examples=["2027-01-01T00:00:00Z"],
    )
    models: list[NulFreeStr] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MODELS,
        description="Model names the key may call; omit for every model.",
        examples=[["gpt-4o-mini"]],
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("Name must not be blank.")
        return value

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expires_at(cls, value: Any) -> Any:
        # Strict models take no strings for datetimes, so the ISO text is parsed here.
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("Must be an ISO 8601 date and time with a time zone.")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("Must be an ISO 8601 date and time with a time zone.") from None
        if moment.tzinfo is None:
            raise ValueError("Must include a time zone, such as Z or +02:00.")
        try:
            # Kept in UTC, where 9999-12-31T23:00:00-05:00 (valid ISO text) falls past datetime's last year.
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValueError("Must fall within the years 1 to 9999 in UTC.") from None

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [name.strip() for name in value]
        if not all(names) or any(len(name) > 200 for name in names):
            raise ValueError("Model names must be 1 to 200 characters.")
        return list(dict.fromkeys(names))  # duplicates dropped, order kept


class ApiKeyPath(BaseModel):
    key_id: int


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The secret's first characters, to tell keys apart.")
    models: list[str] | None
    created_at: str
    expires_at: str | None
    last_used_at: str | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret: shown only in this response.")


class ApiKeyList(BaseModel):
    keys: list[ApiKeyOut]
