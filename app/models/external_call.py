from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.models.user import as_utc, utcnow


class ExternalCall(db.Model):
    """One call through /api/external/*: where it went (never the query string) and how it ended."""

    __tablename__ = "external_calls"
    __table_args__ = (
        Index("ix_external_calls_user_id_created_at", "user_id", "created_at"),  # the history, newest first
        Index("uq_external_calls_idempotency_key", "idempotency_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    api_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    method: Mapped[str] = mapped_column(String(8))
    scheme: Mapped[str] = mapped_column(String(8))
    host: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer)
    bytes_received: Mapped[int] = mapped_column(Integer)
    elapsed_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set when the row comes through the Redis stream (stream_writer.py), which may deliver it twice.
    idempotency_key: Mapped[str | None] = mapped_column(String(32), nullable=True)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "scheme": self.scheme,
            "host": self.host,
            "path": self.path,
            "status_code": self.status_code,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "bytes_received": self.bytes_received,
            "elapsed_ms": self.elapsed_ms,
            "created_at": as_utc(self.created_at).isoformat(),
        }
