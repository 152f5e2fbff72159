"""Streams across targets: restart before the first chunk, continue after it.

Before any chunk has reached the client a failed stream simply restarts on the plan's next attempt.
After chunks have gone out, the answer continues on the next target from where it stopped:
- a target that accepts a prefill gets the text already sent as a trailing assistant message and
  streams only the continuation;
- any other target restarts the request, and its answer is held back until it has reproduced the
  text already sent (then only the rest is streamed) or diverged from it (then that attempt is dropped).
When no target can continue, the stream raises the original failure, never a later target's rejection.
Continuation works on single-choice text answers; a stream that already sent tool calls cannot be
stitched together and ends with its original failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from app.errors import ProviderError
from app.services.gateway.router import Attempt, RouteInfo, RoutePlan
from app.services.gateway.streaming import HEARTBEAT, close_source

# Opens one attempt's stream: (attempt, chat) -> chunks and HEARTBEAT markers.
OpenStream = Callable[[Attempt, dict[str, Any]], Iterator[Any]]


class RoutedStream:
    """The chunks of one routed stream; `route` names the serving target once the first chunk is out."""

    def __init__(self, plan: RoutePlan, chat: dict[str, Any], open_stream: OpenStream) -> None:
        self.route: RouteInfo = plan.info
        self._events = _routed(plan, chat, open_stream)

    def __iter__(self) -> RoutedStream:
        return self

    def __next__(self) -> Any:
        return next(self._events)

    def close(self) -> None:
        self._events.close()


class _Sent:
    """What the client has received so far."""

    def __init__(self) -> None:
        self.any = False
        self.id: str | None = None
        self.text: list[str] = []
        self.finished = False
        self.stitchable = True  # only one choice of plain text can be continued

    def add(self, chunk: dict[str, Any]) -> None:
        self.any = True
        if self.id is None and chunk.get("id"):
            self.id = chunk["id"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if choice.get("index", 0) != 0 or delta.get("tool_calls") or delta.get("refusal"):
                self.stitchable = False
            if delta.get("content"):
                self.text.append(delta["content"])
            if choice.get("finish_reason"):
                self.finished = True

    def joined(self) -> str:
        return "".join(self.text)

    def stitched(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """A continuation's chunk in the shape of the stream it continues: its id, no second role."""
        chunk = dict(chunk)
        if self.id:
            chunk["id"] = self.id
        choices = []
        for choice in chunk.get("choices") or []:
            delta = {key: value for key, value in (choice.get("delta") or {}).items() if key != "role"}
            choices.append({**choice, "delta": delta})
        chunk["choices"] = choices
        return chunk


def _routed(plan: RoutePlan, chat: dict[str, Any], open_stream: OpenStream) -> Iterator[Any]:
    sent = _Sent()
    for attempt in plan:
        try:
            if plan.continuing:
                yield from _continue(attempt, chat, sent, open_stream)
            else:
                yield from _fresh(attempt, chat, sent, open_stream)
        except ProviderError as error:
            if sent.finished and error.kind in ("stream_interrupted", "timeout"):
                # The finish reason went out: the answer is whole, only the terminator was lost.
                attempt.succeeded()
                return
            attempt.failed(error)
            if sent.any:
                if not plan.continuing:
                    plan.continue_stream(error)
                if not sent.stitchable or sent.finished:
                    raise plan.failing_with(plan.original_error or error) from None
            continue
        except BaseException:
            attempt.abandoned()
            raise
        attempt.succeeded()
        return


def _fresh(attempt: Attempt, chat: dict[str, Any], sent: _Sent, open_stream: OpenStream) -> Iterator[Any]:
    source = open_stream(attempt, chat)
    try:
        for item in source:
            if item is not HEARTBEAT:
                if not sent.any:
                    attempt.serving()
                sent.add(item)
            yield item
    finally:
        close_source(source)


def _continue(attempt: Attempt, chat: dict[str, Any], sent: _Sent, open_stream: OpenStream) -> Iterator[Any]:
    already = sent.joined()
    trimmed = ""  # whitespace left out of the prefill, which the continuation may repeat
    if attempt.target.accepts_prefill and already:
        # Anthropic refuses a prefill that ends in whitespace; the model writes the space itself.
        prefill = already.rstrip()
        trimmed = already[len(prefill) :]
        messages = [*chat["messages"], {"role": "assistant", "content": prefill}]
        source = open_stream(attempt, {**chat, "messages": messages})
        matched = True
    else:
        source = open_stream(attempt, chat)
        matched = not already
    held = ""
    try:
        for item in source:
            if item is HEARTBEAT:
                yield item
                continue
            if trimmed:
                text = _text_of(item)
                if text:
                    # Drop the continuation's leading whitespace, as far as the client already has it.
                    drop = min(len(trimmed), len(text) - len(text.lstrip()))
                    item, trimmed = _with_text(item, text[drop:]), ""
            if not matched:
                held += _text_of(item)
                if len(held) < len(already):
                    if not already.startswith(held):
                        raise _diverged(attempt)
                    continue
                if not held.startswith(already):
                    raise _diverged(attempt)
                matched = True
                item = _with_text(item, held[len(already) :])
                if not held[len(already) :] and not _finishes(item):
                    continue
            attempt.serving()
            chunk = sent.stitched(item)
            sent.add(chunk)
            yield chunk
        if not matched:
            raise _diverged(attempt)
    finally:
        close_source(source)


def _text_of(chunk: dict[str, Any]) -> str:
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        if choice.get("index", 0) != 0 or delta.get("tool_calls"):
            raise ProviderError("the restarted answer is not plain text", kind="invalid_request")
        text += delta.get("content") or ""
    return text


def _with_text(chunk: dict[str, Any], text: str) -> dict[str, Any]:
    choices = [
        {**choice, "delta": {**(choice.get("delta") or {}), "content": text}}
        for choice in chunk.get("choices") or []
    ]
    return {**chunk, "choices": choices}


def _finishes(chunk: dict[str, Any]) -> bool:
    return any(choice.get("finish_reason") for choice in chunk.get("choices") or [])


def _diverged(attempt: Attempt) -> ProviderError:
    return ProviderError(
        f"{attempt.target.key} did not reproduce the text already sent",
        kind="invalid_request",
        provider=attempt.target.provider,
    )
