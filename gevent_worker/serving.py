"""The serving worker: gunicorn's gevent worker serving HTTP with gevent's own server (pywsgi).

Chosen by measurement (bench/README.md): a proxied call costs less CPU than under gunicorn's default
gevent worker, whose HTTP/1 path does more in Python per request (HTTP/2 negotiation checks, its parser).
gunicorn still runs the process: workers, signals, graceful shutdown, the hooks of gunicorn.conf.py.

What gunicorn's worker does and pywsgi does not, added here (and a 1 KB read buffer per connection,
request headers read by app/utils/header_block.py, a response's head and first part in one write):
- a kept-alive connection that sends no request for `keepalive` seconds is closed (pywsgi would wait for
  ever: idle connections would hold connection slots and hold up a graceful shutdown), and so is one
  whose headers take longer than that;
- `keepalive = 0`, and every response of a worker that is shutting down, says `Connection: close`, so a
  proxy that pools connections (nginx) sends its next request to another instance instead of racing the
  close.
And IP addresses are resolved without gevent's thread pool (gevent_worker/resolver.py).

Loaded in the worker process only (gevent_worker/__init__.py).
"""

from __future__ import annotations

import http.client
from typing import Any

import gevent
from gevent.pywsgi import OldMessage
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from gevent_worker.resolver import use_numeric_first_resolver

# The read buffer of a client connection, held for the connection's life (idle, or waiting on a provider):
# pywsgi's 8 KB is 2 MB per 256 connections. The request line and headers pass through it; the body is
# read past it.
REQUEST_BUFFER = 1024
# pywsgi writes a response's head and then its first part (the body, a stream's first chunk) separately; a
# first part up to this size goes out with the head: one system call and one segment for the client.
ONE_WRITE_BODY = 64 * 1024


class _HeadersTooSlow(ValueError):
    """pywsgi answers a ValueError from read_request with 400 and closes the connection."""


class KeepAliveHandler(PyWSGIHandler):
    keepalive: float = 5.0  # both set per worker, from gunicorn's settings
    worker: Any = None

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        if rfile is None:
            rfile = sock.makefile("rb", REQUEST_BUFFER)  # gevent is pinned: its handler still takes rfile
        super().__init__(sock, address, server, rfile)

    def MessageClass(self, fp: Any, *_: Any) -> OldMessage:  # pywsgi's name
        """The request's headers, as pywsgi's own factory reads them, without the email package's parser."""
        # Imported here: the app package must load after gevent has patched the standard library.
        from app.utils.header_block import parse_headers

        try:
            return parse_headers(fp, OldMessage)
        except http.client.LineTooLong:
            message = OldMessage()
            message.status = "Line too long"  # pywsgi answers 400
            return message

    def read_requestline(self) -> str:
        with gevent.Timeout(self.keepalive or None, False):
            return super().read_requestline()
        return ""  # idle past keepalive: an empty request line makes pywsgi close the connection

    def read_request(self, raw_requestline: str) -> bool:
        with gevent.Timeout(self.keepalive or None, _HeadersTooSlow("the request headers came too slowly")):
            return super().read_request(raw_requestline)

    _hold_head = False
    _held_head: bytes | None = None

    def _write_with_headers(self, data: bytes) -> None:
        self._hold_head = bool(data) and len(data) <= ONE_WRITE_BODY
        try:
            super()._write_with_headers(data)  # sends the head, then the data
        finally:
            self._hold_head, self._held_head = False, None

    def _sendall(self, data: bytes) -> None:
        if self._hold_head:
            if self._held_head is None:
                self._held_head = data  # the head; the first part is the next write
                return
            data = self._held_head + data
            self._hold_head, self._held_head = False, None
        # gevent's sendall() asks the socket for its buffer size (a system call) and sets up a deadline on
        # every write, ~1.5 µs; a response part (a stream's chunk) is small and one send() takes it whole.
        try:
            sent = self.socket.send(data)
        except OSError:
            sent = 0  # sendall() meets the same error and reports it as pywsgi does
        self.response_length += sent
        if sent < len(data):
            super()._sendall(memoryview(data)[sent:])

    def log_request(self) -> None:
        # gunicorn's handler builds an access record for every response (timestamps, a response object,
        # the request's headers) and its logger drops it unless an access log is configured: 2.6 % of a
        # proxied call's CPU. The logger says whether it would write one (gunicorn 27's
        # access_log_enabled, there for handlers to ask first).
        if getattr(self.server.log, "access_log_enabled", True):
            super().log_request()

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        closing = self.keepalive <= 0 or (self.worker is not None and not self.worker.alive)
        if closing and not any(name.lower() == "connection" for name, _ in headers):
            headers = [*headers, ("Connection", "close")]  # pywsgi then closes after the response
        return super().start_response(status, headers, exc_info)


class ServingWorker(GeventPyWSGIWorker):
    def patch(self) -> None:
        super().patch()  # gevent's monkey-patching, before the app is loaded
        use_numeric_first_resolver(gevent.get_hub())

    def init_process(self) -> None:
        settings = {"keepalive": self.cfg.keepalive, "worker": self}
        self.wsgi_handler = type("KeepAliveHandler", (KeepAliveHandler,), settings)
        super().init_process()
