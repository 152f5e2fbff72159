"""Read usage back: totals, a series grouped by model, day, key or user, and the rows themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select

from app.errors import ValidationFailed
from app.extensions import db
from app.models import UsageRecord
from app.models.user import as_utc

GROUPS = ("model", "day", "key", "user")


def period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[start, end): the last 30 days when not given; naive times are UTC."""
    end = _utc(end, "to") if end else datetime.now(UTC) + timedelta(seconds=1)
    if start:
        start = _utc(start, "from")
    else:
        try:
            start = end - timedelta(days=30)
        except OverflowError:
            raise _out_of_range("to") from None
    if start >= end:
        raise ValidationFailed(
            "from must be before to.", details={"fields": {"from": ["Must be before to."]}}
        )
    return start, end


def _utc(moment: datetime, field: str) -> datetime:
    # SQLite compares the stored UTC wall time as text: an aware bound must be converted, not only tagged.
    try:
        return as_utc(moment).astimezone(UTC)
    except OverflowError:  # in UTC it falls before year 1 or after year 9999
        raise _out_of_range(field) from None


def _out_of_range(field: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field} is out of range.", details={"fields": {field: ["Out of the supported date range."]}}
    )


def _day_column() -> Any:
    if db.engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", UsageRecord.created_at), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", UsageRecord.created_at)  # SQLite stores UTC wall time


def _group_column(group_by: str) -> Any:
    return {
        "model": UsageRecord.model,
        "key": UsageRecord.api_key_id,
        "user": UsageRecord.user_id,
    }.get(group_by) or _day_column()


def _sums() -> list[Any]:
    return [
        func.count(UsageRecord.id).label("requests"),
        func.sum(case((UsageRecord.status != "ok", 1), else_=0)).label("failed"),
        func.coalesce(func.sum(UsageRecord.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(UsageRecord.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(UsageRecord.cost_usd), 0.0).label("cost_usd"),
    ]


def _shape(row: Any) -> dict[str, Any]:
    return {
        "requests": int(row.requests or 0),
        "failed": int(row.failed or 0),
        "prompt_tokens": int(row.prompt_tokens or 0),
        "completion_tokens": int(row.completion_tokens or 0),
        "cost_usd": round(float(row.cost_usd or 0.0), 8),
    }


def report(
    user_id: int | None,
    start: datetime,
    end: datetime,
    group_by: str,
    page: int,
    per_page: int,
) -> dict[str, Any]:
    """Usage in [start, end) for one user, or everyone when user_id is None."""
    conditions = [UsageRecord.created_at >= start, UsageRecord.created_at < end]
    if user_id is not None:
        conditions.append(UsageRecord.user_id == user_id)
    totals = db.session.execute(select(*_sums()).where(*conditions)).one()
    group = _group_column(group_by).label("group")
    series = db.session.execute(
        select(group, *_sums()).where(*conditions).group_by(group).order_by(group)
    ).all()
    rows = db.paginate(
        select(UsageRecord).where(*conditions).order_by(UsageRecord.id.desc()),
        page=page,
        per_page=per_page,
        error_out=False,
    )
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
        "totals": _shape(totals),
        "series": [{group_by: item.group, **_shape(item)} for item in series],
        "items": [record.to_public() | {"user_id": record.user_id} for record in rows.items],
        "page": page,
        "per_page": per_page,
        "total": rows.total,
    }
