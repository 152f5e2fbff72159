"""Request rate limits: RATE_LIMIT_PER_MINUTE per caller (the user, else the client address) on every
route but the probes; on login and register AUTH_RATE_LIMIT per address instead, plus a limit per target
account (app/routes/auth.py says which). OPTIONS requests (CORS preflights) are never counted.

Counting and storage are the `limits` library's (memory, or Redis through RATE_LIMIT_STORAGE_URL so
every instance shares the counters); this module is only the Flask glue. Flask-Limiter did the same
job, but its per-request work (resolving limits and exemptions through context proxies, and a second
storage call for the headers) was about a fifth of a proxied call's CPU under cProfile; here a request
costs one counter increment per limit that applies. Windows are fixed: a burst across a window boundary
can reach twice the figure.

If the storage fails (Redis down) the request is let through and a warning logged: losing the limit for
a while is better than refusing every call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string

from app.errors import RateLimited
from app.utils.rate_limit_storage import storage_uri

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
KeyFunc = Callable[[], str | None]  # None: the limit does not apply to this request
LimitFunc = Callable[[], str]

# Views are marked by qualified name when their module is imported (before any app exists); flask-openapi3
# wraps views with functools.wraps, so the registered view function keeps that name.
_EXEMPT: set[str] = set()
_ROUTE_LIMITS: dict[str, list[tuple[LimitFunc, KeyFunc]]] = {}
STORAGE_WARNING_INTERVAL = 60.0


def _view_name(view: Callable[..., Any]) -> str:
    return f"{view.__module__}.{view.__name__}"


def exempt(view: F) -> F:
    """Never counted: probes that load balancers and scrapers poll."""
    _EXEMPT.add(_view_name(view))
    return view


def limit(limit_of: LimitFunc, *, key_func: KeyFunc) -> Callable[[F], F]:
    """A limit of the route's own, in place of the default: read from config per request, counted
    per key_func's key. Stack several for several counts."""

    def mark(view: F) -> F:
        _ROUTE_LIMITS.setdefault(_view_name(view), []).append((limit_of, key_func))
        return view

    return mark


def client_address() -> str:
    return f"ip:{request.remote_addr}"


def caller_key() -> str:
    """Per user when the request is authenticated, else per client address."""
    identity = g.get("identity")
    return f"user:{identity.user_id}" if identity is not None else client_address()


@dataclass(frozen=True)
class _Counted:
    item: RateLimitItem
    count: int


class RateLimits:
    """One per app: the storage, the parsed limits and which endpoint has which."""

    def __init__(self, storage_url: str, default: str, key_prefix: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.storage = storage_from_string(storage_uri(storage_url))
        self.default = parse(default)
        self.key_prefix = key_prefix
        self._parsed: dict[str, RateLimitItem] = {}
        self._endpoints: dict[str, tuple[bool, list[tuple[LimitFunc, KeyFunc]]]] = {}
        self._warned_at = -STORAGE_WARNING_INTERVAL

    def init_app(self, app: Flask) -> None:
        app.extensions["rate_limits"] = self
        app.before_request(self.check)
        app.after_request(self.add_headers)

    def check(self) -> None:
        """before_request: count the request against every limit that applies; 429 past one."""
        endpoint = request.endpoint
        # OPTIONS is answered by Flask and Flask-CORS without running a view: a browser's CORS preflight
        # would otherwise spend the budget of the request it announces (twice on login, with two limits).
        if not self.enabled or endpoint is None or request.method == "OPTIONS":
            return
        is_exempt, route_limits = self._rules(endpoint)
        if is_exempt:
            return
        if not route_limits:
            self._hit(self.default, "default", caller_key(), report=True)
        # A route's own limits replace the default one (login and register are counted per address and
        # per username, not per caller); the first is the one the headers report.
        for index, (limit_of, key_of) in enumerate(route_limits):
            key = key_of()
            if key is not None:
                self._hit(self._item(limit_of()), f"{endpoint}/{index}", key, report=index == 0)

    def remember(self, marker: str, seconds: int) -> None:
        """Keep a marker for a while beside the counters (where a login succeeded, say)."""
        if not self.enabled:
            return
        try:
            self.storage.incr(f"{self.key_prefix}/marker/{marker}", seconds)
        except Exception:
            self._warn_storage_failed()

    def remembers(self, marker: str) -> bool:
        if not self.enabled:
            return False
        try:
            return self.storage.get(f"{self.key_prefix}/marker/{marker}") > 0
        except Exception:
            self._warn_storage_failed()
            return False

    def add_headers(self, response: Response) -> Response:
        counted: _Counted | None = g.get("rate_limit")
        if counted is not None:
            response.headers["X-RateLimit-Limit"] = str(counted.item.amount)
            response.headers["X-RateLimit-Remaining"] = str(max(0, counted.item.amount - counted.count))
        return response

    def _hit(self, item: RateLimitItem, scope: str, key: str, report: bool = False) -> None:
        """Count one request; `report` puts this limit in the response's X-RateLimit-* headers."""
        counter = item.key_for(self.key_prefix, scope, key)
        try:
            count = self.storage.incr(counter, item.get_expiry())
        except Exception:
            self._warn_storage_failed()
            return
        if report:
            g.rate_limit = _Counted(item, count)
        if count > item.amount:
            try:
                wait = self.storage.get_expiry(counter) - time.time()
            except Exception:
                wait = item.get_expiry()
            raise RateLimited(f"Rate limit exceeded: {item}.", retry_after=max(1.0, wait))

    def _item(self, text: str) -> RateLimitItem:
        item = self._parsed.get(text)
        if item is None:
            item = self._parsed[text] = parse(text)
        return item

    def _rules(self, endpoint: str) -> tuple[bool, list[tuple[LimitFunc, KeyFunc]]]:
        rules = self._endpoints.get(endpoint)
        if rules is None:
            view = current_app.view_functions.get(endpoint)
            name = _view_name(view) if view is not None else ""
            rules = self._endpoints[endpoint] = (name in _EXEMPT, _ROUTE_LIMITS.get(name, []))
        return rules

    def _warn_storage_failed(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= STORAGE_WARNING_INTERVAL:
            self._warned_at = now
            logger.warning("rate-limit storage unavailable; requests pass unlimited", exc_info=True)
