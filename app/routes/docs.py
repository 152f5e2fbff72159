"""Security scheme shared by the route modules for the OpenAPI document."""

from __future__ import annotations

from flask_openapi3 import SecurityScheme

SECURITY_SCHEMES = {
    "bearer": SecurityScheme(type="http", scheme="bearer", bearerFormat="JWT or API key"),
}
BEARER = [{"bearer": []}]
