from __future__ import annotations

import logging

from flask_openapi3 import APIBlueprint, Tag, validate_request
from sqlalchemy import text

from app.extensions import db, limiter
from app.middleware.auth_middleware import current_identity, jwt_required, login_required
from app.models import User
from app.routes.docs import BEARER
from app.schemas.auth import HealthResponse, ProfileUpdateRequest, UserResponse
from app.schemas.common import ErrorResponse
from app.services import auth_service
from app.version import __version__

logger = logging.getLogger(__name__)

bp = APIBlueprint("api", __name__, url_prefix="/api", abp_tags=[Tag(name="api")])


@bp.get("/health", responses={200: HealthResponse, 503: HealthResponse})
@limiter.exempt
def health():
    """Liveness and database reachability; public, never rate limited (load balancers poll it)."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:
        logger.warning("health check: database unreachable", exc_info=True)
        db.session.rollback()
        return {"status": "degraded", "version": __version__, "database": "unavailable"}, 503
    return {"status": "ok", "version": __version__, "database": "ok"}


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
@validate_request()
def update_profile(body: ProfileUpdateRequest):
    """Change the email or the password; a new password logs out every other login."""
    identity = current_identity()
    user = db.get_or_404(User, identity.user_id)
    user = auth_service.update_profile(
        user, identity.session_id, body.current_password, body.email, body.new_password
    )
    return {"user": user.to_public()}
