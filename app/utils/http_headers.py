"""Header hygiene for the external API proxy: what we forward upstream and what we hand back.

Outbound we drop the headers that control the connection or the framing (we own those, and letting a
caller set them invites request smuggling) and set our own User-Agent and Accept-Encoding (we decode the
body ourselves, under the size cap). A caller's "Authorization" inside the body's headers dict is meant
for the upstream and is forwarded; the route never passes the caller's own credentials for this service.

When a redirect leads to another origin, only headers that describe the request rather than authorise it
go on (cross_origin_headers): a caller's credential may be named anything (X-API-Key, Api-Token, a
custom auth scheme), so no list of names to drop can be complete, and the new origin is whatever the
first one chose to name, over http even.

Inbound we drop hop-by-hop headers, the framing headers that no longer describe the body we return
(Content-Length, Content-Encoding once decoded) and Set-Cookie: the service is no cookie jar, several
Set-Cookie lines do not survive being joined into one string, and session secrets stay out of logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# RFC 9110 §7.6.1 hop-by-hop, plus framing and routing headers a caller must not control.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    }
)
_OUTBOUND_DROPPED = HOP_BY_HOP | {"host", "content-length", "expect", "accept-encoding", "user-agent"}
_INBOUND_DROPPED = HOP_BY_HOP | {"content-length", "set-cookie", "set-cookie2"}

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name


def header_problem(name: str, value: str) -> str | None:
    """Why a header cannot be sent (bad name, CR/LF/NUL, not latin-1), or None when it can."""
    if not _TOKEN.match(name):
        return f"header name {name!r} is not a valid HTTP token"
    if any(c in value for c in "\r\n\x00"):
        return f"header {name!r} contains CR, LF or NUL"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return f"header {name!r} is not latin-1"
    return None


def _connection_listed(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names a Connection header declares hop-by-hop."""
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named |= {token.strip().lower() for token in value.split(",") if token.strip()}
    return named


def outbound_headers(caller: Mapping[str, str], *, user_agent: str) -> dict[str, str]:
    """The caller's headers minus connection control, plus ours; assumes header_problem() passed."""
    items = list(caller.items())
    dropped = _OUTBOUND_DROPPED | _connection_listed(items)
    headers = {
        name: value
        for name, value in items
        if name.lower() not in dropped and not name.lower().startswith("proxy-")
    }
    headers["User-Agent"] = user_agent
    headers["Accept-Encoding"] = "gzip, deflate"  # only what app/utils/capped_body.py decodes
    return headers


# Kept across origins: content negotiation, the body's type (a 307/308 keeps the body), our User-Agent,
# and the Idempotency-Key that makes a resent POST safe. Accept-Encoding is ours (what we decode).
_CROSS_ORIGIN_KEPT = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-language",
        "content-type",
        "idempotency-key",
        "user-agent",
    }
)


def cross_origin_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The outbound headers that may follow a redirect to another origin: none that could be a credential."""
    return {name: value for name, value in headers.items() if name.lower() in _CROSS_ORIGIN_KEPT}


def inbound_headers(headers: Iterable[tuple[str, str]], *, decoded: bool) -> dict[str, str]:
    """Upstream response headers to hand back: lower-case names, repeated ones joined with ", "."""
    items = list(headers)
    dropped = _INBOUND_DROPPED | _connection_listed(items)
    if decoded:
        dropped = dropped | {"content-encoding"}
    result: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if key in dropped or key.startswith("proxy-"):
            continue
        result[key] = f"{result[key]}, {value}" if key in result else value
    return result
