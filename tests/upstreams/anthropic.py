"""A stand-in for Anthropic's Messages API, its bodies built from the anthropic SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from anthropic.types import (
    InputJSONDelta,
    Message,
    MessageDeltaUsage,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
    Usage,
)
from anthropic.types.raw_message_delta_event import Delta
from werkzeug.wrappers import Request, Response

from tests.upstreams.server import Handler, json_response


def anthropic_message(
    text: str = "Hello there", tool: tuple[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Message body as the API sends it."""
    content: list[Any] = [TextBlock(type="text", text=text)]
    if tool:
        content.append(ToolUseBlock(type="tool_use", id="toolu_01", name=tool[0], input=tool[1]))
    return Message(
        id="msg_01",
        type="message",
        role="assistant",
        model="claude-test",
        content=content,
        stop_reason="tool_use" if tool else "end_turn",
        stop_sequence=None,
        usage=Usage(input_tokens=12, output_tokens=5, cache_read_input_tokens=3),
    ).model_dump(mode="json")


def anthropic_events(text: str = "Hello there", tool: tuple[str, dict[str, Any]] | None = None) -> list[Any]:
    """The SDK event models of one streamed answer, split into two text deltas and an optional tool use."""
    start = Message(
        id="msg_01",
        type="message",
        role="assistant",
        model="claude-test",
        content=[],
        stop_reason=None,
        usage=Usage(input_tokens=12, output_tokens=1),
    )
    half = len(text) // 2
    events: list[Any] = [
        RawMessageStartEvent(type="message_start", message=start),
        RawContentBlockStartEvent(
            type="content_block_start", index=0, content_block=TextBlock(type="text", text="")
        ),
        RawContentBlockDeltaEvent(
            type="content_block_delta", index=0, delta=TextDelta(type="text_delta", text=text[:half])
        ),
        RawContentBlockDeltaEvent(
            type="content_block_delta", index=0, delta=TextDelta(type="text_delta", text=text[half:])
        ),
        RawContentBlockStopEvent(type="content_block_stop", index=0),
    ]
    if tool:
        arguments = json.dumps(tool[1])
        events += [
            RawContentBlockStartEvent(
                type="content_block_start",
                index=1,
                content_block=ToolUseBlock(type="tool_use", id="toolu_01", name=tool[0], input={}),
            ),
            RawContentBlockDeltaEvent(
                type="content_block_delta",
                index=1,
                delta=InputJSONDelta(type="input_json_delta", partial_json=arguments[:5]),
            ),
            RawContentBlockDeltaEvent(
                type="content_block_delta",
                index=1,
                delta=InputJSONDelta(type="input_json_delta", partial_json=arguments[5:]),
            ),
            RawContentBlockStopEvent(type="content_block_stop", index=1),
        ]
    events += [
        RawMessageDeltaEvent(
            type="message_delta",
            delta=Delta(stop_reason="tool_use" if tool else "end_turn"),
            usage=MessageDeltaUsage(output_tokens=5),
        ),
        RawMessageStopEvent(type="message_stop"),
    ]
    return events


def sse(event: Any) -> bytes:
    """One event in Anthropic's framing: the event name repeats the data's type."""
    data = event if isinstance(event, dict) else event.model_dump(mode="json")
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_upstream(
    *,
    text: str = "Hello there",
    tool: tuple[str, dict[str, Any]] | None = None,
    error_status: int | None = None,
    error_body: dict[str, Any] | None = None,
    cut_stream: bool = False,
    stream_error: dict[str, Any] | None = None,
) -> Handler:
    """A handler for /v1/messages; knobs fail with a status and body, cut the stream or send an error."""

    def handler(request: Request) -> Response:
        if error_status is not None:
            body = error_body or {"type": "error", "error": {"type": "api_error", "message": "boom"}}
            return json_response(body, status=error_status)
        if not request.get_json().get("stream"):
            return json_response(anthropic_message(text, tool))
        events = anthropic_events(text, tool)
        if cut_stream:
            events = events[:3]
        if stream_error is not None:
            events = [*events[:3], {"type": "error", "error": stream_error}]

        def body() -> Iterator[bytes]:
            for event in events:
                yield sse(event)

        return Response(body(), content_type="text/event-stream")

    return handler
