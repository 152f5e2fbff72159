from __future__ import annotations

from flask import current_app
from flask_openapi3 import APIBlueprint, Tag

from app.errors import NotFound
from app.middleware.auth_middleware import current_identity, login_required
from app.middleware.validation import validated
from app.routes.docs import BEARER
from app.schemas.llm import CompareRequest
from app.services import usage_service

bp = APIBlueprint("compare", __name__, url_prefix="/api/llm", abp_tags=[Tag(name="llm")])


@bp.post("/compare", security=BEARER)
@login_required
@validated
def compare(body: CompareRequest):
    """Send one prompt to 2 to 8 models at once and return their answers side by side."""
    chat = body.to_chat()
    models = chat.pop("models")
    allowed = getattr(current_identity(), "allowed_models", None)
    max_tokens = body.max_completion_tokens or body.max_tokens
    meters: dict[int, usage_service.Meter] = {}
    try:
        for index, model in enumerate(models):
            try:
                meters[index] = usage_service.begin(
                    "compare",
                    model,
                    prompt_payload=chat.get("messages"),
                    max_tokens=max_tokens,
                    choices=body.n or 1,
                )
            except NotFound:
                continue  # an unknown model fails in its own slot of the results, like any other failure
    except BaseException:
        usage_service.release(list(meters.values()))  # one model over a limit refuses the whole comparison
        raise
    try:
        results = current_app.extensions["gateway"].compare(chat, models, allowed)
    except BaseException as error:
        for meter in meters.values():
            meter.finish("error", error=error)
        raise
    for index, meter in meters.items():
        usage_service.finish_compare(meter, results[index])
    return {"results": results}
