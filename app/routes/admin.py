"""Administration: everyone's usage, and the limits of any user or key."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag

from app.errors import NotFound
from app.extensions import db
from app.middleware.auth_middleware import admin_required
from app.middleware.validation import validated
from app.models import ApiKey, User
from app.routes.docs import BEARER
from app.routes.usage import flush_usage
from app.schemas.common import MAX_INTEGER, ErrorResponse
from app.schemas.usage import AdminUsageQuery, KeyPath, LimitsBody, UserPath
from app.services import usage_report
from app.services.limits import limit_service

bp = APIBlueprint("admin", __name__, url_prefix="/api/admin", abp_tags=[Tag(name="admin")])

_ERRORS = {400: ErrorResponse, 401: ErrorResponse, 403: ErrorResponse, 404: ErrorResponse}


@bp.get("/usage", security=BEARER, responses=_ERRORS)
@admin_required
@validated
def all_usage(query: AdminUsageQuery):
    """Usage of every user (or of user_id), grouped by user, model, day or key."""
    flush_usage()
    start, end = usage_report.period(query.from_, query.to)
    return usage_report.report(query.user_id, start, end, query.group_by, query.page, query.per_page)


def _missing(model: type[User] | type[ApiKey], row_id: int) -> bool:
    # An id no row can have (beyond the INTEGER column) is not looked up: PostgreSQL would refuse it.
    return row_id > MAX_INTEGER or db.session.get(model, row_id) is None


def _limits_response(scope: str, subject_id: int) -> dict:
    service = limit_service()
    return {
        "stored": service.stored_limits(scope, subject_id),
        "effective": service.limits_for(scope, subject_id).to_public(),
    }


@bp.get("/users/<int:user_id>/limits", security=BEARER, responses=_ERRORS)
@admin_required
def get_user_limits(path: UserPath):
    """A user's stored limits (null: the default) and the effective ones."""
    if _missing(User, path.user_id):
        raise NotFound("No such user.")
    return {"user_id": path.user_id, **_limits_response("user", path.user_id)}


@bp.put("/users/<int:user_id>/limits", security=BEARER, responses=_ERRORS)
@admin_required
def set_user_limits(path: UserPath, body: LimitsBody):
    """Set a user's limits: a number (0 = unlimited), or null for the default; omitted fields stay."""
    if _missing(User, path.user_id):
        raise NotFound("No such user.")
    limit_service().set_limits("user", path.user_id, body.model_dump(exclude_unset=True))
    return {"user_id": path.user_id, **_limits_response("user", path.user_id)}


@bp.put("/keys/<int:key_id>/limits", security=BEARER, responses=_ERRORS)
@admin_required
def set_key_limits(path: KeyPath, body: LimitsBody):
    """Set any API key's limits: a number (0 = unlimited), or null for none."""
    if _missing(ApiKey, path.key_id):
        raise NotFound("No such API key.")
    limit_service().set_limits("key", path.key_id, body.model_dump(exclude_unset=True))
    return {"key_id": path.key_id, **_limits_response("key", path.key_id)}
