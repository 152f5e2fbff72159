"""POST /api/external/get|post|put|delete: call another HTTP API through the service; and the caller's history."""

from __future__ import annotations

from flask import current_app, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from app.middleware.auth_middleware import current_identity, login_required
from app.middleware.validation import validated
from app.routes.docs import BEARER
from app.schemas.common import ErrorResponse
from app.schemas.external import ExternalGetRequest, ExternalRequest
from app.services import external_proxy

bp = APIBlueprint("external", __name__, url_prefix="/api/external", abp_tags=[Tag(name="external")])

RESPONSES = {
    400: ErrorResponse,
    401: ErrorResponse,
    403: ErrorResponse,
    502: ErrorResponse,
    504: ErrorResponse,
}


class HistoryQuery(BaseModel):
    page: int = Field(default=1, ge=1)
    per_page: int = Field(default=20, ge=1, le=100)


def _call(method: str, body: ExternalRequest) -> dict:
    proxy: external_proxy.ExternalProxy = current_app.extensions["external"]
    identity = current_identity()
    result = proxy.call(
        method,
        body.url,
        headers=body.headers,
        params=body.params,
        payload=body.payload,
        use_json=body.use_json,
        timeout=body.timeout,
        # Only this header of the caller's own request travels on: it makes a POST safe to retry.
        idempotency_key=request.headers.get("Idempotency-Key"),
        on_finish=lambda audit: external_proxy.record_call(
            current_app.extensions["external_audit"],
            identity.user_id,
            getattr(identity, "api_key_id", None),
            audit,
        ),
    )
    return result.to_response()


@bp.post("/get", security=BEARER, responses=RESPONSES)
@login_required
@validated
def external_get(body: ExternalGetRequest):
    """GET a URL (params become its query string)."""
    return _call("GET", body)


@bp.post("/post", security=BEARER, responses=RESPONSES)
@login_required
@validated
def external_post(body: ExternalRequest):
    """POST to a URL; retried only when safe (connect errors, 429/503 with Retry-After, or an Idempotency-Key)."""
    return _call("POST", body)


@bp.post("/put", security=BEARER, responses=RESPONSES)
@login_required
@validated
def external_put(body: ExternalRequest):
    """PUT to a URL."""
    return _call("PUT", body)


@bp.post("/delete", security=BEARER, responses=RESPONSES)
@login_required
@validated
def external_delete(body: ExternalRequest):
    """DELETE a URL."""
    return _call("DELETE", body)


@bp.get("/history", security=BEARER, responses={401: ErrorResponse})
@login_required
@validated
def external_history(query: HistoryQuery):
    """The caller's external calls, newest first."""
    writer = current_app.extensions["external_audit"]
    return external_proxy.history(writer, current_identity().user_id, query.page, query.per_page)
