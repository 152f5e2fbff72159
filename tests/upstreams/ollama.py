"""A stand-in for Ollama's /api/chat (NDJSON streams) and /api/embed, shaped as the ollama SDK's _types.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.upstreams.server import Handler, json_response

CREATED_AT = "2024-07-22T20:33:28.123648Z"


def ollama(
    *,
    reply: str = "Hello from ollama",
    tool_call: tuple[str, dict[str, Any]] | None = None,
    fail_status: int | None = None,
    fail_message: str = "model not found",
    cut_after: int | None = None,
    stream_error: str | None = None,
    done_reason: str = "stop",
) -> Handler:
    """A handler answering as Ollama; tool_call is (name, arguments object)."""
    words = reply.split(" ")

    def final(model: str, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": model,
            "created_at": CREATED_AT,
            "message": message,
            "done": True,
            "done_reason": done_reason,
            "total_duration": 100,
            "load_duration": 10,
            "prompt_eval_count": 8,
            "prompt_eval_duration": 20,
            "eval_count": len(words),
            "eval_duration": 70,
        }

    def chat(request: Request) -> Response:
        body = request.get_json()
        model = body["model"]
        calls = [{"function": {"name": tool_call[0], "arguments": tool_call[1]}}] if tool_call else None
        if body.get("stream") is False:
            message: dict[str, Any] = {"role": "assistant", "content": "" if calls else reply}
            if calls:
                message["tool_calls"] = calls
            return json_response(final(model, message))

        def lines() -> Iterator[bytes]:
            def part(message: dict[str, Any]) -> bytes:
                obj = {"model": model, "created_at": CREATED_AT, "message": message, "done": False}
                return json.dumps(obj).encode() + b"\n"

            if calls:
                yield part({"role": "assistant", "content": "", "tool_calls": calls})
            else:
                for i, word in enumerate(words):
                    if cut_after is not None and i >= cut_after:
                        return
                    if stream_error is not None and i == 1:
                        yield json.dumps({"error": stream_error}).encode() + b"\n"
                        return
                    yield part({"role": "assistant", "content": word if i == 0 else " " + word})
            yield json.dumps(final(model, {"role": "assistant", "content": ""})).encode() + b"\n"

        return Response(lines(), mimetype="application/x-ndjson")

    def embed(request: Request) -> Response:
        body = request.get_json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return json_response(
            {
                "model": body["model"],
                "embeddings": [[0.5 + i, -0.25] for i in range(len(inputs))],
                "total_duration": 5,
                "load_duration": 1,
                "prompt_eval_count": 2 * len(inputs),
            }
        )

    def handler(request: Request) -> Response:
        if fail_status is not None:
            return json_response({"error": fail_message}, status=fail_status)
        if request.path == "/api/chat":
            return chat(request)
        if request.path == "/api/embed":
            return embed(request)
        return Response("404 page not found", status=404)

    return handler
