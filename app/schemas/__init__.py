"""Request and response schemas (pydantic v2): they validate bodies and feed /openapi.json."""
