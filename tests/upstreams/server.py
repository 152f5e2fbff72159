"""Real HTTP servers on loopback that stand in for providers and external APIs.

A test gives an `Upstream` a handler (werkzeug Request -> werkzeug Response); the server runs it in a
thread per connection and records every request it received, so tests assert on the exact wire bytes.
A generator body is streamed as it is produced, which lets stand-ins stall, trickle or cut streams.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

Handler = Callable[[Request], Response]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: object, **kwargs: object) -> None:  # keep test output readable
        pass


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=headers, content_type="application/json")


class Upstream:
    """A loopback HTTP(S) server; use as a context manager or call start()/stop()."""

    def __init__(self, handler: Handler | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler: Handler = handler or (lambda request: json_response({"ok": True}))
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ssl_context = ssl_context
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        body = request.get_data(cache=True)
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=environ.get("QUERY_STRING", ""),
            headers={k: v for k, v in request.headers.items()},
            body=body,
            form=dict(request.form) if request.mimetype == "application/x-www-form-urlencoded" else {},
        )
        with self._lock:
            self.requests.append(recorded)
        return self.handler(request)(environ, start_response)

    def start(self) -> Upstream:
        self._server = make_server(
            "127.0.0.1",
            0,
            self._wsgi,
            threaded=True,
            ssl_context=self._ssl_context,
            request_handler=_QuietHandler,
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]


class LiveServer(Upstream):
    """Serve a whole WSGI app (the gateway itself) on loopback, for real HTTP clients such as the openai SDK."""

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        super().__init__()
        self._app = wsgi_app

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self._app(environ, start_response)
