"""A stand-in for OpenAI's /chat/completions and /embeddings (also Azure, Mistral and compatible servers).

Paths are matched by their ending, so /v1/chat/completions and Azure's
/openai/deployments/{d}/chat/completions both work. Knobs make it fail, cut or garble a stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

from tests.upstreams.server import Handler, json_response


def _sse(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def openai_like(
    *,
    reply: str = "Hello from the stand-in",
    tool_call: tuple[str, str] | None = None,
    fail_status: int | None = None,
    fail_body: Any = None,
    fail_headers: dict[str, str] | None = None,
    cut_after: int | None = None,
    stream_error: dict[str, Any] | None = None,
    garbage_line: bool = False,
    send_done: bool = True,
    usage_on_last_chunk: bool = False,
    embedding_dims: int = 3,
) -> Handler:
    """A handler answering in OpenAI's format; tool_call is (name, arguments JSON) to call instead of text."""
    words = reply.split(" ")
    usage = {"prompt_tokens": 5, "completion_tokens": len(words), "total_tokens": 5 + len(words)}

    def chat(request: Request) -> Response:
        body = request.get_json()
        model = body["model"]
        base = {"id": "chatcmpl-standin", "created": 1700000000, "model": model}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
            finish = "stop"
            if tool_call:
                name, arguments = tool_call
                message["content"] = None
                message["tool_calls"] = [
                    {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
                ]
                finish = "tool_calls"
            return json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": usage,
                    "system_fingerprint": "fp_standin",
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }

        def events() -> Iterator[bytes]:
            yield _sse(chunk({"role": "assistant", "content": ""}))
            if garbage_line:
                yield b"data: this is not json\n\n"
            if stream_error is not None:
                yield _sse({"error": stream_error})
                return
            if tool_call:
                name, arguments = tool_call
                head = {"index": 0, "id": "call_1", "type": "function"}
                yield _sse(chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}))
                half = len(arguments) // 2
                for part in (arguments[:half], arguments[half:]):
                    yield _sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
                finish = "tool_calls"
            else:
                for i, word in enumerate(words):
                    if cut_after is not None and i >= cut_after:
                        return  # the body ends here, with neither finish_reason nor [DONE]
                    yield _sse(chunk({"content": word if i == 0 else " " + word}))
                finish = "stop"
            last = chunk({}, finish)
            if usage_on_last_chunk:
                last["usage"] = usage
            yield _sse(last)
            if (body.get("stream_options") or {}).get("include_usage") and not usage_on_last_chunk:
                yield _sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            if send_done:
                yield _sse("[DONE]")

        return Response(events(), mimetype="text/event-stream")

    def embeddings(request: Request) -> Response:
        body = request.get_json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = body.get("dimensions") or body.get("output_dimension") or embedding_dims
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i + d) / 10 for d in range(dims)]}
            for i in range(len(inputs))
        ]
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            }
        )

    def handler(request: Request) -> Response:
        if fail_status is not None:
            return json_response(fail_body, status=fail_status, headers=fail_headers)
        if request.path.endswith("/chat/completions"):
            return chat(request)
        if request.path.endswith("/embeddings"):
            return embeddings(request)
        return json_response({"error": {"message": "no such path", "type": "invalid_request_error"}}, 404)

    return handler
