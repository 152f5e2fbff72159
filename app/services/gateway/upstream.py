"""Send an adapter's HttpRequest to a provider with the shared pooled client; map failures to ProviderError.

The client is urllib3, chosen by measurement: on one core under gevent, 256 concurrent calls to an upstream
answering in 500 ms ran at about 465 requests/s through a urllib3 pool and at about 70/s through httpx's
(100/s with 256 threads), whose pool bookkeeping grows with the number of requests waiting on it.

Measured savings on each call (bench/README.md): requests go to the origin's connection pool directly,
found by URL in a dict, instead of through PoolManager's URL parsing and pool-key building; the check that a
pooled connection is still open polls with the operating system's poll(), not gevent's, which builds
watchers and yields to the hub for a check that never waits (together ~0.25 ms of a 0.7 ms call); and the
exchange itself is urllib3's connection sending the request and http.client's response read through a
small ProviderResponse, without urlopen's retry and redirect bookkeeping or urllib3's response object
(~0.15 ms of a call's ~1.2 ms of worker CPU). urllib3 still opens, verifies and pools the connections.

Provider base URLs are operator configuration and trusted, so this client has no egress guard; every URL
that comes from a request goes through app/utils/egress_guard.py instead.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import select
import socket
import sys
import types
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from app.errors import ProviderError
from app.providers.base import HttpRequest, ProviderAdapter
from app.services.gateway.provider_connect import address_family, connect_to_address, ready_now
from app.utils import header_block
from app.utils.off_loop import gevent_active, start_daemon

MAX_ERROR_BODY = 64 * 1024  # an error page is read only this far before it is classified
READ_SIZE = 64 * 1024
# The response's read buffer, held from the moment a request is sent until its answer is read, so by
# every call waiting on a slow provider (256 of them held 2 MB at http.client's 8 KB). The status line,
# headers and stream events pass through it; larger body reads bypass it. Smaller still costs reads: a
# 50-event stream arriving all at once took 1.5 % more instructions at 2 KB, 3.1 % more at 1 KB.
RESPONSE_BUFFER = 2048
ONE_WRITE_BODY = 64 * 1024  # a request body up to this size is sent in the same write as the head


MAX_ROUTES = 4096  # URL -> pool entries; providers use a handful of URLs per model


def _open_now(sock: object) -> bool:
    """A pooled connection is reusable if nothing is readable on it: no data, no close from the peer."""
    return not ready_now(sock, select.POLLIN)


class _BufferedSocket:
    """What http.client's response is given in place of the socket: it only calls makefile("rb")."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def makefile(self, mode: str) -> object:
        reader = io.BufferedReader(_SocketReader(self._sock, "rb"), RESPONSE_BUFFER)
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile() counts its files
        return reader


class _SocketReader(socket.SocketIO):
    """socket.makefile()'s raw file, whose readinto() first asks whether it is closed, readable, timed out
    before, or non-blocking: checks a file object needs in general and the response never does (it is
    read while open, from a blocking socket, and dropped after a timeout). 3-7 % of a proxied call's
    instructions. Closing it lets the socket go as socket.SocketIO does, so an answer that closes the
    connection is still read to its end."""

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._sock.recv_into(buffer)


class _Response(http.client.HTTPResponse):
    """http.client's response, reading through a RESPONSE_BUFFER-sized buffer, its headers parsed by
    app/utils/header_block.py (the email package's parser was ~5 % of a proxied call)."""

    # http.client's own begin(), unchanged, run where the name `parse_headers` means header_block's.
    begin = types.FunctionType(
        http.client.HTTPResponse.begin.__code__,
        {**vars(http.client), "parse_headers": header_block.parse_headers},
    )

    def __init__(self, sock: socket.socket, *args: object, **kwargs: object) -> None:
        super().__init__(_BufferedSocket(sock), *args, **kwargs)


class _ProviderConnection:
    """What the provider connections change in urllib3's: a new connection to an IP address under gevent,
    the reuse check, the response class, and a request sent in one write."""

    sock: object
    response_class = _Response
    _body_follows = False
    _held_head: bytes | None = None

    def _new_conn(self) -> socket.socket:
        """urllib3's, except that under gevent a connection to an IP address does not wait for the event
        loop's turn once its handshake is done (provider_connect.py); names are resolved and connected by
        urllib3."""
        family = address_family(self._dns_host) if gevent_active() and not self.source_address else None
        if family is None:
            return super()._new_conn()  # type: ignore[misc]
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        try:
            sock = connect_to_address(family, self._dns_host, self.port, timeout, self.socket_options)
        except TimeoutError as error:  # urllib3's errors, as its own _new_conn() raises them
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from error
        except OSError as error:
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock

    @property
    def is_connected(self) -> bool:  # urllib3 asks before reusing a pooled connection
        return self.sock is not None and _open_now(self.sock)

    def request(
        self, method: str, url: str, body: object = None, headers: object = None, **options: object
    ) -> None:
        """urllib3's request(), which sends the head and then the body: a body of up to ONE_WRITE_BODY
        bytes goes out with the head, one system call (and one segment for the provider) instead of two."""
        self._body_follows = isinstance(body, bytes) and 0 < len(body) <= ONE_WRITE_BODY
        try:
            super().request(method, url, body, headers, **options)  # type: ignore[misc]
        finally:
            self._body_follows, self._held_head = False, None

    def send(self, data: bytes) -> None:
        if self._body_follows:
            if self._held_head is None:
                self._held_head = data  # the head, from endheaders(); the body is the next send
                return
            data = self._held_head + data
            self._body_follows, self._held_head = False, None
        super().send(data)  # type: ignore[misc]


