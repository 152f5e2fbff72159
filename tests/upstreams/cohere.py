"""A stand-in for Cohere's v2 API, its bodies built from the cohere SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from cohere.types import (
    ApiMeta,
    ApiMetaBilledUnits,
    AssistantMessageResponse,
    ChatContentDeltaEventDelta,
    ChatContentDeltaEventDeltaMessage,
    ChatContentDeltaEventDeltaMessageContent,
    ChatContentStartEventDelta,
    ChatContentStartEventDeltaMessage,
    ChatContentStartEventDeltaMessageContent,
    ChatMessageEndEventDelta,
    ChatMessageStartEventDelta,
    ChatMessageStartEventDeltaMessage,
    ChatToolCallDeltaEventDelta,
    ChatToolCallDeltaEventDeltaMessage,
    ChatToolCallDeltaEventDeltaMessageToolCalls,
    ChatToolCallDeltaEventDeltaMessageToolCallsFunction,
    ChatToolCallStartEventDelta,
    ChatToolCallStartEventDeltaMessage,
    EmbedByTypeResponse,
    EmbedByTypeResponseEmbeddings,
    ToolCallV2,
    ToolCallV2Function,
    Usage,
    UsageBilledUnits,
    UsageTokens,
)
from cohere.types.assistant_message_response_content_item import TextAssistantMessageResponseContentItem
from cohere.v2.types.v2chat_response import V2ChatResponse
from cohere.v2.types.v2chat_stream_response import (
    ContentDeltaV2ChatStreamResponse,
    ContentEndV2ChatStreamResponse,
    ContentStartV2ChatStreamResponse,
    MessageEndV2ChatStreamResponse,
    MessageStartV2ChatStreamResponse,
    ToolCallDeltaV2ChatStreamResponse,
    ToolCallEndV2ChatStreamResponse,
    ToolCallStartV2ChatStreamResponse,
)
from werkzeug.wrappers import Request, Response

from tests.upstreams.server import Handler, json_response


def dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def cohere_usage() -> Usage:
    return Usage(
        billed_units=UsageBilledUnits(input_tokens=8, output_tokens=4),
        tokens=UsageTokens(input_tokens=70, output_tokens=4),
    )


def cohere_response(
    text: str = "Hello there", tool: tuple[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A V2ChatResponse body."""
    calls = None
    if tool:
        function = ToolCallV2Function(name=tool[0], arguments=json.dumps(tool[1]))
        calls = [ToolCallV2(id="call_c1", type="function", function=function)]
    message = AssistantMessageResponse(
        role="assistant",
        content=[TextAssistantMessageResponseContentItem(type="text", text=text)] if text else None,
        tool_calls=calls,
    )
    return dump(
        V2ChatResponse(
            id="c-1", finish_reason="TOOL_CALL" if tool else "COMPLETE", message=message, usage=cohere_usage()
        )
    )


def cohere_events(text: str = "Hello there", tool: tuple[str, dict[str, Any]] | None = None) -> list[dict]:
    """The event bodies of one streamed answer."""
    half = len(text) // 2

    def content_delta(piece: str) -> Any:
        content = ChatContentDeltaEventDeltaMessageContent(text=piece)
        return ContentDeltaV2ChatStreamResponse(
            index=0,
            delta=ChatContentDeltaEventDelta(message=ChatContentDeltaEventDeltaMessage(content=content)),
        )

    start_content = ChatContentStartEventDeltaMessageContent(type="text", text="")
    events: list[Any] = [
        MessageStartV2ChatStreamResponse(
            id="c-1",
            delta=ChatMessageStartEventDelta(message=ChatMessageStartEventDeltaMessage(role="assistant")),
        ),
        ContentStartV2ChatStreamResponse(
            index=0,
            delta=ChatContentStartEventDelta(
                message=ChatContentStartEventDeltaMessage(content=start_content)
            ),
        ),
        content_delta(text[:half]),
        content_delta(text[half:]),
        ContentEndV2ChatStreamResponse(index=0),
    ]
    if tool:
        arguments = json.dumps(tool[1])
        call = ToolCallV2(
            id="call_c1", type="function", function=ToolCallV2Function(name=tool[0], arguments="")
        )
        events += [
            ToolCallStartV2ChatStreamResponse(
                index=0,
                delta=ChatToolCallStartEventDelta(
                    message=ChatToolCallStartEventDeltaMessage(tool_calls=call)
                ),
            ),
            ToolCallDeltaV2ChatStreamResponse(
                index=0,
                delta=ChatToolCallDeltaEventDelta(
                    message=ChatToolCallDeltaEventDeltaMessage(
                        tool_calls=ChatToolCallDeltaEventDeltaMessageToolCalls(
                            function=ChatToolCallDeltaEventDeltaMessageToolCallsFunction(arguments=arguments)
                        )
                    )
                ),
            ),
            ToolCallEndV2ChatStreamResponse(index=0),
        ]
    events.append(
        MessageEndV2ChatStreamResponse(
            id="c-1",
            delta=ChatMessageEndEventDelta(
                finish_reason="TOOL_CALL" if tool else "COMPLETE", usage=cohere_usage()
            ),
        )
    )
    return [dump(event) for event in events]


def sse(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def cohere_upstream(
    *,
    text: str = "Hello there",
    tool: tuple[str, dict[str, Any]] | None = None,
    error_status: int | None = None,
    error_body: dict[str, Any] | None = None,
    cut_stream: bool = False,
) -> Handler:
    """A handler for /v2/chat (stream or not) and /v2/embed."""

    def handler(request: Request) -> Response:
        if error_status is not None:
            return json_response(error_body or {"message": "boom"}, status=error_status)
        body = request.get_json()
        if request.path == "/v2/embed":
            vectors = [[0.25, float(i)] for i in range(len(body["texts"]))]
            embed = EmbedByTypeResponse(
                id="e-1",
                embeddings=EmbedByTypeResponseEmbeddings(float_=vectors),
                texts=body["texts"],
                meta=ApiMeta(billed_units=ApiMetaBilledUnits(input_tokens=6)),
            )
            return json_response(dump(embed))
        if not body.get("stream"):
            return json_response(cohere_response(text, tool))
        events = cohere_events(text, tool)
        if cut_stream:
            events = events[:3]

        def stream() -> Iterator[bytes]:
            for event in events:
                yield sse(event)

        return Response(stream(), content_type="text/event-stream")

    return handler
