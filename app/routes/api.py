from __future__ import annotations

import logging

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import text

from app.extensions import db
from app.middleware import rate_limits
from app.middleware.auth_middleware import current_identity, jwt_required, login_required
from app.middleware.validation import validated
from app.models import User
from app.routes.docs import BEARER
from app.schemas.auth import HealthResponse, ProfileUpdateRequest, ReadyResponse, UserResponse
from app.schemas.common import ErrorResponse
from app.services import auth_service, lifecycle
from app.version import __version__

logger = logging.getLogger(__name__)

bp = APIBlueprint("api", __name__, url_prefix="/api", abp_tags=[Tag(name="api")])


@bp.get("/health", responses={200: HealthResponse, 503: HealthResponse})
@rate_limits.exempt
def health():
    """Liveness and database reachability; public, never rate limited (load balancers poll it)."""
    report = {"status": "ok", "version": __version__, "database": "ok"}
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:
        logger.warning("health check: database unreachable", exc_info=True)
        db.session.rollback()
        report["database"] = "unavailable"
    redis_client = current_app.extensions.get("redis")
    if redis_client is not None:
        try:
            redis_client.ping()
            report["redis"] = "ok"
        except Exception:
            logger.warning("health check: Redis unreachable", exc_info=True)
            report["redis"] = "unavailable"
    if "unavailable" in report.values():
        report["status"] = "degraded"
        return report, 503
    return report


@bp.get("/ready", responses={200: ReadyResponse, 503: ReadyResponse})
@rate_limits.exempt
def ready():
    """Whether this instance takes new requests: 503 while it drains after SIGTERM."""
    if lifecycle.is_draining():
        return {"status": "draining"}, 503
    return {"status": "ready"}


@bp.get("/profile", responses={200: UserResponse, 401: ErrorResponse}, security=BEARER)
@login_required
def profile():
    user = db.get_or_404(User, current_identity().user_id)
    return {"user": user.to_public()}


@bp.patch(
    "/profile",
    responses={
        200: UserResponse,
        400: ErrorResponse,
        401: ErrorResponse,
        403: ErrorResponse,
        409: ErrorResponse,
    },
    security=BEARER,
)
@jwt_required
@validated
def update_profile(body: ProfileUpdateRequest):
    """Change the email or the password; a new password logs out every other login."""
    identity = current_identity()
    user = db.get_or_404(User, identity.user_id)
    user = auth_service.update_profile(
        user, identity.session_id, body.current_password, body.email, body.new_password
    )
    return {"user": user.to_public()}
