"""GET /metrics in Prometheus text format, behind METRICS_TOKEN when it is set."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app

from app.errors import Unauthorized
from app.middleware import rate_limits
from app.middleware.auth_middleware import bearer_token

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@rate_limits.exempt
def metrics() -> Response:
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        given = bearer_token()
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("The metrics token is missing or wrong.")
    metrics = current_app.extensions["metrics"]
    metrics.observe_breakers(current_app.extensions["gateway"])
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
