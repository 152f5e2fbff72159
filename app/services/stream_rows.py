"""Rows on a Redis stream: to bytes and back with their types, and inserted once however often they come."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import DateTime, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from app.extensions import db

IDEMPOTENCY_KEY = "idempotency_key"  # the column a row's key is kept in; unique in its table


def encode_row(row: dict[str, Any]) -> bytes:
    """orjson writes datetimes as RFC 3339 text, and numbers, booleans and None as themselves."""
    return orjson.dumps(row)


def decode_row(model: type[Any], raw: bytes) -> dict[str, Any]:
    """The row `encode_row` was given: JSON kept the numbers, booleans and None; datetimes come back here."""
    row = orjson.loads(raw)
    for column in _datetime_columns(model):
        if isinstance(row.get(column), str):
            row[column] = datetime.fromisoformat(row[column])
    return row


def insert_once(table: Any) -> Insert:
    """An INSERT that skips rows whose idempotency key is already in the table.

    A consumer that dies between its COMMIT and its XACK leaves its batch pending, and whoever claims
    it inserts it again: this makes that a no-op. Rows without a key (NULL) are always inserted.
    """
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[IDEMPOTENCY_KEY])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[IDEMPOTENCY_KEY])
    # This project runs on PostgreSQL and SQLite only; elsewhere the unique index refuses a second copy.
    return db.insert(table)


def _datetime_columns(model: type[Any]) -> list[str]:
    return [column.key for column in inspect(model).columns if isinstance(column.type, DateTime)]
