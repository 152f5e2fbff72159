"""Reading an upstream's streamed response under a deadline and a decoded-size cap, and rendering it as JSON.

Every socket read gets only the time left before the deadline (io_deadline in app/utils/http_client.py:
httpcore itself gives each read of the body the same relative timeout), and the deadline is checked
between chunks, so an upstream that trickles bytes forever is cut when the time is up.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson

from app.errors import UpstreamError, UpstreamResponseTooLarge, UpstreamTimeout
from app.utils.capped_body import BodyDecodeError, BodyTooLarge, CappedDecoder
from app.utils.http_client import io_deadline

_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 0.5
_NOT_RETURNABLE = object()
_TEXT_TYPES = ("application/xml", "application/javascript", "application/x-www-form-urlencoded")


def raw_chunks(response: httpx.Response, deadline: float) -> Iterator[bytes]:
    """The raw body, each socket read limited to the time left before `deadline` (time.monotonic)."""
    chunks = response.iter_raw()
    while True:
        if deadline - time.monotonic() <= 0:
            raise UpstreamTimeout()
        try:
            with io_deadline(deadline):  # set and reset around each read, never held across a yield
                chunk = next(chunks)
        except StopIteration:
            return
        yield chunk


def discard_response(response: httpx.Response, deadline: float) -> None:
    """Drop a response we will not use: drain at most 64 KiB / 0.5 s so the connection may be reused."""
    drained = 0
    try:
        for chunk in raw_chunks(response, min(deadline, time.monotonic() + _DRAIN_SECONDS)):
            drained += len(chunk)
            if drained > _DRAIN_BYTES:
                break
    except (httpx.HTTPError, UpstreamTimeout):
        pass
    finally:
        response.close()


def read_capped_body(
    response: httpx.Response, limit: int, deadline: float, counted: Callable[[int], None]
) -> tuple[bytes, bool]:
    """The decoded body and whether it was decoded; refused past `limit` decoded bytes or the deadline.

    `counted` hears the running decoded size (for the audit row, also when the body is refused).
    """
    decoder = CappedDecoder(response.headers.get("content-encoding", ""), limit)
    declared = response.headers.get("content-length", "")
    plain = not response.headers.get("content-encoding")
    if plain and declared.isdigit() and int(declared) > limit:
        raise UpstreamResponseTooLarge()  # refused before reading a byte
    parts: list[bytes] = []
    try:
        for chunk in raw_chunks(response, deadline):
            parts.append(decoder.feed(chunk))
            counted(decoder.total)
        parts.append(decoder.finish())
    except BodyTooLarge:
        counted(decoder.total)
        raise UpstreamResponseTooLarge() from None
    except BodyDecodeError:
        raise UpstreamError("The upstream response could not be decoded.") from None
    except httpx.TimeoutException:
        raise UpstreamTimeout() from None
    except httpx.TransportError:
        raise UpstreamError("The upstream broke off the response.") from None
    counted(decoder.total)
    return b"".join(parts), decoder.decodes


def render_body(raw: bytes, content_type: str, decoded: bool) -> tuple[Any, str | None]:
    """(body, body_encoding): parsed JSON for JSON, text for text, base64 for the rest or undecodable text."""
    if not decoded:
        return base64.b64encode(raw).decode("ascii"), "base64"
    media = content_type.split(";", 1)[0].strip().lower()
    match = re.search(r"charset=\"?([\w.:-]+)", content_type, re.IGNORECASE)
    charset = match.group(1) if match else "utf-8"
    if not raw:
        return "", None
    is_json = media == "application/json" or media.endswith("+json")
    if is_json:
        parsed = _json_we_can_return(raw, charset)
        if parsed is not _NOT_RETURNABLE:
            return parsed, None
        # mislabelled, or JSON our orjson responses cannot write back: fall through to text
    if is_json or not media or media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+xml"):
        try:
            return raw.decode(charset), None
        except (UnicodeDecodeError, LookupError):
            pass
    return base64.b64encode(raw).decode("ascii"), "base64"


def _json_we_can_return(raw: bytes, charset: str) -> Any:
    """The parsed body, or _NOT_RETURNABLE when it is not JSON that orjson (app/json_provider.py) can write.

    json.loads keeps integers exact, but orjson refuses those beyond 64 bits and nesting deeper than 254,
    and json.loads itself overflows the stack on very deep nesting: returned as parsed, such bodies would
    fail only when Flask serialises the response, after the call was audited as a success.
    """
    try:
        parsed = json.loads(raw.decode(charset))
        orjson.dumps(parsed, option=orjson.OPT_NON_STR_KEYS)
    except (ValueError, LookupError, RecursionError, TypeError):  # orjson.JSONEncodeError is a TypeError
        return _NOT_RETURNABLE
    return parsed
