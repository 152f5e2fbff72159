"""A stand-in for the Gemini API, its bodies built from the google-genai SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from google.genai import types as g
from werkzeug.wrappers import Request, Response

from tests.upstreams.server import Handler, json_response


def gemini_response(
    parts: list[g.Part],
    finish_reason: g.FinishReason | None = g.FinishReason.STOP,
    usage: tuple[int, int] | None = (10, 4),
    response_id: str | None = "resp-1",
) -> dict[str, Any]:
    """A GenerateContentResponse body as the REST API sends it (camelCase, no nulls)."""
    metadata = None
    if usage:
        metadata = g.GenerateContentResponseUsageMetadata(
            prompt_token_count=usage[0], candidates_token_count=usage[1], total_token_count=sum(usage)
        )
    return g.GenerateContentResponse(
        candidates=[
            g.Candidate(content=g.Content(role="model", parts=parts), finish_reason=finish_reason, index=0)
        ],
        usage_metadata=metadata,
        response_id=response_id,
        model_version="gemini-test",
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


def gemini_stream_bodies(text: str = "Hello there") -> list[dict[str, Any]]:
    """Two chunks as streamGenerateContent sends them; the second has finishReason and usage."""
    half = len(text) // 2
    return [
        gemini_response([g.Part(text=text[:half])], finish_reason=None, usage=None),
        gemini_response([g.Part(text=text[half:])]),
    ]


def gemini_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def gemini_upstream(
    *,
    text: str = "Hello there",
    error_status: int | None = None,
    error_body: dict[str, Any] | None = None,
    cut_stream: bool = False,
) -> Handler:
    """A handler for generateContent, streamGenerateContent?alt=sse and batchEmbedContents."""

    def handler(request: Request) -> Response:
        if error_status is not None:
            return json_response(error_body or gemini_error(500, "INTERNAL", "boom"), status=error_status)
        if request.path.endswith(":batchEmbedContents"):
            count = len(request.get_json()["requests"])
            embeddings = [g.ContentEmbedding(values=[0.5, float(i)]) for i in range(count)]
            body = g.EmbedContentResponse(embeddings=embeddings)
            return json_response(body.model_dump(mode="json", by_alias=True, exclude_none=True))
        if request.path.endswith(":generateContent"):
            return json_response(gemini_response([g.Part(text=text)]))
        bodies = gemini_stream_bodies(text)
        if cut_stream:
            bodies = bodies[:1]

        def stream() -> Iterator[bytes]:
            for body in bodies:
                yield f"data: {json.dumps(body)}\r\n\r\n".encode()

        return Response(stream(), content_type="text/event-stream")

    return handler
