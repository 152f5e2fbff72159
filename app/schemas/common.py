"""Shared schema pieces: the strict base model, text without NUL and the documented error shape."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused and types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


# PostgreSQL's INTEGER, the type of the tables' ids and counts: a larger number names no row and fails as
# a query parameter, so requests are bounded by it (or answered as unknown without asking the database).
MAX_INTEGER = 2**31 - 1


def refuse_nul(value: str) -> str:
    # JSON may carry \u0000 but PostgreSQL text cannot hold it: the query would fail with a 500.
    if "\x00" in value:
        raise ValueError("Must not contain the NUL character (U+0000).")
    return value


# For every request string that may reach the database.
NulFreeStr = Annotated[str, AfterValidator(refuse_nul)]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
