"""Render every error, ours and Flask's, in one of two shapes: /api's and OpenAI's on /v1."""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy import exc as sql_errors
from werkzeug.exceptions import HTTPException

from app.errors import ApiError, ProviderError, RateLimited, ServiceUnavailable, ValidationFailed

logger = logging.getLogger(__name__)

HTTP_CODES = {
    400: ("bad_request", "The request is not valid."),
    401: ("unauthorized", "Authentication is required."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "The requested URL was not found."),
    405: ("method_not_allowed", "The method is not allowed for this URL."),
    409: ("conflict", "The request conflicts with the current state."),
    413: ("payload_too_large", "The request body is larger than the server accepts."),
    415: (
        "unsupported_media_type",
        "The request body must be JSON, sent with Content-Type: application/json.",
    ),
    422: ("unprocessable_entity", "The request could not be processed."),
    429: ("rate_limited", "Too many requests; retry later."),
    500: ("internal_error", "The server failed to handle the request."),
}

# OpenAI's error `type` for each status we answer on /v1.
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def is_openai_surface() -> bool:
    return request.path.startswith("/v1/") or request.path == "/v1"


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    openai_type: str | None = None,
    param: str | None = None,
) -> Response:
    if is_openai_surface():
        body = {
            "error": {
                "message": message,
                "type": openai_type or OPENAI_TYPES.get(status, "api_error"),
                "param": param,
                "code": code,
            }
        }
    else:
        body = {"error": {"code": code, "message": message}}
        if details:
            body["error"]["details"] = details
    response = jsonify(body)
    response.status_code = status
    return response


_CALLER_KINDS = frozenset({"invalid_request", "context_length", "content_policy"})


def handle_api_error(error: ApiError) -> Response:
    if error.status >= 500:
        logger.warning(
            "request failed: %s: %s",
            error.code,
            error.message,
            extra={
                "error_code": error.code,
                "provider": getattr(error, "provider", None),
                "kind": getattr(error, "kind", None),
                "upstream_status": getattr(error, "upstream_status", None),
            },
        )
    return render_api_error(error)


def render_api_error(error: ApiError) -> Response:
    openai_type = getattr(error, "openai_type", None)
    details = error.details or {}
    # OpenAI names the offending field in `param`; our validation errors carry it in details.fields.
    param = details.get("param") or next(iter(details.get("fields") or {}), None)
    code = error.code
    if isinstance(error, ProviderError) and error.provider_code and error.kind in _CALLER_KINDS:
        # The provider's own code (context_length_exceeded, content_policy_violation) tells the caller
        # what to change; codes about our own key or the provider's health stay ours.
        code = error.provider_code
    response = error_response(
        error.status, code, error.message, error.details, openai_type=openai_type, param=param
    )
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, RateLimited | ProviderError | ServiceUnavailable) and retry_after:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def validation_failed(error: ValidationError) -> ValidationFailed:
    """Turn pydantic's errors into {"fields": {"a.b": [messages]}}; errors at the root belong to "body"."""
    fields: dict[str, list[str]] = {}
    for item in error.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in {"model_type", "model_attributes_type", "dict_type"} and name == "body":
            message = "The request body must be a JSON object."
        elif item["type"] == "extra_forbidden":
            message = "Unknown field."
        fields.setdefault(name, []).append(message)
    first = next(iter(fields))
    return ValidationFailed(f"Invalid request: {first}: {fields[first][0]}", details={"fields": fields})


def raise_validation_failed(error: ValidationError) -> None:
    """flask-openapi3's validation_error_callback: raise, so our handlers render it."""
    raise validation_failed(error)


def handle_validation_error(error: ValidationError) -> Response:
    return handle_api_error(validation_failed(error))


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code, default_message = HTTP_CODES.get(status, ("http_error", "The request failed."))
    message = default_message
    if status == 429 and error.description:
        message = f"Rate limit exceeded: {error.description}."
    response = error_response(status, code, message)
    # Keep the headers Werkzeug computed (Allow on 405, Retry-After on 429).
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


# Failures of the stores themselves, not of a request: a refused or dropped connection, a timeout, an
# exhausted pool, a locked SQLite file. Errors in what was asked of them (a bad query, a Lua error) stay 500s.
_DATABASE_DOWN = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError)


def handle_store_unavailable(error: Exception) -> Response:
    store = "the database" if isinstance(error, sql_errors.SQLAlchemyError) else "Redis"
    cause = getattr(error, "orig", None) or error  # the driver's error: SQLAlchemy's text would add the SQL
    summary = (str(cause).strip().splitlines() or [""])[0]
    # One line instead of handle_unexpected's traceback: the store's state is the news, not our stack.
    logger.warning("%s unreachable: %s: %s", store, type(cause).__name__, summary)
    return render_api_error(ServiceUnavailable(f"The service cannot reach {store} right now; retry shortly."))


def handle_unexpected(error: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(500, *HTTP_CODES[500])


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    for store_down in _DATABASE_DOWN:
        app.register_error_handler(store_down, handle_store_unavailable)
    app.register_error_handler(Exception, handle_unexpected)


def register_redis_errors(app: Flask) -> None:
    """Only an app configured with Redis loads redis-py, and only it can meet these."""
    import redis

    for store_down in (redis.ConnectionError, redis.TimeoutError):
        app.register_error_handler(store_down, handle_store_unavailable)
