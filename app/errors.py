"""The one error hierarchy of the service.

    ApiError                        500 internal_error
     ├── BadRequest                 400 bad_request
     │    ├── ValidationFailed      400 validation_error   (details: {field: [messages]})
     │    └── MalformedJson         400 malformed_json
     ├── UnsupportedMediaType       415 unsupported_media_type
     ├── Unauthorized               401 unauthorized
     │    ├── InvalidCredentials    401 invalid_credentials
     │    └── InvalidToken          401 invalid_token
     ├── Forbidden                  403 forbidden
     │    └── DestinationNotAllowed 403 destination_not_allowed
     ├── NotFound                   404 not_found
     ├── Conflict                   409 conflict
     ├── BudgetExceeded             402 budget_exceeded   (spend limit reached)
     ├── RateLimited                429 rate_limited      (retry_after seconds)
     ├── ServiceUnavailable         503 service_unavailable (a store the service needs is down)
     └── UpstreamError              502 upstream_error    (provider, upstream_status)
          ├── UpstreamUnreachable   502 upstream_unreachable
          ├── UpstreamTimeout       504 upstream_timeout
          ├── UpstreamResponseTooLarge 502 upstream_response_too_large
          └── ProviderError         status by kind        (an LLM provider's own failure)

Services and adapters raise these; app/error_handlers.py renders them in the
/api shape {"error": {"code", "message", "details"}} or OpenAI's shape on /v1.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"
    message: str = "The server failed to handle the request."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.message
        if code:
            self.code = code
        self.details = details
        super().__init__(self.message)


class BadRequest(ApiError):
    status = 400
    code = "bad_request"
    message = "The request is not valid."


class ValidationFailed(BadRequest):
    code = "validation_error"
    message = "The request body has invalid fields."


class MalformedJson(BadRequest):
    code = "malformed_json"
    message = "The request body is not valid JSON."


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"
    message = "The request body must be JSON, sent with Content-Type: application/json."


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    message = "Authentication is required."


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    message = "The username or password is wrong."


class InvalidToken(Unauthorized):
    code = "invalid_token"
    message = "The token is invalid, expired or revoked."


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class DestinationNotAllowed(Forbidden):
    code = "destination_not_allowed"
    message = "The destination is not allowed."


class NotFound(ApiError):
    status = 404
    code = "not_found"
    message = "The resource was not found."


class Conflict(ApiError):
    status = 409
    code = "conflict"
    message = "The resource already exists."


class BudgetExceeded(ApiError):
    status = 402
    code = "budget_exceeded"
    message = "The spending limit has been reached."
    openai_type = "insufficient_quota"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"
    message = "Too many requests; retry later."

    def __init__(self, message: str | None = None, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServiceUnavailable(ApiError):
    """The database or Redis cannot be reached: the caller did nothing wrong and may retry."""

    status = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable; retry shortly."
    openai_type = "api_error"

    def __init__(self, message: str | None = None, *, retry_after: float | None = 2, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UpstreamError(ApiError):
    status = 502
    code = "upstream_error"
    message = "The upstream service failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        provider: str | None = None,
        upstream_status: int | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.provider = provider
        self.upstream_status = upstream_status


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"
    message = "The upstream service could not be reached."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    message = "The upstream service did not answer in time."


class UpstreamResponseTooLarge(UpstreamError):
    code = "upstream_response_too_large"
    message = "The upstream response is larger than allowed."


# What an LLM provider's failure means to the caller and to the router:
# kind -> (status we answer with, OpenAI error type).
PROVIDER_ERROR_KINDS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "context_length": (400, "invalid_request_error"),
    "content_policy": (400, "invalid_request_error"),
    "authentication": (502, "api_error"),  # our key for the provider is wrong: not the caller's fault
    "permission": (502, "api_error"),
    "not_found": (404, "invalid_request_error"),
    "rate_limit": (429, "rate_limit_error"),
    "overloaded": (503, "api_error"),
    "server": (502, "api_error"),
    "timeout": (504, "timeout"),
    "stream_interrupted": (502, "api_error"),
}


class ProviderError(UpstreamError):
    """An LLM provider answered with an error, or broke off; `kind` classifies it."""

    code = "provider_error"
    message = "The model provider failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        kind: str = "server",
        provider: str | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        provider_code: str | None = None,
        **kw: Any,
    ) -> None:
        if kind not in PROVIDER_ERROR_KINDS:
            raise ValueError(f"unknown provider error kind: {kind}")
        super().__init__(message, provider=provider, upstream_status=upstream_status, **kw)
        self.kind = kind
        self.status = PROVIDER_ERROR_KINDS[kind][0]
        self.openai_type = PROVIDER_ERROR_KINDS[kind][1]
        self.retry_after = retry_after
        self.provider_code = provider_code