class _Connection(_ProviderConnection, HTTPConnection):
    pass


class _TLSConnection(_ProviderConnection, HTTPSConnection):
    pass


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class ProviderClient:
    """One pooled client per worker process, reused by every request: connections stay warm."""

    def __init__(self, connect_timeout: float, max_connections: int = 1000) -> None:
        self.connect_timeout = connect_timeout
        self.pool = urllib3.PoolManager(
            num_pools=64,
            maxsize=max_connections,
            block=False,  # past maxsize, open an extra connection rather than queue behind the pool
            retries=False,  # retrying is the router's decision, never the client's
        )
        self.pool.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
        self._routes: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}

    def route(self, url: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The connection pool for the URL's origin and the path (with query) to ask it for."""
        found = self._routes.get(url)
        if found is None:
            parts = urlsplit(url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            found = (self.pool.connection_from_url(url), path)
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            self._routes[url] = found
        return found


def build_provider_client(connect_timeout: float, max_connections: int = 1000) -> ProviderClient:
    return ProviderClient(connect_timeout, max_connections)


class ProviderResponse:
    """A provider's answer on a pooled connection: http.client's response (status, headers, body) and the
    way back to the pool. What the gateway used of urllib3's response object, without building one per call.

    A connection goes back to the pool only when its body was read to the end (release_conn); otherwise it
    is closed, so the next request never reads this one's leftovers.
    """

    def __init__(self, pool: urllib3.HTTPConnectionPool, connection: HTTPConnection, raw: _Response) -> None:
        self.status = raw.status
        self.headers = raw.msg  # http.client's message: get() and items() ignore the case of names
        self._connection = connection
        self._pool: urllib3.HTTPConnectionPool | None = pool
        self._raw = raw
        self._body: _Response | urllib3.HTTPResponse = raw
        encoding = (raw.msg.get("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity"):  # a provider's configured headers asked for compression
            self._body = urllib3.HTTPResponse(
                body=raw, headers=dict(raw.msg.items()), status=raw.status, preload_content=False
            )

    @property
    def closed(self) -> bool:
        """Released or closed: the connection is no longer this response's."""
        return self._pool is None

    @property
    def connection(self) -> HTTPConnection | None:
        """The connection while this response holds it; None once it went back to the pool, where another
        request may be using it."""
        return None if self._pool is None else self._connection

    def read(self) -> bytes:
        return self._body.read()

    def read1(self, size: int) -> bytes:
        return self._body.read1(size)

    def release_conn(self) -> None:
        """Give the connection back to the pool, for the next request if the body was read to its end."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if not self._raw.isclosed():  # unread body left: the connection cannot carry another request
            self._raw.close()
            self._connection.close()
        pool._put_conn(self._connection)  # a closed connection is reopened by the pool when next taken

    def close(self) -> None:
        """Drop the connection: after a cut, a timeout or a departed client it cannot be reused safely.
        Once given back (a body read to its end) it is the pool's, and stays open."""
        if self._pool is None:
            return
        self._raw.close()
        self._connection.close()
        self.release_conn()

    def drain_conn(self) -> None:
        """Read what is left of the body and give the connection back; close it if the body breaks off."""
        try:
            while self._raw.read(READ_SIZE):
                pass
        except (OSError, http.client.HTTPException, ValueError):
            self.close()
            return
        self.release_conn()


def open_response(
    client: ProviderClient,
    adapter: ProviderAdapter,
    request: HttpRequest,
    *,
    read_timeout: float,
) -> ProviderResponse:
    """Send and return the open (streaming) response; an error status is read, classified and raised."""
    provider = adapter.settings.name
    body = orjson.dumps(request.json) if request.json is not None else None
    headers = dict(request.headers)
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    try:
        pool, path = client.route(request.url)
        response = exchange(pool, request.method, path, body, headers, client.connect_timeout, read_timeout)
    except NewConnectionError:  # refused or unresolvable; urllib3 files it under timeouts, it is not one
        raise ProviderError(f"{provider} could not be reached", kind="server", provider=provider) from None
    except (TimeoutError, Urllib3Timeout):
        raise ProviderError(f"{provider} did not answer in time", kind="timeout", provider=provider) from None
    except (OSError, http.client.HTTPException, Urllib3Error):
        raise ProviderError(f"{provider} could not be reached", kind="server", provider=provider) from None
    if response.status >= 400:
        try:
            error_body = _read_bounded(response)
        finally:
            close(response)
        error = adapter.parse_error(response.status, error_body, response.headers)
        raise _safe_to_show(error, adapter.settings.api_key)
    return response


def _safe_to_show(error: ProviderError, api_key: str | None) -> ProviderError:
    """The error without the gateway's own credentials in its text: callers and the log see that text."""
    message = error.message
    if error.kind in ("authentication", "permission"):
        # About the gateway's key, not the caller's request; providers quote the key, or part of it.
        message = f"{error.provider} refused the gateway's credentials (HTTP {error.upstream_status})"
    elif api_key and api_key in message:
        message = message.replace(api_key, "[redacted]")
    if message == error.message:
        return error
    return ProviderError(
        message,
        kind=error.kind,
        provider=error.provider,
        upstream_status=error.upstream_status,
        retry_after=error.retry_after,
        provider_code=error.provider_code,
    )


def exchange(
    pool: urllib3.HTTPConnectionPool,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    connect_timeout: float,
    read_timeout: float,
) -> ProviderResponse:
    """One request on a pooled connection (opened first if it is new or was dropped), and its response's
    head: what urlopen(retries=False, redirect=False, preload_content=False) does, minus the bookkeeping."""
    connection = pool._get_conn()  # urllib3 is pinned; a dropped connection comes back closed
    try:
        connection.timeout = connect_timeout
        if connection.sock is None:
            connection.connect()
        # The provider may have answered before closing (a 413, say): its answer is still read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request(method, path, body=body, headers=headers)
        connection.timeout = read_timeout
        connection.sock.settimeout(read_timeout)
        raw = http.client.HTTPConnection.getresponse(connection)  # our _Response, without urllib3's wrapper
    except BaseException:
        connection.close()
        pool._put_conn(connection)
        raise
    return ProviderResponse(pool, connection, raw)


def close(response: ProviderResponse) -> None:
    """Drop the connection: after a cut, a timeout or a departed client it cannot be reused safely."""
    response.close()


def interrupt(response: ProviderResponse) -> None:
    """End a read that another greenlet or thread is blocked in on this response, by shutting its socket
    down: the read returns at once, and the reader then closes the response itself."""
    sock = getattr(response.connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def recycle(response: ProviderResponse) -> None:
    """Keep the connection of a stream the provider ended, for the next call: a new one costs a connect
    (and a TLS handshake) on the next request's path.

    A body read to its end has already gone back to the pool (iter_lines gives it back). An adapter may
    stop at its end marker (OpenAI's [DONE]) before the body's last bytes: those are read in the
    background, so the client's stream is not held up, and the connection is closed if they never come.
    """
    if response.closed:
        return
    start_daemon(response.drain_conn, name="drain-upstream")


def _read_bounded(response: ProviderResponse) -> bytes:
    body = bytearray()
    try:
        while len(body) < MAX_ERROR_BODY:
            part = response.read1(READ_SIZE)
            if not part:
                break
            body.extend(part)
    except (OSError, http.client.HTTPException, ValueError, Urllib3Error):
        pass  # a broken error body is still an error; classify by status
    return bytes(body[:MAX_ERROR_BODY])


def read_json(response: ProviderResponse, provider: str) -> object:
    try:
        data = response.read()
        response.release_conn()
        return orjson.loads(data)
    except (TimeoutError, Urllib3Timeout):
        close(response)
        raise ProviderError(f"{provider} did not answer in time", kind="timeout", provider=provider) from None
    except (OSError, http.client.HTTPException, Urllib3Error):
        close(response)
        raise ProviderError(f"{provider} broke off its answer", kind="server", provider=provider) from None
    except orjson.JSONDecodeError:
        raise ProviderError(
            f"{provider} answered with invalid JSON", kind="server", provider=provider
        ) from None


def iter_lines(response: ProviderResponse, provider: str) -> Iterator[str]:
    """The body's lines as they arrive; a connection that breaks mid-stream becomes stream_interrupted.

    An identity body (http.client asks for nothing else unless a provider's configured headers do) is
    read from the standard library's response directly, which undoes the chunked encoding; a compressed
    one through urllib3's decoder. At the body's end the connection goes back to the pool.
    """
    pending = b""
    try:
        while True:
            part = response.read1(READ_SIZE)
            if not part:
                break
            pending += part
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", errors="replace")
    except (TimeoutError, Urllib3Timeout):
        raise ProviderError(
            f"the stream from {provider} stalled", kind="timeout", provider=provider
        ) from None
    except (OSError, http.client.HTTPException, ValueError, Urllib3Error):
        raise ProviderError(
            f"the stream from {provider} was cut", kind="stream_interrupted", provider=provider
        ) from None
    response.release_conn()  # the whole body was read: the connection is reusable
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", errors="replace")
