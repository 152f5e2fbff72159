"""The caller's own usage and limits; owners set limits on their API keys."""

from __future__ import annotations

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag

from app.errors import Forbidden
from app.extensions import db
from app.middleware.auth_middleware import current_identity, jwt_required, login_required
from app.middleware.validation import validated
from app.models import User
from app.routes.docs import BEARER
from app.schemas.common import ErrorResponse
from app.schemas.usage import KeyPath, LimitsBody, UsageQuery
from app.services import api_key_service, usage_report
from app.services.limits import limit_service

bp = APIBlueprint("usage", __name__, url_prefix="/api", abp_tags=[Tag(name="usage")])


def flush_usage() -> None:
    # A caller reads its own calls, even those made a moment ago in this process.
    current_app.extensions["usage_writer"].flush()


@bp.get("/usage", security=BEARER, responses={400: ErrorResponse, 401: ErrorResponse, 403: ErrorResponse})
@login_required
@validated
def usage(query: UsageQuery):
    """Totals, a series grouped by model, day or key, and the calls themselves, newest first."""
    user_id = current_identity().user_id
    if query.user_id is not None and query.user_id != user_id:
        caller = db.session.get(User, user_id)
        if current_identity().via != "jwt" or caller is None or not caller.is_admin:
            raise Forbidden("Only administrators may read another user's usage.", code="admin_required")
        user_id = query.user_id
    flush_usage()
    start, end = usage_report.period(query.from_, query.to)
    return usage_report.report(user_id, start, end, query.group_by, query.page, query.per_page)


@bp.get("/limits", security=BEARER, responses={401: ErrorResponse})
@login_required
def my_limits():
    """The limits that apply to this caller: the account's, and the key's when called with a key."""
    identity = current_identity()
    service = limit_service()
    body = {"user": service.limits_for("user", identity.user_id).to_public()}
    if identity.api_key_id is not None:
        body["key"] = service.limits_for("key", identity.api_key_id).to_public()
    return body


@bp.put(
    "/keys/<int:key_id>/limits",
    security=BEARER,
    responses={400: ErrorResponse, 401: ErrorResponse, 403: ErrorResponse, 404: ErrorResponse},
)
@jwt_required
def set_key_limits(path: KeyPath, body: LimitsBody):
    """Limit one of your keys (on top of your account's limits); null removes a limit."""
    key = api_key_service.live_key(current_identity().user_id, path.key_id)
    limit_service().set_limits("key", key.id, body.model_dump(exclude_unset=True))
    return {"key_id": key.id, "limits": limit_service().stored_limits("key", key.id)}


@bp.get("/keys/<int:key_id>/limits", security=BEARER, responses={401: ErrorResponse, 404: ErrorResponse})
@jwt_required
def get_key_limits(path: KeyPath):
    """One of your keys' own limits (null: none)."""
    key = api_key_service.live_key(current_identity().user_id, path.key_id)
    return {"key_id": key.id, "limits": limit_service().stored_limits("key", key.id)}
