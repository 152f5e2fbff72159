"""Server-sent events: parse a body's lines into events, and encode events for our own streams.

Parsing follows the WHATWG spec (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_NEWLINES = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event; `event` is "message" when the stream named none, as in the spec."""

    event: str
    data: str
    id: str | None = None  # the last event ID seen so far; the spec keeps it across events


def iter_sse_events(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Yield the events in `lines` (one line each, with or without its line ending)."""
    data: list[str] = []
    event = ""
    last_id: str | None = None
    first = True
    for raw in lines:
        line = raw.rstrip("\r\n")
        if first:
            line = line.removeprefix("\ufeff")  # a UTF-8 BOM may open the stream
            first = False
        if not line:
            # A blank line dispatches; an event without data lines is dropped, per spec.
            if data:
                yield SseEvent(event=event or "message", data="\n".join(data), id=last_id)
            data = []
            event = ""
            continue
        if line.startswith(":"):
            continue  # comment, often a keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        # "retry" and unknown fields are ignored: we never reconnect.
    # Data left without a closing blank line is discarded: the spec treats it as an incomplete event.


def encode_sse(data: str, event: str | None = None) -> bytes:
    """Encode one event; every line of `data` becomes its own data: line."""
    parts = []
    if event is not None:
        parts.append(f"event: {event}\n")
    parts.extend(f"data: {line}\n" for line in _NEWLINES.split(data))
    parts.append("\n")
    return "".join(parts).encode("utf-8")
