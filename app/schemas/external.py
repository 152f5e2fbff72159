"""Request bodies of POST /api/external/get|post|put|delete.

The route picks the model with `request_model(method)` and validates the JSON body with it; a pydantic
ValidationError becomes a 400 (app.errors.ValidationFailed). Unknown fields are refused at every depth.
Passing `context={"max_timeout": EXTERNAL_API_TIMEOUT}` to model_validate also checks the timeout bound
(call_external checks it again, so forgetting the context cannot widen it).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.utils.http_headers import header_problem

Scalar = StrictStr | StrictBool | StrictInt | StrictFloat
ParamValue = Scalar | list[Scalar]

MAX_URL_LENGTH = 8192


class ExternalRequest(BaseModel):
    """The body of POST/PUT/DELETE: where to send, what to send."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH, description="http(s) URL to call")]
    headers: dict[str, StrictStr] = Field(default_factory=dict, max_length=100)
    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=200)
    payload: Any = Field(default=None, description="JSON body, or form fields when use_json is false")
    use_json: StrictBool = True
    timeout: Annotated[float, Field(gt=0, description="seconds, at most EXTERNAL_API_TIMEOUT")] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if any(ord(c) < 0x21 or c == "\x7f" for c in url):
            raise ValueError("must not contain whitespace or control characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError("must be an http or https URL")
        if "@" in parts.netloc:
            raise ValueError("must not contain credentials; send an Authorization header instead")
        if not parts.hostname:
            raise ValueError("must have a host")
        return url

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            problem = header_problem(name, value)
            if problem:
                raise ValueError(problem)
        return headers

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, timeout: float | None, info: ValidationInfo) -> float | None:
        limit = (info.context or {}).get("max_timeout")
        if timeout is not None and limit is not None and timeout > limit:
            raise ValueError(f"must be at most {limit:g} seconds")
        return timeout

    @model_validator(mode="after")
    def _form_payload(self) -> ExternalRequest:
        if self.use_json or self.payload is None:
            return self
        if not isinstance(self.payload, dict) or not all(_is_form_value(v) for v in self.payload.values()):
            raise ValueError(
                "with use_json false, payload must be an object of strings, numbers, booleans or lists"
            )
        return self


class ExternalGetRequest(ExternalRequest):
    """The body of GET: the same, without a payload."""

    @field_validator("payload")
    @classmethod
    def _no_payload(cls, payload: Any) -> Any:
        raise ValueError("a GET request takes no payload")


def _is_form_value(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return all(isinstance(v, str | int | float | bool) for v in items)


_MODELS: dict[str, type[ExternalRequest]] = {
    "GET": ExternalGetRequest,
    "POST": ExternalRequest,
    "PUT": ExternalRequest,
    "DELETE": ExternalRequest,
}


def request_model(method: str) -> type[ExternalRequest]:
    """The body model for an HTTP method of the external proxy (KeyError for any other)."""
    return _MODELS[method.upper()]
