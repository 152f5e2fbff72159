from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag

from app.middleware.auth_middleware import current_identity, jwt_required
from app.middleware.validation import validated
from app.routes.docs import BEARER
from app.schemas.api_keys import ApiKeyCreated, ApiKeyCreateRequest, ApiKeyList, ApiKeyPath
from app.schemas.auth import MessageResponse
from app.schemas.common import ErrorResponse
from app.services import api_key_service

bp = APIBlueprint("keys", __name__, url_prefix="/api/keys", abp_tags=[Tag(name="api keys")])

# Managing keys needs a login: with an API key, a leaked key could mint or keep others.
_AUTH_ERRORS = {401: ErrorResponse, 403: ErrorResponse}


@bp.post("", responses={201: ApiKeyCreated, 400: ErrorResponse, **_AUTH_ERRORS}, security=BEARER)
@jwt_required
@validated
def create_key(body: ApiKeyCreateRequest):
    """Create a key; the secret is in this response only."""
    key, secret = api_key_service.create_key(
        current_identity().user_id, body.name, body.expires_at, body.models
    )
    return {**key.to_public(), "key": secret}, 201


@bp.get("", responses={200: ApiKeyList, **_AUTH_ERRORS}, security=BEARER)
@jwt_required
def list_keys():
    """The caller's keys that are not revoked, newest first, without secrets."""
    return {"keys": [key.to_public() for key in api_key_service.list_keys(current_identity().user_id)]}


@bp.delete(
    "/<int:key_id>", responses={200: MessageResponse, 404: ErrorResponse, **_AUTH_ERRORS}, security=BEARER
)
@jwt_required
def revoke_key(path: ApiKeyPath):
    """Revoke a key: every instance refuses it from the next request."""
    api_key_service.revoke_key(current_identity().user_id, path.key_id)
    return {"message": "The API key is revoked."}
