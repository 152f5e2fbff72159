from __future__ import annotations

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag

from app.middleware.auth_middleware import current_identity, login_required
from app.middleware.validation import validated
from app.routes.docs import BEARER
from app.schemas.llm import CompareRequest

bp = APIBlueprint("compare", __name__, url_prefix="/api/llm", abp_tags=[Tag(name="llm")])


@bp.post("/compare", security=BEARER)
@login_required
@validated
def compare(body: CompareRequest):
    """Send one prompt to 2 to 8 models at once and return their answers side by side."""
    chat = body.to_chat()
    models = chat.pop("models")
    allowed = getattr(current_identity(), "allowed_models", None)
    results = current_app.extensions["gateway"].compare(chat, models, allowed)
    return {"results": results}
