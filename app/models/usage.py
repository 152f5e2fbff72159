from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.user import as_utc, utcnow

MODEL_NAME_LENGTH = 200  # a model name the API accepts fits its usage row


class UsageRecord(db.Model):
    """One LLM call (a compare writes one per model): who, which model, what it cost, how it ended."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_user_id_created_at", "user_id", "created_at"),
        Index("ix_usage_records_created_at", "created_at"),
        Index("uq_usage_records_idempotency_key", "idempotency_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    api_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(16))  # chat, stream, embeddings, compare
    model: Mapped[str] = mapped_column(String(MODEL_NAME_LENGTH))  # the public name the caller asked for
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    upstream_model: Mapped[str | None] = mapped_column(String(MODEL_NAME_LENGTH), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the model has no price
    latency_ms: Mapped[int] = mapped_column(Integer)
    time_to_first_token_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # ok, error, client_closed
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Given when the row is queued on the Redis stream, so a row queued or read twice (an entry replayed
    # after a crash, an XADD the client retried) is written once. None for rows that never went there.
    idempotency_key: Mapped[str | None] = mapped_column(String(32), nullable=True)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "api_key_id": self.api_key_id,
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "model": self.model,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_estimated": self.tokens_estimated,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "time_to_first_token_ms": self.time_to_first_token_ms,
            "status": self.status,
            "error_code": self.error_code,
            "created_at": as_utc(self.created_at).isoformat(),
        }


class UsageLimit(db.Model):
    """Limits for one user or one API key; a None field means the default (users) or no limit (keys)."""

    __tablename__ = "usage_limits"
    __table_args__ = (UniqueConstraint("scope", "subject_id", name="uq_usage_limits_scope_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))  # "user" or "key"
    subject_id: Mapped[int] = mapped_column(Integer)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    monthly_budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
