"""Query strings of the usage reports and the bodies that set limits."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import MAX_INTEGER, StrictModel

# Ids and per-minute limits fit their INTEGER columns (MAX_INTEGER); a page number stays well inside a
# 64-bit OFFSET. A budget of a billion dollars is 1e15 micro-USD, exact in a double (the counters' Lua
# numbers in Redis) and far above any real budget.
MAX_BUDGET_USD = 1e9


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: datetime | None = Field(default=None, alias="from", description="ISO 8601; default 30 days ago.")
    to: datetime | None = Field(default=None, description="ISO 8601, exclusive; default now.")
    group_by: Literal["model", "day", "key"] = "model"
    user_id: int | None = Field(
        default=None, ge=1, le=MAX_INTEGER, description="Admins only: another user's usage."
    )
    page: int = Field(default=1, ge=1, le=MAX_INTEGER)
    per_page: int = Field(default=50, ge=1, le=500)


class AdminUsageQuery(UsageQuery):
    group_by: Literal["model", "day", "key", "user"] = "user"  # type: ignore[assignment]


class LimitsBody(StrictModel):
    """Each field: a number (0 = unlimited), or null to fall back to the default. Omitted: unchanged."""

    requests_per_minute: int | None = Field(default=None, ge=0, le=MAX_INTEGER)
    tokens_per_minute: int | None = Field(default=None, ge=0, le=MAX_INTEGER)
    daily_budget_usd: float | int | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)
    monthly_budget_usd: float | int | None = Field(default=None, ge=0, le=MAX_BUDGET_USD)


class UserPath(BaseModel):
    user_id: int


class KeyPath(BaseModel):
    key_id: int
